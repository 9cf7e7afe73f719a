"""Cases 12-13: a killed probe leaves no partial row; concurrent probes lose no row."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pandas as pd

from evar.results.store import append_result, read_results

from .helpers import FAST_PROBE, SECONDS, cli, cli_subprocess, python_subprocess, results_rows

#: Runs in the killed probe's process: training signals that it started, then waits to be killed
HANG_IN_FIT = """
import os, time
import evar.protocols.linear
def _fit(self, *args, **kwargs):
    open(os.environ["EVAR_FAULT_FLAG"], "w").close()
    time.sleep(60)
evar.protocols.linear.LinearProbe.fit = _fit
"""
#: Runs in the killed probe's process: the row's bytes are half written, then the process is killed
DIE_IN_WRITE = """
import os, signal
_write = os.write
def _half_then_die(fd, data):
    if os.readlink(f"/proc/self/fd/{fd}").endswith("scores.csv"):
        _write(fd, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return _write(fd, data)
os.write = _half_then_die
"""


def _prepared(tree) -> None:
    root, csv = tree
    assert cli("prepare", "custom", "--csv", csv, "--root", root, "--name", "r", "--unit-sec", SECONDS).rc == 0
    assert cli("probe", "--task", "r", *FAST_PROBE).rc == 0  # one finished row (and the embeddings cached)


def _wait_for(path: Path, proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def test_12_probe_killed_while_training_writes_no_row(tree, evar_dirs: Path, monkeypatch) -> None:
    _prepared(tree)
    before = (evar_dirs / "results/scores.csv").read_bytes()
    flag = evar_dirs / "fitting"
    monkeypatch.setenv("EVAR_FAULT_FLAG", str(flag))
    proc = cli_subprocess("probe", "--task", "r", *FAST_PROBE, prelude=HANG_IN_FIT)
    _wait_for(flag, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert (evar_dirs / "results/scores.csv").read_bytes() == before
    assert len(results_rows(evar_dirs / "results")) == 1


def test_12_probe_killed_inside_the_write_loses_no_complete_row(tree, evar_dirs: Path) -> None:
    _prepared(tree)
    proc = cli_subprocess("probe", "--task", "r", *FAST_PROBE, prelude=DIE_IN_WRITE)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    path = evar_dirs / "results/scores.csv"
    assert not path.read_bytes().endswith(b"\n")  # the killed run left half a row
    assert len(read_results()) == 1  # readers ignore it (with a warning)
    run = cli("probe", "--task", "r", *FAST_PROBE)  # the next run cuts it before appending
    assert run.rc == 0 and f"{path}: removed an incomplete last line" in run.err
    rows = results_rows(evar_dirs / "results")
    assert len(rows) == 2 and rows["run_id"].is_unique and (rows["task"] == "r").all()


def test_13_two_probe_processes_append_50_rows_each(tree, evar_dirs: Path) -> None:
    _prepared(tree)
    loop = "import evar.cli\nfor _ in range(50):\n    assert evar.cli.main({args!r}) == 0\n"
    procs = [python_subprocess(loop.format(args=["probe", "--task", "r", *FAST_PROBE, "--seeds", str(seed)]))
             for seed in (1, 2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    rows = results_rows(evar_dirs / "results")
    assert len(rows) == 101 and rows["run_id"].is_unique
    assert rows["seeds"].value_counts().to_dict() == {"[1]": 50, "[2]": 50, "[42]": 1}
    assert pd.to_numeric(rows["score"]).between(0, 1).all()
    assert all(json.loads(s)["max_epochs"] == 3 for s in rows["settings"])


def test_13_appends_of_concurrent_threads_and_a_read_in_between(tmp_path: Path) -> None:
    """Rows written while a reader reads: the reader sees whole rows only."""
    from concurrent.futures import ThreadPoolExecutor

    def append(i: int) -> int:
        append_result({"protocol": "linear", "model": "m", "task": "t", "score": i / 100,
                       "settings": {"note": "a, b \"quoted\"\nnew line"}}, tmp_path)
        return len(read_results(tmp_path))

    with ThreadPoolExecutor(4) as pool:
        seen = list(pool.map(append, range(60)))
    assert max(seen) == 60 and len(read_results(tmp_path)) == 60
