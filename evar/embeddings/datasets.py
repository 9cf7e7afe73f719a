"""Clips for the encoder: a dataset that decodes, resamples and crops each clip once (reusing the audio the
statistics pass kept, or a sweep's shared decoding), its loader, and the cache's write errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from evar.audio import crop_offset, crop_or_pad, load_audio
from evar.errors import AudioError, EvarError

#: seconds of audio per encoder batch when no batch size is given (8 clips of 4 s, 32 of 1 s)
BATCH_SECONDS = 32.0


def auto_batch_size(unit_sec: float | None) -> int:
    """Clips per encoder batch: about ``BATCH_SECONDS`` of audio (small batches keep activations in cache)."""
    return max(1, int(BATCH_SECONDS // unit_sec)) if unit_sec else 1


class ClipDataset(Dataset):
    """Clips read at the encoder's rate, cropped/padded to the unit (EVAR's train/test crop rule).

    Items are ``(index, wav, error, whole)``; ``whole``: the clip was not longer than the unit, so every crop
    rule gives it. A bad file gives a zero clip and its error message when ``on_error='skip'``, and raises
    when ``'fail'``. Clips ``store`` holds under the same crop rule are read from it, not decoded.
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

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, str, bool]:
        random_crop = bool(self.random_crop[index])
        if self.store is not None and self.store.holds(self.keys[index], random_crop):
            return index, torch.from_numpy(self.store.read(self.keys[index])), "", False
        path = self.paths[index]
        try:
            wav = load_audio(path, self.sample_rate)
        except AudioError as exc:
            if self.on_error == "fail":
                raise AudioError(f"{exc}; fix or remove the file, or rerun with --on-error skip") from exc
            return index, torch.zeros(self.unit_samples or self.sample_rate), str(exc), True
        whole = not self.unit_samples or len(wav) <= self.unit_samples
        if self.unit_samples:
            offset = crop_offset(len(wav), self.unit_samples, random_crop, self.keys[index], self.seed)
            wav = crop_or_pad(wav, self.unit_samples, offset)
        return index, torch.from_numpy(wav), "", whole


class AudioStore:
    """Cropped clips kept on disk for a later pass (the statistics pass's clips for the embedding pass; a
    sweep's clips, decoded once, for every encoder at their rate). Plain file reads and writes, each write
    flushed (loader workers only read), no memory map, so it adds nothing to the process's memory. Each clip
    is kept with its crop rule: ``random``, ``start``, or ``whole`` (not longer than the unit: any rule)."""

    def __init__(self, path: Path, unit_samples: int) -> None:
        self.path, self.unit_samples, self.slots = path, unit_samples, {}
        self._file = open(path, "wb")

    def holds(self, key: str, random_crop: bool) -> bool:
        """Whether the clip of ``key`` is here as that crop rule gives it."""
        crop = self.slots.get(key, (0, None))[1]
        return crop == "whole" or crop == ("random" if random_crop else "start")

    def write(self, key: str, wav: np.ndarray, random_crop: bool, whole: bool) -> None:
        if key in self.slots:
            return
        try:
            self._file.write(np.ascontiguousarray(wav, dtype=np.float32).tobytes())
            self._file.flush()
        except OSError as exc:
            raise cache_write_error(self.path, exc) from exc
        self.slots[key] = (len(self.slots), "whole" if whole else "random" if random_crop else "start")

    def read(self, key: str) -> np.ndarray:
        return np.fromfile(self.path, dtype=np.float32, count=self.unit_samples,
                           offset=self.slots[key][0] * self.unit_samples * 4)

    def remove(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


class SharedDecoding:
    """A task's clips decoded once per sample rate for several encoders (a sweep's): the first encoder that
    computes at one of ``rates`` decodes every clip into an :class:`AudioStore` under ``folder`` (the embedding
    pass's crops), and each encoder's statistics and embedding passes at that rate read from it. Unreadable
    files are left to each encoder's own ``on_error`` rule. ``close`` removes the stores."""

    def __init__(self, task, folder: Path, rates: Iterable[int], seed: int = 42, num_workers: int = 0,
                 progress: bool = True) -> None:
        self.task, self.folder, self.rates, self.seed = task, folder, set(rates), seed
        self.num_workers, self.progress = num_workers, progress
        self.stores: dict[int, AudioStore] = {}

    def store(self, sample_rate: int) -> AudioStore | None:
        """The clips at ``sample_rate`` (decoded now if they are not yet), or None if that rate is not shared."""
        if sample_rate not in self.rates:
            return None
        if sample_rate not in self.stores:
            self.stores[sample_rate] = self._decode(sample_rate)
        return self.stores[sample_rate]

    def _decode(self, sample_rate: int) -> AudioStore:
        task, unit = self.task, int(round(self.task.spec.unit_sec * sample_rate))
        keys, crop = list(task.meta["file"]), task.random_crop_rows()
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_stores(self.folder, "decoded-*.f32")
        store = AudioStore(self.folder / f"decoded-{task.name}-{sample_rate}-{os.getpid()}.f32", unit)
        dataset = ClipDataset(task.paths(), sample_rate, unit, crop, self.seed, on_error="skip", keys=keys)
        try:
            for index, wav, errors, whole in tqdm(ordered_loader(dataset, 16, self.num_workers), unit="batch",
                                                  desc=f"decode {task.name} at {sample_rate} Hz", disable=not self.progress):
                for j, i in enumerate(index.tolist()):
                    if not errors[j]:
                        store.write(keys[i], wav[j].numpy(), bool(crop[i]), bool(whole[j]))
        except BaseException:
            store.remove()
            raise
        return store

    def close(self) -> None:
        for store in self.stores.values():
            store.remove()
        self.stores.clear()


def remove_stale_stores(folder: Path, pattern: str) -> None:
    """Remove audio stores (``<name>-<pid>.f32``) left by killed runs (their pid no longer exists)."""
    for path in folder.glob(pattern):
        pid = int(path.stem.rsplit("-", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except PermissionError:
            pass


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
