"""Generated sound event detection data: tone events of known class and timing in background noise,
written as a user SED CSV (``evar prepare sed``) or as a HEAR 2021 event task folder (``evar prepare hear``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from evar.audio import write_audio
from evar.metrics.sed import Event
from evar.synth.trees import synth_clip

SED_CLASSES = ["beep", "chirp", "horn"]


def synth_scene(rng: np.random.Generator, sample_rate: int = 16000, seconds: float = 4.0, max_events: int = 3,
                noise: float = 0.02, classes: list[str] = SED_CLASSES) -> tuple[np.ndarray, list[Event]]:
    """A clip of white background noise holding 1..``max_events`` non-overlapping tone events.

    Each event is :func:`evar.synth.trees.synth_clip` of its class (a harmonic tone at a class pitch), 0.3-1.0 s
    long with 10 ms fades; its onset and offset (seconds, 3 decimals) are where it was placed.
    """
    n = int(seconds * sample_rate)
    wav = noise * rng.standard_normal(n)
    events: list[Event] = []
    cursor = float(np.round(rng.uniform(0.1, 0.6), 3))
    for _ in range(int(rng.integers(1, max_events + 1))):
        length = float(np.round(rng.uniform(0.3, 1.0), 3))
        if cursor + length > seconds - 0.1:
            break
        c = int(rng.integers(len(classes)))
        start, count = int(round(cursor * sample_rate)), int(round(length * sample_rate))
        tone = synth_clip(c, rng, sample_rate, count / sample_rate, noise=0.0)[:count].astype(np.float64)
        fade = min(int(0.01 * sample_rate), count // 2)
        ramp = np.linspace(0.0, 1.0, fade)
        tone[:fade] *= ramp
        tone[count - fade:] *= ramp[::-1]
        wav[start:start + len(tone)] += tone
        events.append(Event(cursor, float(np.round(cursor + length, 3)), classes[c]))
        cursor = float(np.round(cursor + length + rng.uniform(0.2, 0.8), 3))
    return (wav / max(1.0, np.abs(wav).max())).astype(np.float32), events


def make_sed_csv_tree(root: str | Path, clips: dict[str, int] | None = None, sample_rate: int = 16000,
                      seconds: float = 4.0, seed: int = 0) -> Path:
    """Audio under ``root/audio/<split>/`` and ``root/events.csv`` (file, onset, offset, label, split).

    ``clips`` gives the number of clips per split (default train 12, valid 4, test 6). Returns the CSV path.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for split, count in (clips or {"train": 12, "valid": 4, "test": 6}).items():
        for k in range(count):
            name = f"audio/{split}/{split}-{k:03d}.wav"
            wav, events = synth_scene(rng, sample_rate, seconds)
            write_audio(root / name, wav, sample_rate)
            rows += [(name, e.onset, e.offset, e.label, split) for e in events]
    path = root / "events.csv"
    pd.DataFrame(rows, columns=["file", "onset", "offset", "label", "split"]).to_csv(path, index=False)
    return path


def make_hear_event_task(root: str | Path, clips: dict[str, int] | None = None, sample_rate: int = 16000,
                         seconds: float = 4.0, seed: int = 0, task_name: str = "tiny_sed") -> Path:
    """A HEAR 2021 event task folder as hear-preprocess writes it: ``task_metadata.json`` (embedding_type
    event, multilabel, trainvaltest, HEAR's DCASE 2016 task 2 evaluation), ``labelvocabulary.csv``,
    ``<split>.json`` ({file: [{"label", "start", "end"} in ms]}) and ``<sr>/<split>/*.wav``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    splits = clips or {"train": 12, "valid": 4, "test": 6}
    for split, count in splits.items():
        labels = {}
        for k in range(count):
            name = f"{split}-{k:03d}.wav"
            wav, events = synth_scene(rng, sample_rate, seconds)
            write_audio(root / str(sample_rate) / split / name, wav, sample_rate)
            labels[name] = [{"label": e.label, "start": round(1000 * e.onset, 3), "end": round(1000 * e.offset, 3)}
                            for e in events]
        (root / f"{split}.json").write_text(json.dumps(labels, indent=True))
    metadata = {"task_name": task_name, "version": "v0.0.1", "embedding_type": "event",
                "prediction_type": "multilabel", "split_mode": "trainvaltest", "sample_duration": seconds,
                "evaluation": ["event_onset_200ms_fms", "segment_1s_er"], "mode": "full", "splits": list(splits)}
    (root / "task_metadata.json").write_text(json.dumps(metadata, indent=True))
    pd.DataFrame({"idx": range(len(SED_CLASSES)), "label": SED_CLASSES}).to_csv(root / "labelvocabulary.csv", index=False)
    return root
