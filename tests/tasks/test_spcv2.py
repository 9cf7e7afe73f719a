"""Speech Commands V2: word folders, official validation/testing lists, the rest train; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import evar
from evar.api import probe
from evar.errors import EvarError
from evar.tasks.spcv2 import prepare_spcv2
from evar.options import LinearSettings, RunOptions

from .layouts import make_spcv2_tree


@pytest.fixture
def spcv2(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "speech_commands_v0.02"
    return root, make_spcv2_tree(root)


def test_prepare_follows_the_official_lists(spcv2: tuple[Path, dict[str, str]]) -> None:
    root, expected = spcv2
    task = evar.prepare_task("spcv2", root)
    assert dict(zip(task.meta["file"], task.meta["split"])) == expected  # _background_noise_ is not a class
    assert all(task.meta["label"] == task.meta["file"].str.split("/").str[0])
    assert task.classes == ["no", "up", "yes"]
    assert task.info["per_split"] == {"test": 3, "train": 12, "valid": 3}
    (round_,) = task.splits()
    assert set(task.meta["split"].iloc[round_.valid]) == {"valid"} and set(task.meta["split"].iloc[round_.test]) == {"test"}
    assert task.spec.unit_sec == 1.0 and evar.load_task("spcv2").info["per_class"] == {"no": 6, "up": 6, "yes": 6}


def test_many_files_are_listed_in_one_pass(tmp_path: Path) -> None:
    """3,000 files (no audio needed for the recipe itself): split by set lookup, sorted, labelled by folder."""
    for w, word in enumerate(("cat", "dog", "zero")):
        (tmp_path / word).mkdir()
        for k in range(1000):
            (tmp_path / word / f"{k:08x}_nohash_{w}.wav").touch()
    (tmp_path / "validation_list.txt").write_text("dog/00000001_nohash_1.wav\n\n")
    (tmp_path / "testing_list.txt").write_text("zero/000003e7_nohash_2.wav\n")
    meta = prepare_spcv2(tmp_path)
    assert len(meta) == 3000 and list(meta["file"]) == sorted(meta["file"])
    assert meta["split"].value_counts().to_dict() == {"train": 2998, "valid": 1, "test": 1}
    assert meta.set_index("file").loc["zero/000003e7_nohash_2.wav", "split"] == "test"


def test_listed_file_missing_and_corrupt_file(spcv2: tuple[Path, dict[str, str]]) -> None:
    root, expected = spcv2
    listed = next(f for f, s in expected.items() if s == "test")
    corrupt = next(f for f, s in expected.items() if s == "train")
    (root / listed).unlink()
    (root / corrupt).write_bytes(b"\x00" * 10)
    with pytest.raises(EvarError, match="2 bad row") as error:
        evar.prepare_task("spcv2", root)
    assert f"{listed}: file not found" in str(error.value) and f"{corrupt}: unreadable audio" in str(error.value)
    task = evar.prepare_task("spcv2", root, on_error="skip")
    assert len(task) == 16 and {p["file"] for p in task.info["skipped"]} == {listed, corrupt}


def test_broken_lists_are_named(spcv2: tuple[Path, dict[str, str]]) -> None:
    root, expected = spcv2
    test_entry = next(f for f, s in expected.items() if s == "test")
    with open(root / "validation_list.txt", "a") as f:
        f.write(test_entry + "\n")
    with pytest.raises(EvarError, match=f"{test_entry} is in both validation_list.txt and testing_list.txt"):
        evar.prepare_task("spcv2", root)
    (root / "validation_list.txt").write_text("yes\\bad.wav\n")
    with pytest.raises(EvarError, match=r"validation_list.txt: expected lines like 'right/bb05582b_nohash_3.wav'"):
        evar.prepare_task("spcv2", root)
    (root / "testing_list.txt").unlink()
    with pytest.raises(EvarError, match=r"expected testing_list.txt \(not found\)"):
        evar.prepare_task("spcv2", root)


def test_melspec_probe_end_to_end(tmp_path: Path) -> None:
    make_spcv2_tree(tmp_path, speakers=10)  # 8 training speakers per word
    evar.prepare_task("spcv2", tmp_path)
    result = probe("spcv2", "melspec", settings=LinearSettings(lr=1e-2, max_epochs=60), run=RunOptions(progress=False))
    assert result.rounds == ["test"] and result.metric == "accuracy"
    assert result.mean > 0.6  # 3 synthetic classes, 3 test clips: chance is 1/3
