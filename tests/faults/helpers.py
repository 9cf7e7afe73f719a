"""Helpers of the fault suite: a tiny custom task of short generated clips, the CLI in-process and in a
subprocess, and the results store read back."""

from __future__ import annotations

import contextlib
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
import pytest

from evar.audio import write_audio
from evar.cli import main
from evar.results import COLUMNS
from evar.synth import synth_clip

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


def needs_lead(why: str) -> pytest.MarkDecorator:
    """A case whose behaviour the issue requires from extract.py/api.py (owned by the lead), not there yet.

    Strict: once the behaviour exists the test passes, the mark fails the run, and the mark must go.
    """
    return pytest.mark.xfail(strict=True, reason=f"needs extract.py/api.py: {why}")
