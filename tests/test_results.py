"""Results store: concurrent appends from several processes never lose or corrupt a row."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pandas as pd

from evar.results.store import COLUMNS, append_result


def _append_many(directory: str, worker: int) -> None:
    for i in range(25):
        append_result({"protocol": "linear", "model": f"m{worker}", "task": f"t{i}", "score": i / 100,
                       "settings": {"worker": worker, "note": "a, b \"quoted\""}}, directory)


def test_parallel_appends(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    frame = pd.read_csv(tmp_path / "scores.csv")
    assert list(frame.columns) == COLUMNS and len(frame) == 100
    assert frame["run_id"].is_unique
    assert (frame.groupby("model").size() == 25).all()
