"""Content identity of a task's audio files, for the embedding cache key.

A file's identity is its size plus a BLAKE2b digest of its bytes (all of them up to ``FULL_HASH_BYTES``;
beyond, blocks at the start, middle and end). Digests are kept in an index beside the prepared task,
with each file's size and modification time: a file is hashed again only when either changed, so a
warm run costs one ``stat`` per file. The signature also names the task's root, so a task re-pointed
at another copy of the data gets its own embeddings.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path
from typing import Sequence

#: files up to this size are hashed whole; larger ones by three blocks of ``BLOCK_BYTES``
FULL_HASH_BYTES = 8 << 20
BLOCK_BYTES = 1 << 20


def file_digest(path: Path, size: int) -> str:
    """BLAKE2b of the file's bytes (whole, or its first, middle and last blocks when large)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        else:
            for start in (0, size // 2 - BLOCK_BYTES // 2, size - BLOCK_BYTES):
                f.seek(start)
                digest.update(f.read(BLOCK_BYTES))
    return digest.hexdigest()


def content_signature(root: Path, files: Sequence[str], index_path: Path) -> str:
    """sha256 over the root and every file's (name, size, digest); missing files count as such.

    ``index_path`` holds the digests of earlier calls (rewritten atomically, under a lock, when a file
    was added or changed)."""
    root = Path(root).resolve()
    index = _read_index(index_path, root)
    changed = False
    lines = [f"root|{root}"]
    for rel in files:
        path = root / rel
        try:
            st = path.stat()
        except OSError:
            lines.append(f"{rel}|missing")
            continue
        known = index.get(rel)
        if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
            digest = known[2]
        else:
            digest = file_digest(path, st.st_size)
            index[rel] = [st.st_size, st.st_mtime_ns, digest]
            changed = True
        lines.append(f"{rel}|{st.st_size}|{digest}")
    if changed:
        _write_index(index_path, root, index)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _read_index(path: Path, root: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data.get("files", {}) if data.get("root") == str(root) else {}


def _write_index(path: Path, root: Path, index: dict[str, list]) -> None:
    from evar.io import atomic_write_text

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            atomic_write_text(path, json.dumps({"root": str(root), "files": index}))
    except OSError:  # a read-only task folder: digests are recomputed next time, nothing else changes
        pass


def index_path_for(task_name: str) -> Path:
    """Where the digests of a prepared task's files are kept (beside its metadata)."""
    from evar.paths import prepared_tasks_dir

    return prepared_tasks_dir() / "content" / f"{task_name}.json"
