"""Event (SED) tasks: user CSVs (`evar prepare sed`) and HEAR 2021 event task folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evar import EvarError, load_task
from evar.audio import write_audio
from evar.metrics.sed import Event
from evar.synth.sed import make_hear_event_task
from evar.tasks.custom import prepare_custom
from evar.tasks.hear import prepare_hear
from evar.tasks.sed import is_event_task, load_events, prepare_sed, primary_metric


def _clips(root: Path, names: list[str], seconds: float = 2.0) -> None:
    rng = np.random.default_rng(0)
    for name in names:
        write_audio(root / name, (0.01 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)


def _csv(path: Path, rows: list[tuple], columns=("file", "onset", "offset", "label", "split")) -> Path:
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def test_prepare_from_csv(tmp_path: Path):
    _clips(tmp_path, ["a.wav", "b.wav", "c.wav", "d.wav"])
    csv = _csv(tmp_path / "events.csv", [
        ("a.wav", 0.5, 1.25, "car", "train"), ("a.wav", 0.2, 0.4, "dog", "train"),
        ("b.wav", 1.5, 3.0, "car", "train"),       # runs past the 2 s clip: cut at 2.0
        ("b.wav", 2.5, 2.8, "dog", "train"),       # starts after the clip's end: dropped
        ("c.wav", "", "", "", "valid"),            # a clip without events
        ("d.wav", 0.0, 1.0, "dog", "test"),
    ])
    task = prepare_sed(csv, tmp_path, "mysed")
    assert is_event_task("mysed") and primary_metric("mysed") == "event_onset_200ms_fms"
    assert task.spec.multilabel and task.spec.n_classes == 2 and task.spec.unit_sec == 2.0
    assert task.meta.set_index("file")["label"].to_dict() == {"a.wav": "car;dog", "b.wav": "car", "c.wav": "",
                                                               "d.wav": "dog"}
    events = load_events(load_task("mysed"))
    assert events == {"a.wav": [Event(0.2, 0.4, "dog"), Event(0.5, 1.25, "car")], "b.wav": [Event(1.5, 2.0, "car")],
                      "c.wav": [], "d.wav": [Event(0.0, 1.0, "dog")]}
    # the same name re-prepared as a clip-level task is no longer an event task
    _csv(tmp_path / "clips.csv", [("a.wav", "car", "train"), ("d.wav", "dog", "test")], ("file", "label", "split"))
    prepare_custom(tmp_path / "clips.csv", tmp_path, "mysed")
    assert not is_event_task("mysed")
    with pytest.raises(EvarError, match="not a prepared event"):
        load_events(load_task("mysed"))


def test_csv_with_folds(tmp_path: Path):
    _clips(tmp_path, ["a.wav", "b.wav"])
    csv = _csv(tmp_path / "e.csv", [("a.wav", 0.1, 0.5, "x", 1), ("b.wav", 0.2, 0.6, "x", 2)],
               ("file", "onset", "offset", "label", "fold"))
    task = prepare_sed(csv, tmp_path, "foldsed")
    assert task.spec.folds == 2 and [s.name for s in task.splits()] == ["fold1", "fold2"]


@pytest.mark.parametrize("rows, message", [
    ([("a.wav", 1.0, 0.5, "car", "train")], r"0 <= onset < offset, see line\(s\) \[2\]"),
    ([("a.wav", "x", 0.5, "car", "train")], r"numbers in seconds"),
    ([("a.wav", 0.1, "", "car", "train")], r"all be given .* line\(s\) \[2\]"),
    ([("a.wav", 0.1, 0.5, "car", "train"), ("a.wav", 0.6, 0.9, "car", "test")], "more than one split"),
    ([("a.wav", 0.1, 0.5, "car", "dev")], "unknown split value"),
    ([("a.wav", 0.1, 0.5, "car", "train")], "needs train and test"),
    ([("a.wav", 0.1, 0.5, "car", "train"), ("missing.wav", 0.1, 0.5, "car", "test")], "missing.wav: file not found"),
])
def test_csv_errors(tmp_path: Path, rows: list[tuple], message: str):
    _clips(tmp_path, ["a.wav"])
    with pytest.raises(EvarError, match=message):
        prepare_sed(_csv(tmp_path / "e.csv", rows), tmp_path, "bad")


def test_csv_layout_errors(tmp_path: Path):
    _clips(tmp_path, ["a.wav"])
    with pytest.raises(EvarError, match="expected columns file,onset,offset,label"):
        prepare_sed(_csv(tmp_path / "e.csv", [("a.wav", "car", "train")], ("file", "label", "split")), tmp_path, "x")
    with pytest.raises(EvarError, match="reserved"):
        prepare_sed(tmp_path / "e.csv", tmp_path, "esc50")
    with pytest.raises(EvarError, match="CSV file not found"):
        prepare_sed(tmp_path / "nope.csv", tmp_path, "x")


def test_hear_event_task_folder(tmp_path: Path):
    root = make_hear_event_task(tmp_path / "tiny_sed-v0.0.1-full", clips={"train": 3, "valid": 1, "test": 2})
    task = prepare_hear(root)
    assert task.name == "hear_tiny_sed" and is_event_task(task.name) and task.spec.unit_sec == 4.0
    assert task.spec.n_classes == 3 and task.meta["split"].value_counts().to_dict() == {"train": 3, "test": 2, "valid": 1}
    labels = json.loads((root / "train.json").read_text())
    first = labels["train-000.wav"][0]
    events = load_events(task)["16000/train/train-000.wav"]
    assert events[0] == Event(first["start"] / 1000, first["end"] / 1000, first["label"])  # ms -> s
    assert sum(map(len, load_events(task).values())) == sum(len(v) for s in ("train", "valid", "test")
                                                           for v in json.loads((root / f"{s}.json").read_text()).values())


def test_hear_event_metric_and_errors(tmp_path: Path):
    root = make_hear_event_task(tmp_path / "t", clips={"train": 2, "test": 1})
    meta = json.loads((root / "task_metadata.json").read_text())
    meta["evaluation"] = ["event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms"]  # maestro's
    (root / "task_metadata.json").write_text(json.dumps(meta))
    assert primary_metric(prepare_hear(root, name="notes").name) == "event_onset_50ms_fms"
    labels = json.loads((root / "train.json").read_text())
    labels["train-000.wav"] = [{"label": "beep", "start": 500}]
    (root / "train.json").write_text(json.dumps(labels))
    with pytest.raises(EvarError, match=r"train.json: train-000.wav: expected events .*\(ms\)"):
        prepare_hear(root, name="notes")
    labels["train-000.wav"] = [{"label": "beep", "start": 500, "end": 400}]
    (root / "train.json").write_text(json.dumps(labels))
    with pytest.raises(EvarError, match="start < end"):
        prepare_hear(root, name="notes")
