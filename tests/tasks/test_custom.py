"""Custom tasks from a CSV (file,label,split|fold; ';' for multi-label): prepared, listed, loaded, probed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import evar
from evar.api import probe
from evar.errors import EvarError
from evar.tasks import get_task_spec
from evar.tasks.custom import prepare_custom
from evar.options import LinearSettings, RunOptions

from .layouts import make_custom_tree


def test_split_csv_becomes_a_listed_task(tmp_path: Path) -> None:
    csv = make_custom_tree(tmp_path)
    task = prepare_custom(csv, tmp_path, "birds")
    assert (task.spec.folds, task.spec.multilabel, task.spec.metric, task.spec.n_classes) == (0, False, "accuracy", 3)
    assert task.spec.unit_sec == 0.4  # default: mean clip duration (0.3 s and 0.5 s clips alternate)
    assert task.info["per_split"] == {"test": 3, "train": 12, "valid": 3}
    assert "birds" in [s.name for s in evar.list_tasks()]
    loaded = evar.load_task("birds")
    assert loaded.classes == ["c0", "c1", "c2"] and list(loaded.meta["file"]) == list(pd.read_csv(csv)["file"])
    assert get_task_spec("birds").unit_sec == 0.4
    assert prepare_custom(csv, tmp_path, "birds", unit_sec=2.5).spec.unit_sec == 2.5  # preparing again replaces


def test_fold_csv_gives_cross_validation(tmp_path: Path) -> None:
    task = prepare_custom(make_custom_tree(tmp_path, group="fold"), tmp_path, "cv3", unit_sec=1.0)
    rounds = list(task.splits())
    assert task.spec.folds == 3 and [r.name for r in rounds] == ["fold1", "fold2", "fold3"]
    assert all(r.valid is None and len(r.test) == 6 and len(r.train) == 12 for r in rounds)


def test_semicolon_labels_make_a_multilabel_task(tmp_path: Path) -> None:
    csv = make_custom_tree(tmp_path, multilabel=True)
    table = pd.read_csv(csv)
    table.loc[0, "label"] = " c0 ; c1; "  # spaces and a trailing separator are tidied
    table.to_csv(csv, index=False)
    task = prepare_custom(csv, tmp_path, "tags")
    assert task.spec.multilabel and task.spec.metric == "mAP" and task.meta["label"][0] == "c0;c1"
    y = evar.load_task("tags").labels()
    assert y.shape == (18, 3) and np.array_equal(y.sum(axis=1), np.full(18, 2.0))


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.drop(columns=["label"]), r"missing column\(s\) \['label'\]"),
    (lambda t: t.assign(fold=1), "needs exactly one of the columns 'split' or 'fold', found \\['split', 'fold'\\]"),
    (lambda t: t.drop(columns=["split"]), "needs exactly one of the columns 'split' or 'fold', found neither"),
    (lambda t: t.assign(split=t["split"].replace("valid", "validation")),
     r"unknown split value\(s\) \['validation'\] on line\(s\) \[6, 12, 18\]; allowed: train, valid, test"),
    (lambda t: t.assign(label=t["label"].where(t.index != 3, " ; ")), r"empty 'label' on line\(s\) \[5\]"),
    (lambda t: t[t["split"] != "test"], "no 'test' rows"),
])
def test_csv_mistakes_are_explained(tmp_path: Path, edit, message: str) -> None:
    csv = make_custom_tree(tmp_path)
    edit(pd.read_csv(csv)).to_csv(csv, index=False)
    with pytest.raises(EvarError, match=message):
        prepare_custom(csv, tmp_path, "mine")


def test_fold_gaps_names_and_missing_csv(tmp_path: Path) -> None:
    csv = make_custom_tree(tmp_path, group="fold")
    pd.read_csv(csv).replace({"fold": {3: 4}}).to_csv(csv, index=False)
    with pytest.raises(EvarError, match=r"folds must be numbered 1..K with K >= 2 and no gaps, found \[1, 2, 4\]"):
        prepare_custom(csv, tmp_path, "mine")
    with pytest.raises(EvarError, match="'esc50' is reserved"):
        prepare_custom(csv, tmp_path, "esc50")
    with pytest.raises(EvarError, match="task name '../x'"):
        prepare_custom(csv, tmp_path, "../x")
    with pytest.raises(EvarError, match="nope.csv: CSV file not found"):
        prepare_custom(tmp_path / "nope.csv", tmp_path, "mine")


def test_missing_and_corrupt_audio(tmp_path: Path) -> None:
    csv = make_custom_tree(tmp_path)
    (tmp_path / "clips/c1_00.wav").unlink()
    (tmp_path / "clips/c2_05.wav").write_bytes(b"junk")
    with pytest.raises(EvarError, match="clips/c1_00.wav: file not found; clips/c2_05.wav: unreadable audio"):
        prepare_custom(csv, tmp_path, "mine")
    task = prepare_custom(csv, tmp_path, "mine", on_error="skip")
    assert len(task) == 16 and {p["file"] for p in task.info["skipped"]} == {"clips/c1_00.wav", "clips/c2_05.wav"}


def test_melspec_probe_end_to_end(tmp_path: Path) -> None:
    prepare_custom(make_custom_tree(tmp_path, per_class=12), tmp_path, "mine")
    result = probe("mine", "melspec", settings=LinearSettings(lr=1e-2, max_epochs=60), run=RunOptions(progress=False))
    assert result.rounds == ["test"] and result.metric == "accuracy" and result.mean > 0.6  # chance 1/3


def test_multilabel_probe_end_to_end(tmp_path: Path) -> None:
    prepare_custom(make_custom_tree(tmp_path, per_class=12, multilabel=True), tmp_path, "tags")
    result = probe("tags", "melspec", settings=LinearSettings(lr=1e-2, max_epochs=60), run=RunOptions(progress=False))
    assert result.metric == "mAP" and 0.6 < result.mean <= 1.0
