"""Clips for the encoder: a dataset that decodes, resamples and crops each clip once (reusing the audio the
statistics pass kept), its loader, and the cache's write errors."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from evar.audio import crop_offset, crop_or_pad, load_audio
from evar.errors import AudioError, EvarError

#: seconds of audio per encoder batch when no batch size is given (8 clips of 4 s, 32 of 1 s)
BATCH_SECONDS = 32.0


def auto_batch_size(unit_sec: float | None) -> int:
    """Clips per encoder batch: about ``BATCH_SECONDS`` of audio (small batches keep activations in cache)."""
    return max(1, int(BATCH_SECONDS // unit_sec)) if unit_sec else 1


class ClipDataset(Dataset):
    """Clips read at the encoder's rate, cropped/padded to the unit (EVAR's train/test crop rule).

    Items are ``(index, wav, error)``; a bad file gives a zero clip and its error message when
    ``on_error='skip'``, and raises when ``'fail'``. Clips found in ``store`` are read from it, not decoded.
    """

    def __init__(self, paths: Sequence[Path], sample_rate: int, unit_samples: int | None,
                 random_crop: np.ndarray | None = None, seed: int = 42, on_error: str = "fail",
                 keys: Sequence[str] | None = None, store: "AudioStore | None" = None) -> None:
        self.paths, self.sample_rate, self.unit_samples = list(paths), sample_rate, unit_samples
        #: what seeds each clip's random crop: the task's relative file name (stable when the data move)
        self.keys = list(keys) if keys is not None else [str(p) for p in self.paths]
        self.random_crop = random_crop if random_crop is not None else np.zeros(len(self.paths), dtype=bool)
        self.seed, self.on_error, self.store = seed, on_error, store

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, str]:
        if self.store is not None and self.keys[index] in self.store:
            return index, torch.from_numpy(self.store.read(self.keys[index])), ""
        path = self.paths[index]
        try:
            wav = load_audio(path, self.sample_rate)
        except AudioError as exc:
            if self.on_error == "fail":
                raise AudioError(f"{exc}; fix or remove the file, or rerun with --on-error skip") from exc
            return index, torch.zeros(self.unit_samples or self.sample_rate), str(exc)
        if self.unit_samples:
            offset = crop_offset(len(wav), self.unit_samples, bool(self.random_crop[index]), self.keys[index], self.seed)
            wav = crop_or_pad(wav, self.unit_samples, offset)
        return index, torch.from_numpy(wav), ""


class AudioStore:
    """Cropped clips kept on disk between the statistics pass and the embedding pass (plain file reads
    and writes, no memory map, so it adds nothing to the process's memory)."""

    def __init__(self, path: Path, unit_samples: int) -> None:
        self.path, self.unit_samples, self.slots = path, unit_samples, {}
        self._file = open(path, "wb")

    def __contains__(self, key: str) -> bool:
        return key in self.slots

    def write(self, key: str, wav: np.ndarray) -> None:
        try:
            self._file.write(np.ascontiguousarray(wav, dtype=np.float32).tobytes())
        except OSError as exc:
            raise cache_write_error(self.path, exc) from exc
        self.slots[key] = len(self.slots)

    def close_for_reading(self) -> None:
        self._file.close()

    def read(self, key: str) -> np.ndarray:
        return np.fromfile(self.path, dtype=np.float32, count=self.unit_samples,
                           offset=self.slots[key] * self.unit_samples * 4)

    def remove(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


def ordered_loader(dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool = False, seed: int = 0,
                   pin_memory: bool = False) -> DataLoader:
    """Batches in order (or shuffled by ``seed``); ``pin_memory`` for fast copies to a GPU."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=generator, persistent_workers=False, pin_memory=pin_memory)


def cache_write_error(path: Path, exc: OSError) -> EvarError:
    if exc.errno == errno.ENOENT:
        return EvarError(f"cannot write {path}: its folder was removed while evar was writing (by another program or "
                         "a manual clean-up); finished work is kept — rerun to resume")
    reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return EvarError(f"cannot write {path}: {reason}; nothing half-written was kept and finished chunks are safe — "
                     f"free space (or point EVAR_EMBEDDINGS_DIR elsewhere) and rerun to resume")
