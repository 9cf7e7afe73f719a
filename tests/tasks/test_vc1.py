"""VoxCeleb1 identification: iden_split.txt codes, speaker labels, broken trees."""

from __future__ import annotations

from pathlib import Path

import pytest

import evar
from evar.api import probe
from evar.errors import EvarError
from evar.options import RunOptions

from .layouts_b import make_vc1_tree


def test_iden_split_codes_and_speaker_labels(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    expected = make_vc1_tree(tmp_path, n_speakers=3)
    task = evar.prepare_task("vc1", tmp_path)
    assert dict(zip(task.meta["file"], task.meta["split"])) == expected
    assert (task.meta["label"] == task.meta["file"].str.split("/").str[1]).all()
    assert task.classes == ["id10001", "id10002", "id10003"]
    assert task.info["per_split"] == {"test": 3, "train": 9, "valid": 3}
    assert task.spec.unit_sec == 8.2 and task.spec.n_classes == 1251
    assert "the protocol has 1251" in capsys.readouterr().err


def test_lines_with_windows_endings_and_blank_lines(tmp_path: Path) -> None:
    expected = make_vc1_tree(tmp_path, n_speakers=2)
    text = (tmp_path / "iden_split.txt").read_text()
    (tmp_path / "iden_split.txt").write_text(text.replace("\n", "\r\n") + "\r\n")
    task = evar.prepare_task("vc1", tmp_path)
    assert dict(zip(task.meta["file"], task.meta["split"])) == expected


def test_broken_trees(tmp_path: Path) -> None:
    make_vc1_tree(tmp_path, n_speakers=2)
    split_file = tmp_path / "iden_split.txt"
    good = split_file.read_text()
    split_file.unlink()
    with pytest.raises(EvarError, match=r"expected iden_split\.txt .*robots\.ox\.ac\.uk"):
        evar.prepare_task("vc1", tmp_path)
    split_file.write_text(good + "4 id10001/abc/00009.wav\n")
    with pytest.raises(EvarError, match=r"iden_split\.txt:11: expected '<1\|2\|3> idNNNNN"):
        evar.prepare_task("vc1", tmp_path)
    split_file.write_text(good)
    lost = good.splitlines()[3].split()[1]
    (tmp_path / "wav" / lost).unlink()
    with pytest.raises(EvarError, match=f"1 bad row.*wav/{lost}: file not found"):
        evar.prepare_task("vc1", tmp_path)
    task = evar.prepare_task("vc1", tmp_path, on_error="skip")
    assert len(task.meta) == 9 and f"wav/{lost}" not in set(task.meta["file"])
    assert task.info["skipped"] == [{"file": f"wav/{lost}", "reason": "file not found"}]


def test_linear_probe_end_to_end(tmp_path: Path) -> None:
    make_vc1_tree(tmp_path, n_speakers=3)
    evar.prepare_task("vc1", tmp_path)
    result = probe("vc1", "melspec", run=RunOptions(progress=False), record=False)
    assert result.metric == "accuracy" and result.rounds == ["test"]
    assert 1 / 3 < result.mean <= 1.0  # above chance on 3 speakers with class-coloured clips
