"""The golden commands (issue 14): what users type, on small generated data, and the rows they write.

``python -m tests.golden.commands`` (from the repository root) rewrites ``tests/golden/outputs.json``; the test
``tests/test_golden.py`` runs the same commands and compares. Made with the code of the commit that adds the
file; regenerate only when a change of numbers is intended, and say so in the commit.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd

OUTPUTS = Path(__file__).with_name("outputs.json")
#: row fields that name the run, the machine or the files, not what was computed
VOLATILE = {"run_id", "date", "evar_version", "weights", "weights_sha256"}


def _clean(value, root: str):
    if isinstance(value, dict):
        return {k: _clean(v, root) for k, v in value.items() if not (isinstance(v, str) and root in v)}
    if isinstance(value, list):
        return [_clean(v, root) for v in value]
    return value


def run_golden_commands(work: Path, weights: Path) -> list[dict]:
    """Run the commands under ``work`` (its own EVAR_* folders) and return the rows they wrote."""
    from evar.cli import main
    from evar.synth.sed import make_sed_csv_tree
    from evar.synth.trees import make_esc50_tree

    for var, sub in (("EVAR_CACHE_DIR", "cache"), ("EVAR_TASKS_DIR", "tasks"), ("EVAR_EMBEDDINGS_DIR", "emb"),
                     ("EVAR_RESULTS_DIR", "results")):
        os.environ[var] = str(work / sub)
    esc = make_esc50_tree(work / "ESC-50-master", n_classes=3, clips_per_class_per_fold=3, sample_rate=16000,
                          seconds=2.0, seed=3, noise=0.8)
    events = make_sed_csv_tree(work / "sed", clips={"train": 6, "valid": 2, "test": 3}, seconds=2.0)
    w = str(weights)
    commands = [
        ["prepare", "esc50", "--root", esc],
        ["prepare", "sed", "--csv", events, "--root", work / "sed", "--name", "golden_sed"],
        ["probe", "--task", "esc50", "--model", "melspec"],
        ["probe", "--task", "esc50", "--model", "byola", "--weights", w, "--seeds", "42,43"],
        ["probe", "--task", "esc50", "--model", "byola", "--weights", w, "--layers", "conv3,fc2"],
        ["probe", "--task", "esc50", "--model", "melspec", "--linear-mode", "clean"],
        ["probe", "--task", "golden_sed", "--model", "melspec", "--max-epochs", "20"],
        ["finetune", "--task", "esc50", "--model", "byola", "--weights", w, "--epochs", "1", "--batch-size", "8"],
        ["sweep", "--models", "melspec,byola", "--tasks", "esc50", "--weights", f"byola={w}", "--max-epochs", "30"],
    ]
    for command in commands:
        rc = main(["-q", *[str(c) for c in command]])
        assert rc == 0, command
    rows = pd.read_csv(work / "results" / "scores.csv", dtype=str, keep_default_na=False).to_dict("records")
    out = []
    for row in rows:
        row = {k: v for k, v in row.items() if k not in VOLATILE}
        for key in ("fold_scores", "seeds", "settings"):
            row[key] = _clean(json.loads(row[key]), str(work))
        out.append(row)
    return out


def main() -> None:
    from tests.conftest import SHARED

    with tempfile.TemporaryDirectory() as tmp:
        rows = run_golden_commands(Path(tmp), SHARED / "weights/AudioNTT2020-BYOLA-64x96d512.pth")
    OUTPUTS.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {OUTPUTS}: {len(rows)} rows")


if __name__ == "__main__":
    main()
