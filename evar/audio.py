"""Audio input: read with soundfile, mix to mono, resample with soxr, crop or pad to a unit."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from evar.errors import AudioError


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read ``path`` as mono float32 at ``sample_rate``.

    Raises AudioError naming the file when it is missing, unreadable, empty or holds NaN/inf.
    Any channel count is mixed to mono and any rate resampled. Silence is valid audio (datasets hold
    silent clips; leaving them out would change the protocol's test set) and is returned as is.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: file not found")
    try:
        with sf.SoundFile(os.fsencode(path)) as f:  # bytes: names that are not valid UTF-8 open too
            truncated = truncation_reason(f)
            wav, file_rate = f.read(dtype="float32", always_2d=True), f.samplerate
    except Exception as exc:  # soundfile raises several types for corrupt files
        raise AudioError(f"{path}: cannot read audio ({read_error_reason(exc)})") from exc
    if truncated:
        raise AudioError(f"{path}: {truncated}")
    if wav.shape[0] == 0:
        raise AudioError(f"{path}: audio is empty (0 samples)")
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: audio contains NaN or inf samples")
    wav = wav.mean(axis=1)
    if file_rate != sample_rate:
        wav = soxr.resample(wav, file_rate, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(wav, dtype=np.float32)


_DATA_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def truncation_reason(info: sf.SoundFile | sf._SoundFileInfo) -> str | None:
    """Why a file is cut short, when its header promises more audio than it holds (libsndfile then
    reads what is there, so a truncated WAV would otherwise pass as a shorter clip); None when whole.
    A shortfall under 1% of the declared data (loose headers of some datasets) is tolerated."""
    found = _DATA_CHUNK.search(getattr(info, "extra_info", "") or "")
    if not found:
        return None
    declared, present = int(found.group(1)), int(found.group(2))
    if present >= declared * 0.99:
        return None
    return (f"truncated file: its header declares {declared} bytes of audio, the file holds {present} "
            f"({100 * present / declared:.0f}%); re-download or re-encode it")


def read_error_reason(exc: Exception) -> str:
    """libsndfile's reason without the path it repeats: ``Error opening 'x.wav': Format not recognised.``
    becomes ``Format not recognised``."""
    text = str(exc).strip()
    if text.startswith("Error opening") and "': " in text:
        text = text.split("': ", 1)[1]
    return text.rstrip(".") or type(exc).__name__


def crop_or_pad(wav: np.ndarray, n_samples: int, offset: int | None = 0) -> np.ndarray:
    """Return exactly ``n_samples``: zero-pad at the end, or crop starting at ``offset``."""
    if len(wav) < n_samples:
        return np.pad(wav, (0, n_samples - len(wav)))
    start = min(offset or 0, len(wav) - n_samples)
    return wav[start:start + n_samples]


def crop_offset(length: int, n_samples: int, random_crop: bool, key: str, seed: int) -> int:
    """EVAR's crop rule: a random start for train/valid clips, the beginning for test clips.

    The random start is derived from ``(seed, key)`` so it is the same on every run, which makes
    the embeddings cacheable and a resumed run identical to an uninterrupted one.
    """
    if not random_crop or length <= n_samples:
        return 0
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (length - n_samples + 1)


def write_audio(path: str | Path, wav: np.ndarray, sample_rate: int) -> None:
    """Write a mono or (samples, channels) array as a WAV/FLAC/OGG file chosen by the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav, sample_rate)
