"""Embedding extraction: streamed through a DataLoader, cached on disk, resumable, shardable.

Cache layout, one folder per (task, model, key)::

    embeddings/<task>/<model>-<key16>/manifest.json   what the key hashes, normalisation stats, checksum
                                     /parts/part-00003.npy  finished chunks of CHUNK_ROWS clips (while running)
                                     /embeddings.npy        all rows (float32, or float16 on request)

The key hashes the encoder's config (preprocessing and weights sha256), the task, its root and the
content identity of its files (size and digest, see :mod:`evar.embeddings.content`), the unit duration, the crop
seed and the storage dtype: change any of them and the embeddings are recomputed. The manifest also keeps the
encoder's cost on one clip (:func:`evar.results.provenance.count_cost`) and what computing the rows took, which
a run's record reports even when it reuses the cache. Every file is written to a temporary name and renamed, so an
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
import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from evar.embeddings.content import content_signature, index_path_for
from evar.embeddings.datasets import (
    AudioStore, ClipDataset, SharedDecoding, auto_batch_size, cache_write_error, ordered_loader, remove_stale_stores,
)
from evar.embeddings.inference import optimised_for_inference
from evar.embeddings.stats import measure_stats
from evar.encoders.base import Encoder
from evar.errors import EvarError
from evar.io import atomic_write_text, file_sha256
from evar.log import log
from evar.options import RunOptions
from evar.paths import embeddings_dir
from evar.results import provenance
from evar.tasks import Task

CHUNK_ROWS = int(os.environ.get("EVAR_CHUNK_ROWS", 512))


def _file_signature(task: Task) -> str:
    """The files' content identity and the task root (see :mod:`evar.embeddings.content`); computed on every call, as
    files may change under a task object that lives on (a notebook, a test), and cheap once digested."""
    return content_signature(task.root, list(task.meta["file"]), index_path_for(task.name))


def cache_folder(encoder: Encoder, task: Task, model_label: str, unit_sec: float, seed: int,
                 root: Path | None = None, dtype: str = "float32", autocast: str | None = None) -> tuple[Path, dict]:
    """The folder for these embeddings and the material its key hashes."""
    material = {"encoder": encoder.config(), "task": task.name, "files": _file_signature(task),
                "unit_sec": unit_sec, "crop_seed": seed}
    if encoder.needs_stats:  # which clips the statistics pass reads first (EVAR's running mean leaves them out)
        material["stats_order"] = "evar-pass1" if getattr(encoder, "evar_init_words", None) is not None else "seeded"
    if dtype != "float32":  # float32 keys stay those of earlier versions
        material["dtype"] = dtype
    if autocast:
        material["autocast"] = autocast
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
        raise cache_write_error(path, exc) from exc


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
               shard: tuple[int, int] | None = None, seed: int = 42, root: Path | None = None,
               decoded: SharedDecoding | None = None) -> np.ndarray | None:
    """Embeddings ``(N, D)`` of every clip of ``task`` (memory-mapped), from the cache when present; computed
    ones read the clips from ``decoded`` where it shares the encoder's rate.

    Rows of clips skipped as unreadable (``on_error='skip'``) are NaN and listed in the manifest.
    With ``shard=(i, n)`` only that shard's chunks are computed; the return value is None until
    every shard has finished.
    """
    unit_sec = task.spec.unit_sec
    folder, material = cache_folder(encoder, task, model_label, unit_sec, seed, root, run.dtype, run.autocast)
    cached, manifest = _cached_embeddings(folder, task, encoder, run.on_error)
    if cached is None:
        folder.mkdir(parents=True, exist_ok=True)
        with _compute_lock(folder, shard):
            # another run may have finished them while this one waited for the lock
            cached, manifest = _cached_embeddings(folder, task, encoder, run.on_error)
            if cached is None:
                return _compute(encoder, task, folder, material, model_label, run, seed, shard, decoded)
    _note_cached(folder / "manifest.json", manifest, encoder, unit_sec, run.autocast)
    return cached


def _cost(manifest_path: Path, encoder: Encoder, unit_sec: float, manifest: dict | None = None) -> dict:
    """The encoder's cost on one clip of the task (counted once, kept in the manifest; ``manifest``: already read)."""
    if manifest is None:
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if not manifest.get("cost"):
        manifest["cost"] = provenance.count_cost(encoder, unit_sec)
        _update_manifest(manifest_path, {"cost": manifest["cost"]})
    return manifest["cost"]


def _note_cached(manifest_path: Path, manifest: dict, encoder: Encoder, unit_sec: float,
                 autocast: str | None = None) -> None:
    """Tell the run clock that the embeddings were reused, with what computing them took."""
    if provenance.current() is None:
        return
    provenance.note(embeddings={"cached": True, "computed": manifest.get("computed")},
                    cost=_cost(manifest_path, encoder, unit_sec, manifest),
                    compute_dtype=autocast or provenance.parameter_dtype(encoder))


def _cached_embeddings(folder: Path, task: Task, encoder: Encoder, on_error: str
                       ) -> tuple[np.ndarray | None, dict]:
    """The finished embeddings when present and whole (else None) and the manifest, read once; the encoder's
    statistics are set from it.

    Under ``on_error='fail'`` a cache that left files out (computed with ``skip``) is refused, naming them."""
    final, manifest_path = folder / "embeddings.npy", folder / "manifest.json"
    if not final.is_file():
        return None, {}
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    X = _load_checked(final, len(task), manifest)
    if X is None:
        return None, manifest
    skipped = manifest.get("skipped") or {}
    if skipped and on_error == "fail":
        shown = "; ".join(f"{f}: {r}" for f, r in list(sorted(skipped.items()))[:3])
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        raise EvarError(f"the cached embeddings of {task.name} leave out {len(skipped)} unreadable file(s) "
                        f"(computed with --on-error skip): {shown}{more}; rerun with --on-error skip to accept "
                        "that, or fix the files (changed files are embedded again)")
    if encoder.needs_stats and manifest.get("stats"):
        encoder.set_stats(*manifest["stats"])
    return X, manifest


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
             shard: tuple[int, int] | None, decoded: SharedDecoding | None = None) -> np.ndarray | None:
    """Compute the missing chunks (resuming an interrupted run) and assemble them when all exist."""
    unit_sec = task.spec.unit_sec
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"key": material, "skipped": {}}
    parts_dir = folder / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    if not manifest_path.is_file():
        _update_manifest(manifest_path, manifest)
    remove_stale_stores(folder, "stats-audio-*.f32")
    n_rows = len(task)
    n_chunks = (n_rows + CHUNK_ROWS - 1) // CHUNK_ROWS
    mine = [c for c in range(n_chunks) if shard is None or c % shard[1] == shard[0]]
    todo = [c for c in mine if _load_checked(parts_dir / f"part-{c:05d}.npy", len(_chunk_rows(c, n_rows))) is None]
    unit_samples = int(round(unit_sec * encoder.sample_rate))
    shared = decoded.store(encoder.sample_rate) if decoded is not None and todo else None
    store = shared
    try:
        if encoder.needs_stats:
            if not manifest.get("stats"):
                if store is None and todo:
                    store = AudioStore(folder / f"stats-audio-{os.getpid()}.f32", unit_samples)
                with provenance.stage("statistics"):
                    manifest["stats"] = measure_stats(encoder, task, unit_sec, seed, run.num_workers, store=store)
                _update_manifest(manifest_path, {"stats": manifest["stats"]})
            encoder.set_stats(*manifest["stats"])
        if provenance.current() is not None:
            provenance.note(embeddings={"cached": False}, cost=_cost(manifest_path, encoder, unit_sec, manifest),
                            compute_dtype=run.autocast or provenance.parameter_dtype(encoder))
        if todo:
            started = time.perf_counter()
            _embed_chunks(optimised_for_inference(encoder), task, todo, parts_dir, manifest_path,
                          replace(run, batch_size=run.batch_size or auto_batch_size(unit_sec)), seed, store,
                          f"embed {model_label} on {task.name}")
            seconds, clips = time.perf_counter() - started, sum(len(_chunk_rows(c, n_rows)) for c in todo)
            computed = {"clips": clips, "seconds": round(seconds, 3), "device": run.device,
                        "clips_per_sec": round(clips / max(seconds, 1e-9), 3)}
            try:
                _update_manifest(manifest_path, {"computed": computed})
            except OSError as exc:
                raise cache_write_error(manifest_path, exc) from exc
    finally:
        if store is not None and store is not shared:
            store.remove()
    return _assemble_when_complete(folder, n_chunks, n_rows, shard)


def autocast_context(run: RunOptions):
    """``torch.autocast`` on the run's device with ``run.autocast``, or nothing (float32)."""
    return torch.autocast(torch.device(run.device).type, dtype=getattr(torch, run.autocast or "bfloat16"),
                          enabled=run.autocast is not None)


def skipped_clips(task: Task, encoder: Encoder, model_label: str, dtype: str = "float32", seed: int = 42,
                  root: Path | None = None, autocast: str | None = None) -> dict[str, str]:
    """Files left out of these embeddings, with the reason: dropped when the task was prepared
    (``evar prepare --on-error skip``) or unreadable while embedding (``--on-error skip``)."""
    skipped = {str(p["file"]): str(p["reason"]) for p in task.info.get("skipped", [])}
    folder, _ = cache_folder(encoder, task, model_label, task.spec.unit_sec, seed, root, dtype, autocast)
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
        batches = iter(ordered_loader(dataset, run.batch_size, run.num_workers,
                                      pin_memory=run.device.startswith("cuda")))
        with torch.inference_mode(), autocast_context(run):
            while True:
                with provenance.stage("decode"):
                    batch = next(batches, None)
                if batch is None:
                    break
                index, wav, errors, _ = batch
                with provenance.stage("embedding"):
                    emb = encoder.embed(wav).float().cpu().numpy()
                provenance.note(clips=len(wav))
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
            raise cache_write_error(final, exc) from exc
        shutil.rmtree(parts_dir)
    return np.load(final, mmap_mode="r")


