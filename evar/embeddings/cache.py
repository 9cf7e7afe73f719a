"""Embedding extraction: streamed through a DataLoader, cached on disk, resumable, shardable.

Cache layout, one folder per (task, model, key)::

    embeddings/<task>/<model>-<key16>/manifest.json   what the key hashes, normalisation stats, checksum
                                     /parts/part-00003.npy  finished chunks of CHUNK_ROWS clips (while running)
                                     /embeddings.npy        all rows (float32, or float16 on request)

The key hashes the encoder's config (preprocessing and weights sha256), the task, its root and the
content identity of its files (size and digest, see :mod:`evar.embeddings.content`), the unit duration, the crop
seed and the storage dtype: change any of them and the embeddings are recomputed. Every file is written to a temporary name and renamed, so an
interrupted run leaves only whole chunks, and the next run continues from them; a damaged file
(wrong size or checksum) is recomputed. ``shard=(i, n)`` computes chunks ``i, i+n, i+2n, ...`` only,
so n processes (a SLURM array, torchrun ranks) share the work; whichever finishes the last chunk
assembles ``embeddings.npy``, identical to an unsharded run's.

Each clip is decoded once. Encoders that normalise with the task's statistics (BYOL-A) first run
EVAR's statistics pass over up to 5,000 training clips; those clips' audio is kept in a temporary
file and fed to the encoder from there, so the embedding pass does not decode them again.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
import copy
import errno
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from evar.audio import crop_offset, crop_or_pad, load_audio
from evar.encoders.base import Encoder
from evar.options import RunOptions
from evar.errors import AudioError, EvarError
from evar.paths import embeddings_dir
from evar.embeddings.content import content_signature, index_path_for
from evar.protocols.evar_stream import stats_batches, task_pass1_orders
from evar.embeddings.stats import front_end_stats
from evar.tasks import Task
from evar.io import atomic_write_text, file_sha256

from evar.log import log

CHUNK_ROWS = int(os.environ.get("EVAR_CHUNK_ROWS", 512))
STATS_MAX_CLIPS = 5000
STATS_BATCH_SIZE = 256
#: seconds of audio per encoder batch when no batch size is given (8 clips of 4 s, 32 of 1 s)
BATCH_SECONDS = 32.0
#: clips per front-end call inside a statistics batch (bounds memory; the batch statistics are unchanged)
STATS_PIECE = 16


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
            raise _write_error(self.path, exc) from exc
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


def _loader(dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=generator, persistent_workers=False)


def measure_stats(encoder: Encoder, task: Task, unit_sec: float, seed: int = 42, num_workers: int = 0,
                  max_clips: int = STATS_MAX_CLIPS, batch_size: int = STATS_BATCH_SIZE,
                  store: AudioStore | None = None) -> tuple[float, float]:
    """EVAR's normalisation statistics: front-end output over shuffled, randomly cropped training
    clips of the first round, whole batches until ``max_clips`` are seen. Each good clip is written to
    ``store`` when given, for the embedding pass to reuse.

    The batches are EVAR's (a shuffled DataLoader of ``batch_size`` with this seed); each is decoded and
    measured in pieces of ``STATS_PIECE`` clips, so a batch of 256 long clips is never in memory at once.
    """
    rows = task.first_train_rows()
    all_paths = task.paths()
    keys = list(task.meta["file"].iloc[rows])
    dataset = ClipDataset([all_paths[i] for i in rows], encoder.sample_rate, int(unit_sec * encoder.sample_rate),
                          np.ones(len(rows), dtype=bool), seed, on_error="skip", keys=keys)
    batches = [b.tolist() for b in stats_batches(stats_order(encoder, task, seed), max_clips, batch_size)]
    pieces = [batch[i:i + STATS_PIECE] for batch in batches for i in range(0, len(batch), STATS_PIECE)]
    loader = iter(DataLoader(dataset, batch_sampler=pieces, num_workers=num_workers))

    def good_pieces(batch: list[int]) -> Iterator[torch.Tensor]:
        for _ in range(0, len(batch), STATS_PIECE):
            index, wav, errors = next(loader)
            good = [j for j, error in enumerate(errors) if not error]
            if store is not None:
                for j in good:
                    store.write(keys[int(index[j])], wav[j].numpy())
            if good:
                yield wav[good]

    return front_end_stats(encoder, (good_pieces(batch) for batch in batches))


def stats_order(encoder: Encoder, task: Task, seed: int = 42) -> np.ndarray:
    """The order in which EVAR's statistics pass meets the first round's training clips: its seeded loader's
    permutation, replayed exactly when the encoder's construction draws are known (``evar_init_words``), else a
    permutation from a generator seeded with ``seed``."""
    words = getattr(encoder, "evar_init_words", None)
    if words is not None:
        return task_pass1_orders(task, words, seed).stats_order
    n = len(task.first_train_rows())
    return next(iter(_loader(range(n), n, 0, shuffle=True, seed=seed))).numpy()


def optimised_for_inference(encoder: Encoder) -> Encoder:
    """A copy with each ``Conv2d`` + ``BatchNorm2d`` pair folded into one convolution and channels-last
    weights (about twice as fast on CPU; equal to the original up to float rounding, ~1e-6 relative).

    Returned only when every BatchNorm2d follows a Conv2d in an ``nn.Sequential``; otherwise the encoder
    itself. The folded BatchNorm becomes ``nn.Identity`` so layer indices stay valid.
    """
    encoder.eval()
    if not any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules()):
        return encoder
    fast = copy.deepcopy(encoder)
    folded = 0
    for module in fast.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module)
        for i in range(len(children) - 1):
            conv, bn = children[i], children[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module[i] = nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
                module[i + 1] = nn.Identity()
                folded += 1
    if folded != sum(isinstance(m, nn.BatchNorm2d) for m in encoder.modules()) or \
            any(isinstance(m, nn.BatchNorm2d) for m in fast.modules()):
        return encoder
    return fast.to(memory_format=torch.channels_last)


def _file_signature(task: Task) -> str:
    """The files' content identity and the task root (see :mod:`evar.embeddings.content`); computed on every call, as
    files may change under a task object that lives on (a notebook, a test), and cheap once digested."""
    return content_signature(task.root, list(task.meta["file"]), index_path_for(task.name))


def cache_folder(encoder: Encoder, task: Task, model_label: str, unit_sec: float, seed: int,
                 root: Path | None = None, dtype: str = "float32") -> tuple[Path, dict]:
    """The folder for these embeddings and the material its key hashes."""
    material = {"encoder": encoder.config(), "task": task.name, "files": _file_signature(task),
                "unit_sec": unit_sec, "crop_seed": seed}
    if encoder.needs_stats:  # which clips the statistics pass reads first (EVAR's running mean leaves them out)
        material["stats_order"] = "evar-pass1" if getattr(encoder, "evar_init_words", None) is not None else "seeded"
    if dtype != "float32":  # float32 keys stay those of earlier versions
        material["dtype"] = dtype
    key = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]
    safe_label = "".join(c if c.isalnum() or c in "-_.," else "_" for c in model_label)
    return Path(root or embeddings_dir()) / task.name / f"{safe_label}-{key}", material


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """Write through a temporary file; a full disk leaves no half file and says what to do."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _write_error(path, exc) from exc


def _write_error(path: Path, exc: OSError) -> EvarError:
    if exc.errno == errno.ENOENT:
        return EvarError(f"cannot write {path}: its folder was removed while evar was writing (by another program or "
                         "a manual clean-up); finished work is kept — rerun to resume")
    reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return EvarError(f"cannot write {path}: {reason}; nothing half-written was kept and finished chunks are safe — "
                     f"free space (or point EVAR_EMBEDDINGS_DIR elsewhere) and rerun to resume")


def _load_checked(path: Path, rows: int, written: dict | None = None) -> np.ndarray | None:
    """The array at ``path`` memory-mapped; None when it is absent, or damaged (after saying why).

    ``written`` (from the manifest) holds the file's sha256 and modification time when it was written;
    the checksum is verified whenever the file was touched since, so large caches load without rehashing.
    """
    if not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="r")
        damaged = array.ndim != 2 or len(array) != rows
    except (ValueError, OSError, EOFError) as exc:
        damaged, array = f"unreadable ({exc})", None
    if not damaged and written and written.get("sha256") and path.stat().st_mtime_ns != written.get("mtime_ns") \
            and file_sha256(path) != written["sha256"]:
        damaged = "checksum differs from the one recorded when it was written"
    if damaged:
        log.warning("%s is damaged (%s); recomputing it", path, damaged if isinstance(damaged, str) else "wrong size")
        path.unlink(missing_ok=True)
        return None
    return array


def _chunk_rows(chunk: int, n: int) -> range:
    return range(chunk * CHUNK_ROWS, min(n, (chunk + 1) * CHUNK_ROWS))


def _clean_stale_stores(folder: Path) -> None:
    """Remove audio stores left by killed runs (their pid no longer exists)."""
    for path in folder.glob("stats-audio-*.f32"):
        pid = int(path.stem.rsplit("-", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except PermissionError:
            pass


def parse_shard(text: str) -> tuple[int, int]:
    """``"3/16"`` -> ``(3, 16)``: shard indices run from 0 to n-1."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise EvarError(f"--shard must look like I/N (e.g. 3/16), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise EvarError(f"--shard {text}: I must be in 0..N-1 (0-based, like SLURM_ARRAY_TASK_ID)")
    return index, count


def embed_task(encoder: Encoder, task: Task, model_label: str, run: RunOptions = RunOptions(),
               shard: tuple[int, int] | None = None, seed: int = 42, root: Path | None = None) -> np.ndarray | None:
    """Embeddings ``(N, D)`` of every clip of ``task`` (memory-mapped), from the cache when present.

    Rows of clips skipped as unreadable (``on_error='skip'``) are NaN and listed in the manifest.
    With ``shard=(i, n)`` only that shard's chunks are computed; the return value is None until
    every shard has finished.
    """
    unit_sec = task.spec.unit_sec
    folder, material = cache_folder(encoder, task, model_label, unit_sec, seed, root, run.dtype)
    cached = _cached_embeddings(folder, task, encoder, run.on_error)
    if cached is not None:
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    with _compute_lock(folder, shard):
        cached = _cached_embeddings(folder, task, encoder, run.on_error)  # another run may have finished them
        if cached is not None:
            return cached
        return _compute(encoder, task, folder, material, model_label, run, seed, shard)


def _cached_embeddings(folder: Path, task: Task, encoder: Encoder, on_error: str) -> np.ndarray | None:
    """The finished embeddings when present and whole, with the encoder's statistics set from the manifest.

    Under ``on_error='fail'`` a cache that left files out (computed with ``skip``) is refused, naming them."""
    final, manifest_path = folder / "embeddings.npy", folder / "manifest.json"
    if not final.is_file():
        return None
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    X = _load_checked(final, len(task), manifest)
    if X is None:
        return None
    skipped = manifest.get("skipped") or {}
    if skipped and on_error == "fail":
        shown = "; ".join(f"{f}: {r}" for f, r in list(sorted(skipped.items()))[:3])
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        raise EvarError(f"the cached embeddings of {task.name} leave out {len(skipped)} unreadable file(s) "
                        f"(computed with --on-error skip): {shown}{more}; rerun with --on-error skip to accept "
                        "that, or fix the files (changed files are embedded again)")
    if encoder.needs_stats and manifest.get("stats"):
        encoder.set_stats(*manifest["stats"])
    return X


@contextlib.contextmanager
def _compute_lock(folder: Path, shard: tuple[int, int] | None) -> Iterator[None]:
    """One process computes a cache (or one shard of it) at a time: a second run waits, then reuses."""
    name = "compute.lock" if shard is None else f"compute-{shard[0]}of{shard[1]}.lock"
    with open(folder / name, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another evar run is computing %s; waiting for it to finish, then reusing its work", folder)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _compute(encoder: Encoder, task: Task, folder: Path, material: dict, model_label: str, run: RunOptions, seed: int,
             shard: tuple[int, int] | None) -> np.ndarray | None:
    """Compute the missing chunks (resuming an interrupted run) and assemble them when all exist."""
    unit_sec = task.spec.unit_sec
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"key": material, "skipped": {}}
    parts_dir = folder / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    if not manifest_path.is_file():
        _update_manifest(manifest_path, manifest)
    _clean_stale_stores(folder)
    n_rows = len(task)
    n_chunks = (n_rows + CHUNK_ROWS - 1) // CHUNK_ROWS
    mine = [c for c in range(n_chunks) if shard is None or c % shard[1] == shard[0]]
    todo = [c for c in mine if _load_checked(parts_dir / f"part-{c:05d}.npy", len(_chunk_rows(c, n_rows))) is None]
    unit_samples = int(round(unit_sec * encoder.sample_rate))
    store = None
    try:
        if encoder.needs_stats:
            if not manifest.get("stats"):
                store = AudioStore(folder / f"stats-audio-{os.getpid()}.f32", unit_samples) if todo else None
                manifest["stats"] = measure_stats(encoder, task, unit_sec, seed, run.num_workers, store=store)
                _update_manifest(manifest_path, {"stats": manifest["stats"]})
                if store is not None:
                    store.close_for_reading()
            encoder.set_stats(*manifest["stats"])
        if todo:
            _embed_chunks(optimised_for_inference(encoder), task, todo, parts_dir, manifest_path,
                          replace(run, batch_size=run.batch_size or auto_batch_size(unit_sec)), seed, store,
                          f"embed {model_label} on {task.name}")
    finally:
        if store is not None:
            store.remove()
    return _assemble_when_complete(folder, n_chunks, n_rows, shard)


def skipped_clips(task: Task, encoder: Encoder, model_label: str, dtype: str = "float32", seed: int = 42,
                  root: Path | None = None) -> dict[str, str]:
    """Files left out of these embeddings, with the reason: dropped when the task was prepared
    (``evar prepare --on-error skip``) or unreadable while embedding (``--on-error skip``)."""
    skipped = {str(p["file"]): str(p["reason"]) for p in task.info.get("skipped", [])}
    folder, _ = cache_folder(encoder, task, model_label, task.spec.unit_sec, seed, root, dtype)
    manifest = folder / "manifest.json"
    if manifest.is_file():
        skipped.update(json.loads(manifest.read_text()).get("skipped", {}))
    return skipped


def _update_manifest(path: Path, fields: dict) -> None:
    """Merge ``fields`` into the manifest under a lock (shards of one cache share it)."""
    with open(path.with_name("manifest.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = json.loads(path.read_text()) if path.is_file() else {}
        for name, value in fields.items():
            if isinstance(value, dict) and isinstance(manifest.get(name), dict):
                manifest[name] = {**manifest[name], **value}
            else:
                manifest[name] = value
        atomic_write_text(path, json.dumps(manifest, indent=1))


def _embed_chunks(encoder: Encoder, task: Task, chunks: list[int], parts_dir: Path, manifest_path: Path,
                  run: RunOptions, seed: int, store: AudioStore | None, description: str) -> None:
    paths, crop, files = task.paths(), task.random_crop_rows(), task.meta["file"]
    unit_samples = int(round(task.spec.unit_sec * encoder.sample_rate))
    bar = tqdm(total=sum(len(_chunk_rows(c, len(paths))) for c in chunks), unit="clip", desc=description,
               disable=not run.progress)
    for chunk in chunks:
        rows = list(_chunk_rows(chunk, len(paths)))
        dataset = ClipDataset([paths[i] for i in rows], encoder.sample_rate, unit_samples, crop[rows], seed,
                              run.on_error, keys=list(files.iloc[rows]), store=store)
        outputs, skipped = [], {}
        with torch.inference_mode():
            for index, wav, errors in _loader(dataset, run.batch_size, run.num_workers):
                emb = encoder.embed(wav).float().cpu().numpy()
                for j, error in enumerate(errors):
                    if error:
                        emb[j] = np.nan
                        skipped[str(files.iloc[rows[int(index[j])]])] = error
                        log.warning("skipped %s", error)
                outputs.append(emb)
                bar.update(len(wav))
        if skipped:  # recorded before the chunk counts as done, so a resumed run still reports them
            _update_manifest(manifest_path, {"skipped": skipped})
        save_npy_atomic(parts_dir / f"part-{chunk:05d}.npy", np.concatenate(outputs).astype(run.dtype))
    bar.close()


def _assemble_when_complete(folder: Path, n_chunks: int, n_rows: int, shard: tuple[int, int] | None) -> np.ndarray | None:
    """Concatenate the chunk files into ``embeddings.npy`` once all exist (one shard does it, under a lock)."""
    final, parts_dir = folder / "embeddings.npy", folder / "parts"
    with open(folder / "assemble.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_file():
            return np.load(final, mmap_mode="r")
        missing = [c for c in range(n_chunks) if not (parts_dir / f"part-{c:05d}.npy").is_file()]
        if missing:
            log.info("shard %d/%d done; %d of %d chunks still to compute by the other shards (the last one to "
                     "finish assembles the embeddings)", shard[0], shard[1], len(missing), n_chunks)
            return None
        parts = [np.load(parts_dir / f"part-{c:05d}.npy", mmap_mode="r") for c in range(n_chunks)]
        tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=parts[0].dtype, shape=(n_rows, parts[0].shape[1]))
            start = 0
            for part in parts:
                out[start:start + len(part)] = part
                start += len(part)
            out.flush()
            del out
            _update_manifest(folder / "manifest.json", {"sha256": file_sha256(tmp), "rows": n_rows,
                                                        "mtime_ns": tmp.stat().st_mtime_ns})
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _write_error(final, exc) from exc
        shutil.rmtree(parts_dir)
    return np.load(final, mmap_mode="r")


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
    batches = _loader(dataset, (run.batch_size or auto_batch_size(unit_sec)) if unit_samples else 1, run.num_workers)
    with torch.inference_mode():
        for index, wav, batch_errors in tqdm(batches, unit="batch", desc=f"embed {len(paths)} files",
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
