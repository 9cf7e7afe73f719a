"""Surge: EVAR's tone split table, note labels, both root choices, broken trees."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import evar
from evar.api import probe
from evar.errors import EvarError
from evar.tasks.surge import tone_splits
from evar.options import RunOptions

from .layouts_b import make_surge_tree, surge_tones


def test_shipped_table_has_evars_tone_counts() -> None:
    table = tone_splits()
    assert len(table) == 2084
    assert Counter(table.values()) == {"train": 1692, "valid": 195, "test": 197}
    assert all(t.startswith("surge-patches-") and t.endswith("-velocity64") for t in table)
    # Spot checks against evar/predefined/dataset_surge_tone_splits.csv of nttcslab/eval-audio-repr@88ba772
    assert table["surge-patches-3rdparty-Argitoth-Drums-Kick-velocity64"] == "valid"
    assert table["surge-patches-3rdparty-Argitoth-Drums-Snare-velocity64"] == "train"


@pytest.mark.parametrize("root_is_surge_folder", [False, True])
def test_tone_splits_and_note_labels(tmp_path: Path, root_is_surge_folder: bool, capsys: pytest.CaptureFixture) -> None:
    tones = surge_tones(per_split=1)
    written = make_surge_tree(tmp_path, list(tones))
    root = tmp_path / "surge" if root_is_surge_folder else tmp_path
    task = evar.prepare_task("surge", root)
    strip = (lambda f: f.removeprefix("surge/")) if root_is_surge_folder else (lambda f: f)
    assert sorted(task.meta["file"]) == sorted(strip(f) for f in written)
    for file, label, split in task.meta[["file", "label", "split"]].itertuples(index=False):
        assert split == tones[Path(file).parent.name] and label == Path(file).stem
    assert task.classes == ["note060", "note064", "note067"]
    assert task.info["per_split"] == {"test": 3, "train": 3, "valid": 3}
    err = capsys.readouterr().err
    assert "2081 of the 2084 tones" in err and "the protocol has 88" in err


def test_broken_trees(tmp_path: Path) -> None:
    with pytest.raises(EvarError, match="none found"):
        evar.prepare_task("surge", tmp_path)
    tones = list(surge_tones(per_split=1))
    make_surge_tree(tmp_path, tones + ["my-own-preset"], midi_notes=(60, 72))
    with pytest.raises(EvarError, match=r"surge/my-own-preset: tone folder not in EVAR's Surge split table"):
        evar.prepare_task("surge", tmp_path)
    for f in (tmp_path / "surge" / "my-own-preset").iterdir():
        f.unlink()
    broken = tmp_path / "surge" / tones[0] / "note072.ogg"
    broken.write_bytes(b"OggS broken")
    with pytest.raises(EvarError, match=f"surge/{tones[0]}/note072.ogg: unreadable audio"):
        evar.prepare_task("surge", tmp_path)
    task = evar.prepare_task("surge", tmp_path, on_error="skip")
    assert len(task.meta) == 5
    assert [p["file"] for p in task.info["skipped"]] == [f"surge/{tones[0]}/note072.ogg"]


def test_linear_probe_end_to_end(tmp_path: Path) -> None:
    make_surge_tree(tmp_path, list(surge_tones(per_split=2)))
    evar.prepare_task("surge", tmp_path)
    result = probe("surge", "melspec", run=RunOptions(progress=False), record=False)
    assert result.metric == "accuracy" and result.rounds == ["test"]
    assert 1 / 3 < result.mean <= 1.0
