"""Golden outputs (issue 14): the users' commands give the same rows as when tests/golden/outputs.json was made.

Covered: melspec and BYOL-A (real weights, two seeds) probes, a layer fusion, the clean linear mode, a SED probe,
a one-epoch fine-tune and a two-job sweep, on generated data (tests/golden/commands.py). Settings must be equal;
scores equal, except that a CPU which rounds otherwise may move a fold by one test clip (1/9) in at most a tenth
of the folds (early stopping on tiny validation sets is that sensitive).
"""

from __future__ import annotations

import json
from pathlib import Path

from golden.commands import OUTPUTS, run_golden_commands

ONE_CLIP = 1 / 9 + 1e-9
#: what a run found rather than how it ran (compared through the scores)
OUTCOMES = {"class_accuracy", "confusion"}


def _scores(row: dict) -> list[float]:
    return [s for round_scores in row["fold_scores"] for s in round_scores]


def test_commands_give_the_golden_rows(tmp_path: Path, byola512_weights: Path, monkeypatch) -> None:
    expected = json.loads(OUTPUTS.read_text())
    for var in ("EVAR_CACHE_DIR", "EVAR_TASKS_DIR", "EVAR_EMBEDDINGS_DIR", "EVAR_RESULTS_DIR"):
        monkeypatch.setenv(var, "")  # restored after the test; run_golden_commands sets its own
    rows = run_golden_commands(tmp_path, byola512_weights)
    assert len(rows) == len(expected)
    moved = total = 0
    for row, golden in zip(rows, expected):
        what = f"{golden['protocol']} {golden['model']} {golden['layers']} on {golden['task']}"
        assert {k: v for k, v in row.items() if k not in ("score", "std", "fold_scores", "settings")} == \
            {k: v for k, v in golden.items() if k not in ("score", "std", "fold_scores", "settings")}, what
        assert set(row["settings"]) - OUTCOMES == set(golden["settings"]) - OUTCOMES, what
        if "confusion" in row["settings"]:  # every test prediction of every fold and seed, consistent with the scores
            confusion = row["settings"]["confusion"]
            correct = sum(confusion[c][c] for c in range(len(confusion)))
            assert abs(correct / sum(map(sum, confusion)) - sum(_scores(row)) / len(_scores(row))) < 1e-6, what  # float32 accuracies
        for key in set(row["settings"]) - OUTCOMES:
            if key != "sed":  # per-round SED post-processing follows the scores
                assert row["settings"][key] == golden["settings"][key], f"{what}: {key}"
        diffs = [abs(a - b) for a, b in zip(_scores(row), _scores(golden))]
        assert max(diffs) <= ONE_CLIP, what
        moved += sum(d > 1e-6 for d in diffs)
        total += len(diffs)
    assert moved <= total / 10
