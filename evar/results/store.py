"""The results store: one CSV row per run, appended safely, and the leaderboard built from it."""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from evar.errors import EvarError
from evar.paths import results_dir
from evar.log import log

#: Columns of ``results/scores.csv``; ``settings`` holds every protocol setting as JSON.
COLUMNS = [
    "run_id", "date", "evar_version", "protocol", "model", "layers", "task", "metric", "score", "std",
    "n_folds", "fold_scores", "seeds", "weights", "weights_sha256", "settings",
]


def scores_path(directory: str | Path | None = None) -> Path:
    return Path(directory or results_dir()) / "scores.csv"


def check_writable(directory: str | Path | None = None) -> Path:
    """Fail before any work when the results folder cannot take a row (read-only, not a folder)."""
    folder = Path(directory or results_dir())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "scores.csv.lock", "a"):
            pass
    except OSError as exc:
        raise EvarError(f"results folder {folder} is not writable ({exc.strerror or exc}); nothing was computed — "
                        "fix its permissions or set EVAR_RESULTS_DIR to a writable folder") from exc
    return folder


def _cells(row: dict[str, Any]) -> dict[str, Any]:
    """A row's CSV cells: lists and dicts as JSON."""
    return {c: json.dumps(row[c]) if isinstance(row.get(c), (list, dict)) else row.get(c, "") for c in COLUMNS}


def _row_line(record: dict[str, Any]) -> bytes:
    buffer = io.StringIO()
    csv.DictWriter(buffer, fieldnames=COLUMNS).writerow(record)
    return buffer.getvalue().encode()


def _drop_incomplete_tail(path: Path) -> None:
    """Cut a last line without its newline (a run killed while writing, or a full disk) so the next row
    starts on a line of its own; say so, naming the file."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(max(0, size - (1 << 20)))
        tail = f.read()
        keep = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        f.truncate(keep)
    log.warning(f"{path}: removed an incomplete last line ({size - keep} bytes, left by an "
                "interrupted write); the complete rows are kept")


def _append_bytes(path: Path, data: bytes) -> None:
    """One ``write`` on an ``O_APPEND`` descriptor, then fsync: a row is on disk whole or not at all."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, data)
        if written != len(data):  # a short write (disk full): take the fragment back
            os.ftruncate(fd, os.fstat(fd).st_size - written)
            raise OSError(errno.ENOSPC, f"short write to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)


def append_result(row: dict[str, Any], directory: str | Path | None = None,
                  provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Append one run to ``scores.csv`` under an exclusive lock (safe when runs finish together).

    Fills ``run_id``, ``date`` and ``evar_version``; lists and dicts are stored as JSON. The row is
    written with a single append, so a killed process leaves no partial row; then its JSON record
    (:mod:`evar.results.records`) is written beside it, with ``provenance`` (default: the summary of the run
    clock in progress, :mod:`evar.results.provenance`).
    """
    from evar import __version__

    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown result columns {sorted(unknown)}")
    row = {"run_id": uuid.uuid4().hex[:12], "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "evar_version": __version__, **row}
    record = _cells(row)
    path = scores_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = _row_line(record)
    try:
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if path.exists() and path.stat().st_size:
                _drop_incomplete_tail(path)
            if not path.exists() or path.stat().st_size == 0:
                line = ",".join(COLUMNS).encode() + b"\r\n" + line
            _append_bytes(path, line)
    except OSError as exc:
        raise EvarError(f"{path}: cannot append the result ({exc.strerror or exc}); the file keeps its complete "
                        "rows: free space or fix permissions, then run again") from exc
    from evar.results.records import write_record

    try:
        write_record(row, path.parent, provenance)
    except (OSError, EvarError) as exc:  # the row is stored; only its reviewable record is missing
        log.warning(f"{path.parent}: the run's record could not be written ({exc}); the row is in {path}")
    return row


def read_results(directory: str | Path | None = None) -> pd.DataFrame:
    """All runs as a DataFrame (empty with the right columns when there are none).

    A last line without its newline (a write cut short by an older version) is left out with a warning.
    """
    path = scores_path(directory)
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        log.warning(f"{path}: ignoring an incomplete last line ({len(data) - cut} bytes)")
        data = data[:cut]
    return _frame(data)


def _frame(data: bytes) -> pd.DataFrame:
    if not data:
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(io.BytesIO(data), dtype={"layers": str, "weights": str, "weights_sha256": str},
                       keep_default_na=False)


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Stored rows (dicts, lists and dicts as values) as :func:`read_results` would read them from ``scores.csv``."""
    cells = [_cells(r) for r in rows]
    return _frame((",".join(COLUMNS) + "\r\n").encode() + b"".join(map(_row_line, cells)) if cells else b"")
