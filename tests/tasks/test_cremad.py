"""CREMA-D: EVAR's actor split table, labels from file names, both layouts, broken trees."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import evar
from evar.api import probe
from evar.audio import write_audio
from evar.errors import EvarError
from evar.tasks.cremad import EMOTIONS, EXCLUDED, speaker_splits
from evar.options import RunOptions

from .layouts_b import cremad_speakers, make_cremad_tree

QUIET = np.zeros(1600, dtype=np.float32)


def test_shipped_table_is_evars_speaker_disjoint_draw() -> None:
    table = speaker_splits()
    assert sorted(table) == [str(a) for a in range(1001, 1092)]  # the 91 CREMA-D actors
    assert Counter(table.values()) == {"train": 63, "valid": 9, "test": 19}
    # Spot checks against evar/metadata/cremad.csv of nttcslab/eval-audio-repr@88ba772
    assert table["1001"] == "test" and table["1009"] == "valid" and table["1002"] == "train"
    assert sorted(a for a, s in table.items() if s == "valid") == [
        "1009", "1011", "1022", "1034", "1039", "1047", "1066", "1070", "1082"]


@pytest.mark.parametrize("official", [True, False])
def test_labels_and_actor_splits(tmp_path: Path, official: bool, capsys: pytest.CaptureFixture) -> None:
    actors = cremad_speakers(per_split=1)
    written = make_cremad_tree(tmp_path, [a for group in actors.values() for a in group], official=official)
    prefix = "AudioWAV/" if official else ""
    write_audio(tmp_path / prefix / "1040_ITH_SAD_XX.wav", QUIET, 16000)  # left out by TFDS and EVAR
    assert "1040_ITH_SAD_XX.wav" in EXCLUDED
    task = evar.prepare_task("cremad", tmp_path)
    assert sorted(task.meta["file"]) == sorted(written)
    split_of = {a: split for split, group in actors.items() for a in group}
    for file, label, split in task.meta[["file", "label", "split"]].itertuples(index=False):
        actor, _, emotion, _ = Path(file).stem.split("_")
        assert label == emotion and split == split_of[actor]
    assert task.classes == EMOTIONS
    assert task.info["per_split"] == {"test": 12, "train": 12, "valid": 12}
    assert "36 clips" in capsys.readouterr().err  # fewer than the task's 7,438 is said, not hidden


def test_broken_trees(tmp_path: Path) -> None:
    with pytest.raises(EvarError, match="none found"):
        evar.prepare_task("cremad", tmp_path)
    make_cremad_tree(tmp_path, ["1001", "1002"], emotions=["ANG", "SAD"])
    stray = tmp_path / "AudioWAV" / "1001_DFA_XYZ_XX.wav"
    write_audio(stray, QUIET, 16000)
    with pytest.raises(EvarError, match=r"1001_DFA_XYZ_XX\.wav: not a CREMA-D clip name"):
        evar.prepare_task("cremad", tmp_path)
    stray.unlink()
    unknown = tmp_path / "AudioWAV" / "1200_DFA_ANG_XX.wav"
    write_audio(unknown, QUIET, 16000)
    with pytest.raises(EvarError, match=r"1200_DFA_ANG_XX\.wav: actor 1200 is not one of the 91"):
        evar.prepare_task("cremad", tmp_path)
    unknown.unlink()
    (tmp_path / "AudioWAV" / "1002_IEO_SAD_HI.wav").write_bytes(b"RIFF....WAVEfmt broken")
    with pytest.raises(EvarError, match=r"AudioWAV/1002_IEO_SAD_HI\.wav: unreadable audio"):
        evar.prepare_task("cremad", tmp_path)
    task = evar.prepare_task("cremad", tmp_path, on_error="skip")
    assert len(task.meta) == 7 and "AudioWAV/1002_IEO_SAD_HI.wav" not in set(task.meta["file"])
    assert [p["file"] for p in task.info["skipped"]] == ["AudioWAV/1002_IEO_SAD_HI.wav"]


def test_linear_probe_end_to_end(tmp_path: Path) -> None:
    actors = cremad_speakers(per_split=1)
    make_cremad_tree(tmp_path, [a for group in actors.values() for a in group])
    evar.prepare_task("cremad", tmp_path)
    result = probe("cremad", "melspec", run=RunOptions(progress=False), record=False)
    assert result.metric == "accuracy" and result.rounds == ["test"]
    assert 1 / 6 < result.mean <= 1.0
