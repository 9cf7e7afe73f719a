"""Shared by the sweep tests: two tiny prepared tasks and a 2 models x 2 tasks grid."""

from __future__ import annotations

from pathlib import Path

import evar
from encoder_checkpoints import write_checkpoint
from evar.sweep.jobs import Job, make_grid
from evar.synth.trees import make_esc50_tree
from tasks.layouts import make_spcv2_tree

COMPARED_COLUMNS = ["protocol", "model", "layers", "task", "metric", "score", "std", "n_folds", "fold_scores",
                    "seeds", "weights", "weights_sha256", "settings"]


def prepare_esc50(root: Path) -> None:
    """20 generated clips of 0.3 s (2 classes, 5 folds) in the official ESC-50 layout, prepared."""
    evar.prepare_task("esc50", make_esc50_tree(root / "ESC-50-master", n_classes=2, clips_per_class_per_fold=2,
                                               sample_rate=16000, seconds=0.3))


def prepare_spcv2(root: Path) -> None:
    """18 generated clips of 0.25 s (3 words, fixed train/valid/test split) in the official layout, prepared."""
    make_spcv2_tree(root / "speech_commands_v0.02")
    evar.prepare_task("spcv2", root / "speech_commands_v0.02")


def grid(root: Path) -> list[Job]:
    """melspec and BYOL-A (a seeded random checkpoint in the official format) on esc50 and spcv2, 2 seeds."""
    weights, _ = write_checkpoint("byola", root / "weights")
    return make_grid(["melspec", "byola"], ["esc50", "spcv2"], seeds=(42, 43), weights={"byola": str(weights)},
                     max_epochs=20, patience=5)


def comparable(frame) -> list[dict]:
    """Result rows without run id, date and version, in a fixed order."""
    rows = frame[COMPARED_COLUMNS].astype(str).to_dict("records")
    return sorted(rows, key=lambda r: (r["model"], r["task"]))
