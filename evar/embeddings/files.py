"""Embeddings of arbitrary audio files (no cache): one row per file in the given order, long clips in windows."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from evar.audio import load_audio
from evar.embeddings.datasets import ClipDataset, auto_batch_size, ordered_loader
from evar.embeddings.inference import optimised_for_inference
from evar.embeddings.stats import STATS_MAX_CLIPS, front_end_stats
from evar.encoders.base import Encoder
from evar.errors import AudioError, EvarError
from evar.log import log
from evar.options import RunOptions

#: clips shorter than this are padded with silence (shorter than some encoders' analysis window or patch)
MIN_CLIP_SEC = 0.25


#: clips longer than this (files embedded at their own length) go through the encoder in windows of this length
WINDOW_SEC = 30.0


def embed_files(encoder: Encoder, paths: Sequence[str | Path], unit_sec: float | None = None,
                run: RunOptions = RunOptions(), stats: tuple[float, float] | None = None
                ) -> tuple[np.ndarray, list[str]]:
    """Embed arbitrary files (no cache), one row per path in the given order (repeats included).

    Without ``unit_sec`` each clip is embedded at its own length (one clip per batch; clips longer than
    ``WINDOW_SEC`` in windows whose frames are pooled together, so memory stays bounded; clips shorter
    than ``MIN_CLIP_SEC`` padded with silence, with a warning); with it, batches of ``batch_size`` clips
    cropped or padded to the unit (default: about 32 s of audio).

    Encoders that normalise with dataset statistics use ``stats`` (mean, std) when given, else
    statistics measured on these files. Returns the embeddings and, per path, "" or why it was
    skipped (its row is then NaN).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise EvarError("no audio files given")
    if encoder.needs_stats and stats is not None:
        if not (np.isfinite(stats).all() and stats[1] > 0):
            raise EvarError(f"normalisation statistics {stats}: the mean must be finite and the std positive")
        encoder.set_stats(*stats)
    elif encoder.needs_stats:
        readable = []
        for path in paths[:STATS_MAX_CLIPS]:
            try:
                readable.append(torch.from_numpy(_at_least(load_audio(path, encoder.sample_rate), encoder.sample_rate)))
            except AudioError:
                continue
        if not readable:
            raise EvarError("no readable file to measure the normalisation statistics on; give them with --stats MEAN,STD")
        encoder.set_stats(*front_end_stats(encoder, ([wav[None]] for wav in readable)))
    unit_samples = int(round(unit_sec * encoder.sample_rate)) if unit_sec else None
    dataset = ClipDataset(paths, encoder.sample_rate, unit_samples, on_error=run.on_error)
    out = np.full((len(paths), encoder.embed_dim), np.nan, dtype=np.float32)
    errors = [""] * len(paths)
    fast = optimised_for_inference(encoder)
    batches = ordered_loader(dataset, (run.batch_size or auto_batch_size(unit_sec)) if unit_samples else 1, run.num_workers)
    with torch.inference_mode():
        for index, wav, batch_errors, _ in tqdm(batches, unit="batch", desc=f"embed {len(paths)} files",
                                             disable=not run.progress):
            if unit_samples is None:
                emb = _embed_one_long(fast, _padded_short(wav[0].numpy(), encoder.sample_rate, paths[int(index[0])]))
            else:
                emb = fast.embed(wav).float().cpu().numpy()
            for j, error in enumerate(batch_errors):
                if error:
                    errors[int(index[j])] = error
                    log.warning("skipped %s", error)
                else:
                    out[int(index[j])] = emb[j]
    return out, errors


def _at_least(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    n = int(MIN_CLIP_SEC * sample_rate)
    return np.pad(wav, (0, n - len(wav))) if len(wav) < n else wav


def _padded_short(wav: np.ndarray, sample_rate: int, path: Path) -> np.ndarray:
    if len(wav) < MIN_CLIP_SEC * sample_rate:
        log.warning("%s: %.3f s is shorter than %.2f s; padded with silence to %.2f s", path, len(wav) / sample_rate,
                    MIN_CLIP_SEC, MIN_CLIP_SEC)
        return _at_least(wav, sample_rate)
    return wav


def _embed_one_long(encoder: Encoder, wav: np.ndarray) -> np.ndarray:
    """One clip's embedding ``(1, D)``; a long clip in ``WINDOW_SEC`` windows whose frames are pooled together
    (encoders that pool their frames; others take the clip whole)."""
    window = int(WINDOW_SEC * encoder.sample_rate)
    if len(wav) <= window or type(encoder).forward is not Encoder.forward:
        return encoder.embed(torch.from_numpy(wav)[None]).float().cpu().numpy()
    frames = []
    for start in range(0, len(wav), window):
        piece = _at_least(wav[start:start + window], encoder.sample_rate)
        frames.append(encoder.embed_frames(torch.from_numpy(np.ascontiguousarray(piece))[None])[0])
    return encoder.pool(torch.cat(frames, dim=1)).float().cpu().numpy()
