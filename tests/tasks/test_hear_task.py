"""HEAR 2021 task folders (hear-preprocess layout) prepared as evar tasks (scene; event tasks also in tests/test_sed_task.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evar import EvarError, list_tasks, load_task
from evar.audio import write_audio
from evar.synth.trees import synth_clip
from evar.tasks.hear import prepare_hear
from evar.options import LinearSettings, RunOptions

CLASSES = ["cat", "dog", "hen"]


def make_hear_task(root: Path, split_mode: str = "trainvaltest", prediction_type: str = "multiclass",
                   embedding_type: str = "scene", sample_duration: float | None = 1.0,
                   rates: tuple[int, ...] = (48000, 16000), clips_per_class: int = 2) -> Path:
    """A HEAR task folder as hear-preprocess writes it (task_metadata.json, labelvocabulary.csv,
    ``<split>.json``, ``<sr>/<split>/*.wav``), with generated audio."""
    splits = ["train", "valid", "test"] if split_mode == "trainvaltest" else ["fold00", "fold01", "fold02"]
    rng = np.random.default_rng(0)
    for split in splits:
        labels = {}
        for c, cls in enumerate(CLASSES):
            for k in range(clips_per_class):
                name = f"{split}-{cls}-{k}.wav"
                seconds = sample_duration or 0.5 + 0.25 * k
                wav = synth_clip(c, rng, 48000, seconds)
                for rate in rates:
                    step = 48000 // rate
                    write_audio(root / str(rate) / split / name, wav[::step], rate)
                if embedding_type == "event":
                    labels[name] = [{"label": cls, "start": 100.0, "end": 400.0}]
                elif prediction_type == "multilabel":
                    labels[name] = [cls, CLASSES[(c + 1) % 3]] if k else [cls]
                else:
                    labels[name] = [cls]
        (root / f"{split}.json").write_text(json.dumps(labels, indent=True))
    metadata = {"task_name": "tiny_hear", "version": "v0.0.1", "embedding_type": embedding_type,
                "prediction_type": prediction_type, "split_mode": split_mode, "sample_duration": sample_duration,
                "evaluation": ["top1_acc"], "mode": "full", "splits": splits}
    if split_mode != "trainvaltest":
        metadata["nfolds"] = len(splits)
    (root / "task_metadata.json").write_text(json.dumps(metadata, indent=True))
    pd.DataFrame({"idx": range(3), "label": CLASSES}).to_csv(root / "labelvocabulary.csv", index=False)
    return root


def test_trainvaltest(tmp_path: Path):
    root = make_hear_task(tmp_path / "tiny_hear-v0.0.1-full")
    task = prepare_hear(root)
    assert task.name == "hear_tiny_hear" and task.spec.folds == 0 and not task.spec.multilabel
    assert task.spec.unit_sec == 1.0 and task.spec.n_classes == 3 and task.classes == CLASSES
    assert len(task) == 18 and task.meta["split"].value_counts().to_dict() == {"train": 6, "valid": 6, "test": 6}
    assert task.meta["file"].iloc[0] == "48000/train/train-cat-0.wav"  # highest rate by default
    assert all(p.is_file() for p in task.paths())
    assert task.labels()[task.meta["file"].str.contains("-dog-")].tolist() == [1] * 6
    split = next(task.splits())
    assert len(split.train) == len(split.valid) == len(split.test) == 6
    loaded = load_task("hear_tiny_hear")  # found again from the prepared metadata
    assert loaded.spec.description.startswith("HEAR tiny_hear") and "hear_tiny_hear" in [s.name for s in list_tasks()]
    at16k = prepare_hear(root, name="tiny16k", sample_rate=16000)
    assert at16k.meta["file"].str.startswith("16000/").all()


def test_kfold_becomes_evar_folds(tmp_path: Path):
    task = prepare_hear(make_hear_task(tmp_path / "t", split_mode="presplit_kfold"), name="tiny_folds")
    assert task.spec.folds == 3 and sorted(set(task.meta["fold"])) == [1, 2, 3]
    assert task.meta.loc[task.meta["file"].str.contains("/fold00/"), "fold"].eq(1).all()
    rounds = list(task.splits())
    assert [r.name for r in rounds] == ["fold1", "fold2", "fold3"]
    assert all(r.valid is None and len(r.test) == 6 and len(r.train) == 12 for r in rounds)  # EVAR's rule


def test_multilabel_and_variable_length(tmp_path: Path):
    root = make_hear_task(tmp_path / "t", prediction_type="multilabel", sample_duration=None, rates=(16000,))
    task = prepare_hear(root, name="tiny_tags")
    assert task.spec.multilabel and task.spec.metric == "mAP"
    assert "cat;dog" in set(task.meta["label"])
    y = task.labels()
    assert y.shape == (18, 3) and y.sum() == 18 + 9
    assert task.spec.unit_sec == 0.62  # mean of 0.5 s and 0.75 s clips


def test_errors(tmp_path: Path):
    with pytest.raises(EvarError, match="expected task_metadata.json"):
        prepare_hear(tmp_path)
    root = make_hear_task(tmp_path / "event", embedding_type="event", rates=(16000,), clips_per_class=1)
    meta = json.loads((root / "task_metadata.json").read_text())
    (root / "task_metadata.json").write_text(json.dumps({**meta, "embedding_type": "timestamp"}))
    with pytest.raises(EvarError, match="unknown embedding_type 'timestamp'"):
        prepare_hear(root)


def test_event_folder_becomes_an_event_task(tmp_path: Path):
    from evar.tasks.sed import is_event_task, load_events

    root = make_hear_task(tmp_path / "event", embedding_type="event", rates=(16000,), clips_per_class=1)
    task = prepare_hear(root, name="tiny_events")
    assert is_event_task("tiny_events") and task.spec.multilabel and task.spec.n_classes == 3
    assert load_events(task)["16000/train/train-dog-0.wav"] == [(0.1, 0.4, "dog")]  # 100-400 ms
    root = make_hear_task(tmp_path / "t", rates=(16000,), clips_per_class=1)
    with pytest.raises(EvarError, match="built-in task"):
        prepare_hear(root, name="esc50")
    with pytest.raises(EvarError, match=r"no audio folders 48000/<split>/.*available rates: \[16000\]"):
        prepare_hear(root, sample_rate=48000)
    labels = json.loads((root / "train.json").read_text())
    labels["train-cat-0.wav"] = ["cat", "dog"]
    (root / "train.json").write_text(json.dumps(labels))
    with pytest.raises(EvarError, match="train.json: train-cat-0.wav: 2 label.*exactly one"):
        prepare_hear(root)
    labels["train-cat-0.wav"] = ["cat"]
    labels["missing.wav"] = ["dog"]
    (root / "train.json").write_text(json.dumps(labels))
    with pytest.raises(EvarError, match="16000/train/missing.wav: file not found"):
        prepare_hear(root)
    task = prepare_hear(root, on_error="skip")
    assert len(task) == 9 and task.info["skipped"][0]["file"] == "16000/train/missing.wav"


def test_probe_on_a_hear_task(tmp_path: Path):
    from evar.api import probe

    prepare_hear(make_hear_task(tmp_path / "t", rates=(16000,), clips_per_class=4), name="tiny_probe")
    result = probe("tiny_probe", "melspec", settings=LinearSettings(max_epochs=30), run=RunOptions(progress=False), record=False)
    assert result.rounds == ["test"] and 0.0 <= result.mean <= 1.0
