"""Generated audio in real dataset layouts, for the smoke run and the tests (no download needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from evar.audio import write_audio

#: The first ESC-50 categories with their official target numbers (meta/esc50.csv).
ESC50_CATEGORIES = ["dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow"]

#: NSynth instrument families in instrument_family order
NSYNTH_FAMILIES = ["bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string",
                   "synth_lead", "vocal"]
NSYNTH_SOURCES = ["acoustic", "electronic", "synthetic"]
NSYNTH_QUALITIES = ["bright", "dark", "distortion", "fast_decay", "long_release", "multiphonic", "nonlinear_env",
                    "percussive", "reverb", "tempo-synced"]


def synth_clip(class_index: int, rng: np.random.Generator, sample_rate: int = 16000, seconds: float = 1.0,
               noise: float = 0.03) -> np.ndarray:
    """A clip whose class shows in its spectrum: a harmonic tone at a class pitch, AM, plus noise.

    ``noise`` is the standard deviation of the added white noise (the tone's amplitude is about 0.2).
    """
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    f0 = 180.0 * 1.35 ** class_index * rng.uniform(0.97, 1.03)
    tone = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in (1, 2, 3))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(1, 4) * t)
    wav = 0.2 * tone * envelope + noise * rng.standard_normal(len(t))
    return (wav / max(1.0, np.abs(wav).max())).astype(np.float32)


def make_esc50_tree(root: str | Path, n_classes: int = 5, clips_per_class_per_fold: int = 2,
                    sample_rate: int = 44100, seconds: float = 5.0, seed: int = 0, noise: float = 0.03) -> Path:
    """An ESC-50-shaped tree (``meta/esc50.csv`` with the official columns, ``audio/*.wav``).

    File names follow the official ``{fold}-{src_file}-{take}-{target}.wav`` pattern.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for fold in range(1, 6):
        for target in range(n_classes):
            for k in range(clips_per_class_per_fold):
                src = f"{rng.integers(100000, 999999)}"
                name = f"{fold}-{src}-{'ABC'[k % 3]}-{target}.wav"
                write_audio(root / "audio" / name, synth_clip(target, rng, sample_rate, seconds, noise), sample_rate)
                rows.append([name, fold, target, ESC50_CATEGORIES[target % len(ESC50_CATEGORIES)], False, src, "ABC"[k % 3]])
    (root / "meta").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["filename", "fold", "target", "category", "esc10", "src_file", "take"]).to_csv(
        root / "meta" / "esc50.csv", index=False)
    return root


def make_nsynth_tree(root: str | Path, families: tuple[str, ...] = ("bass", "keyboard", "organ"),
                     train_only: tuple[str, ...] = ("synth_lead",), notes: dict[str, int] | None = None,
                     seconds: float = 0.3, seed: int = 0, sample_rate: int = 16000) -> Path:
    """``nsynth-{train,valid,test}/examples.json`` + ``audio/<note_str>.wav``.

    ``notes[split]`` notes per family; families in ``train_only`` appear only in train (as ``synth_lead``
    in the real dataset).
    """
    root = Path(root)
    notes = notes or {"train": 4, "valid": 2, "test": 2}
    rng = np.random.default_rng(seed)
    note_id = 0
    for split, n in notes.items():
        examples = {}
        for family in families + (train_only if split == "train" else ()):
            family_index = NSYNTH_FAMILIES.index(family)
            source = int(rng.integers(0, 3))
            instrument = int(rng.integers(0, 1000))
            instrument_str = f"{family}_{NSYNTH_SOURCES[source]}_{instrument % 100:03d}"
            for k in range(n):
                pitch, velocity = 40 + 3 * k, [25, 50, 75, 100, 127][k % 5]
                note_str = f"{instrument_str}-{pitch:03d}-{velocity:03d}"
                qualities = [int(rng.random() < 0.2) for _ in NSYNTH_QUALITIES]
                examples[note_str] = {
                    "note": note_id, "note_str": note_str, "instrument": instrument, "instrument_str": instrument_str,
                    "pitch": pitch, "velocity": velocity, "sample_rate": sample_rate, "qualities": qualities,
                    "qualities_str": [q for q, on in zip(NSYNTH_QUALITIES, qualities) if on],
                    "instrument_family": family_index, "instrument_family_str": family,
                    "instrument_source": source, "instrument_source_str": NSYNTH_SOURCES[source],
                }
                note_id += 1
                write_audio(root / f"nsynth-{split}/audio/{note_str}.wav", synth_clip(family_index, rng, sample_rate, seconds),
                            sample_rate)
        (root / f"nsynth-{split}").mkdir(parents=True, exist_ok=True)
        (root / f"nsynth-{split}/examples.json").write_text(json.dumps(examples, indent=4))
    return root
