"""Small trees in the official layouts of UrbanSound8K, Speech Commands V2 and NSynth, plus custom-task CSVs.

File names, CSV/JSON/TXT formats are the real ones; each clip is ``evar.synth.trees.synth_clip`` of its class
index, so a linear probe can learn the classes. Short clips at 16 kHz keep the tests fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from evar.audio import write_audio
from evar.synth.trees import synth_clip
from evar.tasks.us8k import US8K_COLUMNS

SR = 16000
#: UrbanSound8K's classes in classID order (metadata/UrbanSound8K.csv)
US8K_CLASSES = ["air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling", "engine_idling",
                "gun_shot", "jackhammer", "siren", "street_music"]



def _write(path: Path, class_index: int, rng: np.random.Generator, seconds: float) -> None:
    write_audio(path, synth_clip(class_index, rng, SR, seconds), SR)


def make_us8k_tree(root: Path, n_classes: int = 3, clips_per_class_per_fold: int = 1, seconds: float = 0.3,
                   seed: int = 0) -> Path:
    """``metadata/UrbanSound8K.csv`` + ``audio/fold{k}/{fsID}-{classID}-{occurrence}-{slice}.wav``, 10 folds."""
    rng = np.random.default_rng(seed)
    rows = []
    for fold in range(1, 11):
        for class_id in range(n_classes):
            for k in range(clips_per_class_per_fold):
                fs_id = int(rng.integers(1000, 200000))
                name = f"{fs_id}-{class_id}-0-{k}.wav"
                _write(root / f"audio/fold{fold}" / name, class_id, rng, seconds)
                rows.append([name, fs_id, k * 4.0, k * 4.0 + seconds, 1 + k % 2, fold, class_id, US8K_CLASSES[class_id]])
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=US8K_COLUMNS).to_csv(root / "metadata/UrbanSound8K.csv", index=False)
    (root / "UrbanSound8K_README.txt").write_text("UrbanSound8K\n")
    return root


def make_spcv2_tree(root: Path, words: tuple[str, ...] = ("no", "up", "yes"), speakers: int = 6,
                    seconds: float = 0.25, seed: int = 0) -> dict[str, str]:
    """``<word>/<hash>_nohash_0.wav`` + ``validation_list.txt`` / ``testing_list.txt`` + ``_background_noise_``.

    Like the official lists, the split follows the speaker: the last two speakers are valid and test.
    Returns ``{file: split}``.
    """
    rng = np.random.default_rng(seed)
    hashes = [f"{int(rng.integers(0, 2**32)):08x}" for _ in range(speakers)]
    split_of_speaker = ["train"] * (speakers - 2) + ["valid", "test"]
    expected = {}
    for w, word in enumerate(words):
        for speaker, split in zip(hashes, split_of_speaker):
            rel = f"{word}/{speaker}_nohash_0.wav"
            _write(root / rel, w, rng, seconds)
            expected[rel] = split
    for split, name in (("valid", "validation_list.txt"), ("test", "testing_list.txt")):
        (root / name).write_text("".join(f"{f}\n" for f in sorted(expected) if expected[f] == split))
    write_audio(root / "_background_noise_/white_noise.wav", 0.1 * rng.standard_normal(SR).astype(np.float32), SR)
    (root / "_background_noise_/README.md").write_text("background noise\n")
    (root / "LICENSE").write_text("CC BY 4.0\n")
    (root / "README.md").write_text("Speech Commands Data Set v0.02\n")
    return expected


def make_custom_tree(root: Path, group: str = "split", n_classes: int = 3, per_class: int = 6,
                     multilabel: bool = False, seconds: tuple[float, ...] = (0.3, 0.5), seed: int = 0) -> Path:
    """Clips under ``root/clips/`` and ``root/labels.csv`` with columns ``file,label,split`` or ``file,label,fold``.

    Splits cycle train, train, train, train, valid, test per class; folds cycle 1, 2, 3. Multi-label rows
    carry the class and its neighbour (``c0;c1``). Durations cycle through ``seconds``.
    """
    rng = np.random.default_rng(seed)
    cycle = ["train"] * 4 + ["valid", "test"] if group == "split" else ["1", "2", "3"]
    rows = []
    for c in range(n_classes):
        for k in range(per_class):
            rel = f"clips/c{c}_{k:02d}.wav"
            _write(root / rel, c, rng, seconds[k % len(seconds)])
            label = f"c{c};c{(c + 1) % n_classes}" if multilabel else f"c{c}"
            rows.append({"file": rel, "label": label, group: cycle[k % len(cycle)]})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"
