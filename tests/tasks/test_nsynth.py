"""NSynth: every note of the three examples.json files, label = instrument family; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import evar
from evar.api import probe
from evar.errors import EvarError

from evar.synth.trees import make_nsynth_tree
from evar.options import LinearSettings, RunOptions


@pytest.fixture
def nsynth_root(tmp_path: Path) -> Path:
    return make_nsynth_tree(tmp_path / "nsynth")


def test_prepare_keeps_every_note_with_its_family(nsynth_root: Path) -> None:
    task = evar.prepare_task("nsynth", nsynth_root)
    for split in ("train", "valid", "test"):
        examples = json.loads((nsynth_root / f"nsynth-{split}/examples.json").read_text())
        rows = task.meta[task.meta["split"] == split]
        assert list(rows["file"]) == [f"nsynth-{split}/audio/{key}.wav" for key in examples]  # no filtering
        assert list(rows["label"]) == [e["instrument_family_str"] for e in examples.values()]
    assert task.info["per_split"] == {"test": 6, "train": 16, "valid": 6}
    # synth_lead is only in train (as in the real dataset): it is a class, valid/test just lack it
    assert task.classes == ["bass", "keyboard", "organ", "synth_lead"]
    assert "synth_lead" not in set(task.meta.loc[task.meta["split"] != "train", "label"])
    assert task.spec.unit_sec == 4.0 and task.spec.n_classes == 11


def test_missing_or_broken_metadata_is_named(nsynth_root: Path) -> None:
    valid_json = nsynth_root / "nsynth-valid/examples.json"
    examples = json.loads(valid_json.read_text())
    key = next(iter(examples))
    del examples[key]["instrument_family_str"]
    valid_json.write_text(json.dumps(examples))
    with pytest.raises(EvarError, match=f"nsynth-valid/examples.json: note '{key}' has no 'instrument_family_str'"):
        evar.prepare_task("nsynth", nsynth_root)
    valid_json.write_text("{not json")
    with pytest.raises(EvarError, match="nsynth-valid/examples.json: not valid JSON"):
        evar.prepare_task("nsynth", nsynth_root)
    valid_json.unlink()
    with pytest.raises(EvarError, match=r"expected nsynth-valid/examples.json \(not found\)"):
        evar.prepare_task("nsynth", nsynth_root)


def test_note_without_audio_and_corrupt_audio(nsynth_root: Path) -> None:
    gone, corrupt = sorted((nsynth_root / "nsynth-test/audio").glob("*.wav"))[:2]
    gone.unlink()
    corrupt.write_bytes(b"")
    with pytest.raises(EvarError, match="2 bad row") as error:
        evar.prepare_task("nsynth", nsynth_root)
    assert f"nsynth-test/audio/{gone.name}: file not found" in str(error.value)
    assert f"nsynth-test/audio/{corrupt.name}: unreadable audio" in str(error.value)
    task = evar.prepare_task("nsynth", nsynth_root, on_error="skip")
    assert task.info["per_split"]["test"] == 4 and len(task.info["skipped"]) == 2


def test_melspec_probe_end_to_end(nsynth_root: Path) -> None:
    evar.prepare_task("nsynth", nsynth_root)
    result = probe("nsynth", "melspec", settings=LinearSettings(lr=1e-2, max_epochs=60), run=RunOptions(progress=False))
    assert result.rounds == ["test"] and result.metric == "accuracy"
    assert result.mean > 0.6  # 3 families in test (4 classes in train): chance about 1/4
