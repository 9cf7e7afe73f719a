"""UrbanSound8K: prepared from the official layout with the official 10 folds; broken trees get clear errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import evar
from evar.api import probe
from evar.errors import EvarError
from evar.options import LinearSettings, RunOptions

from .layouts import US8K_CLASSES, make_us8k_tree


@pytest.fixture
def us8k_root(tmp_path: Path) -> Path:
    return make_us8k_tree(tmp_path / "UrbanSound8K", n_classes=3)


def test_prepare_gives_official_files_labels_and_folds(us8k_root: Path, capsys: pytest.CaptureFixture) -> None:
    task = evar.prepare_task("us8k", us8k_root)
    official = pd.read_csv(us8k_root / "metadata/UrbanSound8K.csv")
    assert list(task.meta["file"]) == [f"audio/fold{f}/{n}" for f, n in zip(official["fold"], official["slice_file_name"])]
    assert list(task.meta["label"]) == list(official["class"])  # the class name, not classID
    assert list(task.meta["fold"]) == list(official["fold"])
    assert task.classes == US8K_CLASSES[:3]
    assert "the protocol has 10" in capsys.readouterr().err  # only 3 of the 10 classes in this tree
    rounds = list(task.splits())
    assert [r.name for r in rounds] == [f"fold{k}" for k in range(1, 11)]
    for k, split in enumerate(rounds, start=1):
        assert set(task.meta["fold"].iloc[split.test]) == {k} and len(split.train) == 27 and split.valid is None
    loaded = evar.load_task("us8k")
    assert loaded.info["per_fold"] == {str(k): 3 for k in range(1, 11)}
    assert loaded.info["per_class"] == {c: 10 for c in US8K_CLASSES[:3]}
    assert (loaded.spec.unit_sec, loaded.spec.folds, loaded.spec.n_classes) == (4.0, 10, 10)


def test_missing_csv_and_columns_are_named(us8k_root: Path) -> None:
    csv = us8k_root / "metadata/UrbanSound8K.csv"
    table = pd.read_csv(csv)
    table.drop(columns=["class"]).to_csv(csv, index=False)
    with pytest.raises(EvarError, match=r"UrbanSound8K.csv: missing column\(s\) \['class'\]"):
        evar.prepare_task("us8k", us8k_root)
    table.assign(fold=table["fold"].replace(10, 11)).to_csv(csv, index=False)
    with pytest.raises(EvarError, match=r"fold must be an integer 1..10, line \d+ has '11'"):
        evar.prepare_task("us8k", us8k_root)
    csv.unlink()
    with pytest.raises(EvarError, match=r"expected metadata/UrbanSound8K.csv \(not found\)"):
        evar.prepare_task("us8k", us8k_root)


def test_row_pointing_nowhere_and_corrupt_file(us8k_root: Path) -> None:
    gone, corrupt = sorted((us8k_root / "audio/fold3").glob("*.wav"))[:2]
    gone.unlink()
    corrupt.write_bytes(b"RIFF not really")
    with pytest.raises(EvarError, match="2 bad row") as error:
        evar.prepare_task("us8k", us8k_root)
    assert f"audio/fold3/{gone.name}: file not found" in str(error.value)
    assert f"audio/fold3/{corrupt.name}: unreadable audio" in str(error.value)
    task = evar.prepare_task("us8k", us8k_root, on_error="skip")
    assert len(task) == 28 and task.info["per_fold"]["3"] == 1
    assert {p["file"] for p in task.info["skipped"]} == {f"audio/fold3/{gone.name}", f"audio/fold3/{corrupt.name}"}


def test_melspec_probe_end_to_end(us8k_root: Path) -> None:
    evar.prepare_task("us8k", us8k_root)
    result = probe("us8k", "melspec", settings=LinearSettings(lr=1e-2, max_epochs=60), run=RunOptions(progress=False))
    assert result.rounds == [f"fold{k}" for k in range(1, 11)] and result.metric == "accuracy"
    assert 0.6 < result.mean <= 1.0  # 3 synthetic classes: chance is 1/3
