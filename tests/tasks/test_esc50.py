"""ESC-50: prepared from the official layout with EVAR's 5 folds; broken trees get clear errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import evar
from evar.errors import EvarError
from evar.synth.trees import make_esc50_tree


@pytest.fixture
def esc50_root(tmp_path: Path) -> Path:
    return make_esc50_tree(tmp_path / "ESC-50-master", n_classes=3, clips_per_class_per_fold=1, sample_rate=16000, seconds=0.5)


def test_prepare_gives_official_folds_and_labels(esc50_root: Path) -> None:
    task = evar.prepare_task("esc50", esc50_root)
    official = pd.read_csv(esc50_root / "meta" / "esc50.csv")
    assert list(task.meta["file"]) == ["audio/" + f for f in official["filename"]]
    assert list(task.meta["fold"]) == list(official["fold"])
    assert task.classes == sorted(official["category"].unique())
    rounds = list(task.splits())
    assert [r.name for r in rounds] == [f"fold{k}" for k in range(1, 6)]
    for k, split in enumerate(rounds, start=1):
        assert set(task.meta["fold"].iloc[split.test]) == {k} and k not in set(task.meta["fold"].iloc[split.train])
        assert split.valid is None  # EVAR: no valid split for CV; the probe holds out 10% of train
    loaded = evar.load_task("esc50")
    assert loaded.info["per_fold"] == {str(k): 3 for k in range(1, 6)}
    assert loaded.info["per_class"] == {c: 5 for c in task.classes}
    assert loaded.spec.unit_sec == 5.0 and loaded.spec.metric == "accuracy"


def test_missing_csv_is_named(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    with pytest.raises(EvarError, match=r"expected meta/esc50.csv \(not found\)"):
        evar.prepare_task("esc50", tmp_path)


def test_row_pointing_nowhere_and_corrupt_file(esc50_root: Path) -> None:
    victims = sorted((esc50_root / "audio").glob("*.wav"))[:2]
    victims[0].unlink()
    victims[1].write_bytes(b"not audio")
    with pytest.raises(EvarError, match="2 bad row") as error:
        evar.prepare_task("esc50", esc50_root)
    assert f"{victims[0].name}: file not found" in str(error.value)
    assert f"{victims[1].name}: unreadable audio" in str(error.value)
    task = evar.prepare_task("esc50", esc50_root, on_error="skip")
    assert len(task) == 13
    assert {p["file"] for p in task.info["skipped"]} == {f"audio/{v.name}" for v in victims}


def test_unprepared_task_says_how(tmp_path: Path) -> None:
    with pytest.raises(EvarError, match="not prepared; run: evar prepare esc50 --root PATH"):
        evar.load_task("esc50")
    with pytest.raises(EvarError, match="unknown task 'esc5'"):
        evar.load_task("esc5")
