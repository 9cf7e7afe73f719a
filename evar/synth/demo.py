"""The smoke run: a generated ESC-50-shaped dataset through prepare, probe and leaderboard."""

from __future__ import annotations

import os
from pathlib import Path

from evar.api import probe
from evar.log import log
from evar.options import ModelChoice
from evar.results.leaderboard import leaderboard_text
from evar.synth.trees import make_esc50_tree
from evar.tasks import prepare_task


def run_demo(directory: Path, byola_weights: str | None = None) -> str:
    """Generate ``directory/ESC-50-master`` (10 classes x 10 noisy clips, synthetic), then probe melspec
    (and BYOL-A when its weights are given) and build the leaderboard. Labelled as a smoke run:
    the data are generated tones, not ESC-50. Metadata, embeddings and results stay under
    ``directory``, apart from the user's own. Returns what `evar demo` prints: each model's score and the
    leaderboard."""
    for variable, sub in (("EVAR_TASKS_DIR", "tasks"), ("EVAR_EMBEDDINGS_DIR", "embeddings"),
                          ("EVAR_RESULTS_DIR", "results")):
        os.environ[variable] = str(directory / sub)
    root = directory / "ESC-50-master"
    if not (root / "meta" / "esc50.csv").is_file():
        log.info("SMOKE RUN: generating an ESC-50-shaped dataset of synthetic clips in %s", root)
        make_esc50_tree(root, n_classes=10, clips_per_class_per_fold=2, sample_rate=16000, seconds=5.0, noise=1.0)
    prepare_task("esc50", root)
    models = [("melspec", None)] + ([("byola", byola_weights)] if byola_weights else [])
    lines = []
    for model, weights in models:
        result = probe("esc50", ModelChoice(model, weights))
        lines.append(f"{model}: accuracy {100 * result.mean:.1f} ± {100 * result.std:.1f} over {len(result.rounds)} folds")
    lines.append(f"\nLeaderboard of {directory / 'results'} (SMOKE RUN on synthetic ESC-50-shaped data, "
                 "not comparable to published numbers):")
    return "\n".join(lines) + "\n" + leaderboard_text()
