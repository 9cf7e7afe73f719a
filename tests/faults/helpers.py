"""Helpers of the fault suite: a tiny custom task of short generated clips, the CLI in-process and in a
subprocess, and the results store read back."""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evar.audio import write_audio
from evar.cli import main
from evar.results.store import COLUMNS
from evar.synth.trees import synth_clip

RATE = 16000
SECONDS = 0.25
REPO = Path(__file__).resolve().parents[2]
#: Probe settings that keep a run well under a second on 20 clips
FAST_PROBE = ["--model", "melspec", "--max-epochs", "3", "--patience", "1", "--batch-size", "8"]


@dataclass
class CliRun:
    rc: int
    out: str
    err: str

    def error_line(self) -> str:
        """The one ``evar: error:`` line (asserts there is exactly one and no traceback)."""
        lines = re.findall(r"evar: error:[^\r\n]*", self.err)  # progress bars share stderr
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err, self.err
        return lines[0]


def cli(*args: str) -> CliRun:
    """``evar ARGS`` in this process (the tests' EVAR_* directories apply), stdout/stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return CliRun(rc, out.getvalue(), err.getvalue())


def python_subprocess(code: str) -> subprocess.Popen:
    """``python -c CODE`` in the repository with this process's environment (the tests' EVAR_* folders)."""
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def cli_subprocess(*args: str, prelude: str = "") -> subprocess.Popen:
    """``evar ARGS`` in a fresh Python process (``prelude`` runs first, e.g. to shrink CHUNK_ROWS)."""
    return python_subprocess(f"import sys\n{prelude}\nfrom evar.cli import main\n"
                             f"sys.exit(main({[str(a) for a in args]!r}))")


def make_task_tree(root: Path, per_class: dict[str, int] | None = None, seed: int = 0) -> tuple[Path, Path]:
    """Audio root + ``meta.csv`` (file,label,split): two classes, 5 train + 3 test clips each by default."""
    rng = np.random.default_rng(seed)
    per_class = per_class or {"train": 5, "test": 3}
    rows = []
    for c, label in enumerate(("dog", "cat")):
        for split, n in per_class.items():
            for k in range(n):
                rel = f"audio/{split}/{label}{k}.wav"
                write_audio(root / rel, synth_clip(c, rng, RATE, SECONDS), RATE)
                rows.append((rel, label, split))
    csv = root / "meta.csv"
    pd.DataFrame(rows, columns=["file", "label", "split"]).to_csv(csv, index=False)
    return root, csv


def add_rows(csv: Path, rows: list[tuple[str, str, str]]) -> None:
    table = pd.read_csv(csv, dtype=str)
    pd.concat([table, pd.DataFrame(rows, columns=table.columns)]).to_csv(csv, index=False)


def results_rows(results: Path) -> pd.DataFrame:
    """Every row of scores.csv, checked to parse with the expected columns (empty frame when none)."""
    path = results / "scores.csv"
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    data = path.read_bytes()
    assert data.endswith(b"\n"), "scores.csv ends inside a row"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(frame.columns) == COLUMNS
    for settings in frame["settings"]:
        json.loads(settings)
    return frame


class DiskBudget:
    """A disk that fills up: files opened for writing under ``folder`` share ``budget`` bytes.

    A write that would grow the files past the budget writes what still fits and then raises
    ``OSError(ENOSPC)``, as a full disk does. Installed by patching ``open``/``io.open`` (which also
    serve ``np.save``, ``np.lib.format.open_memmap``, ``Path.write_*`` and ``os.fdopen``), so it holds
    whatever writer the cache uses. ``budget=None`` only counts (``used`` = bytes a run writes).
    """

    def __init__(self, folder: Path, budget: int | None) -> None:
        self.folder, self.budget, self.used = Path(folder).resolve(), budget, 0
        self._open = io.open

    def _target(self, file) -> Path | None:
        try:
            path = Path(os.readlink(f"/proc/self/fd/{file}")) if isinstance(file, int) else Path(file).resolve()
        except (OSError, TypeError):
            return None
        return path if self.folder in path.parents else None

    def open(self, file, mode: str = "r", *args, **kwargs):
        handle = self._open(file, mode, *args, **kwargs)
        path = self._target(file)
        if path is None or not set(mode) & set("wax+"):
            return handle
        return _BudgetFile(handle, self, path)

    def install(self, monkeypatch) -> "DiskBudget":
        monkeypatch.setattr(builtins, "open", self.open)
        monkeypatch.setattr(io, "open", self.open)
        return self


class _BudgetFile:
    def __init__(self, handle, disk: DiskBudget, path: Path) -> None:
        self._handle, self._disk, self._path = handle, disk, path
        self._size = os.fstat(handle.fileno()).st_size

    def write(self, data) -> int:
        n = memoryview(data).nbytes if not isinstance(data, str) else len(data.encode())
        end = self._handle.tell() + n
        grow = max(0, end - self._size)
        disk = self._disk
        if disk.budget is not None and disk.used + grow > disk.budget:
            fits = max(0, n - (disk.used + grow - disk.budget))
            if fits:
                self._handle.write(data[:fits])
                self._handle.flush()
            disk.used = disk.budget
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self._path))
        disk.used += grow
        self._size = max(self._size, end)
        return self._handle.write(data)

    def __enter__(self) -> "_BudgetFile":
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()

    def __iter__(self):
        return iter(self._handle)

    def __getattr__(self, name: str):
        return getattr(self._handle, name)


def data_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_no_half_files(folder: Path) -> None:
    """No temporary leftovers; every .npy loads whole and every .json parses."""
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        assert ".tmp" not in path.name and not path.name.endswith(".part"), f"left behind: {path}"
        if path.suffix == ".npy":
            np.load(path)  # raises on a truncated array
        elif path.suffix == ".json":
            json.loads(path.read_text())
