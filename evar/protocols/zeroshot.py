"""Zero-shot classification with a language-aligned encoder's text tower (EVAR's ``zeroshot.py``, 88ba772).

Each class becomes a caption (EVAR's ``class_to_caption``: CREMA-D's emotions described in words, GTZAN's
"<genre> music", NSynth's "the musical instrument sound of <family>", otherwise the label with underscores as
spaces; then "<caption> can be heard"); the text tower embeds the captions, the cached audio embeddings of each
round's test clips are compared by cosine similarity, and the most similar caption is the prediction (accuracy),
or the similarities rank the clips per class (mAP, multi-label tasks). Nothing is trained: the training split
is not used. EVAR pools the test clips of all folds into one accuracy; evar reports each fold and their mean
(the same number when folds are of equal size).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from evar.errors import EvarError
from evar.metrics.classification import mean_average_precision
from evar.options import ZeroShotSettings
from evar.protocols.base import EmbeddingRounds

#: EVAR's captions for CREMA-D's emotion codes
CREMAD_CAPTIONS = {"ANG": "angry person talking", "DIS": "someone talking in disgust",
                   "FEA": "someone talking with a sense of fear", "HAP": "someone talking happily and joyfully",
                   "NEU": "someone talking calmly", "SAD": "someone talking sadly"}
#: EVAR's task-specific caption templates (applied before the common suffix)
TASK_TEMPLATES = {"gtzan": "{} music", "nsynth": "the musical instrument sound of {}"}


def class_captions(task: str, classes: Sequence[str], template: str = "{} can be heard") -> list[str]:
    """EVAR's caption of each class of ``task``."""
    if task == "cremad":
        named = [CREMAD_CAPTIONS.get(c, c) for c in classes]
    else:
        named = [TASK_TEMPLATES.get(task, "{}").format(c) for c in classes]
    return [template.format(name.replace("_", " ")) for name in named]


class ZeroShotRounds(EmbeddingRounds):
    """Zero-shot scores per round from audio embeddings ``X`` and the classes' caption embeddings ``text``."""

    verb = "zero-shot"

    def __init__(self, X: np.ndarray, task, text: np.ndarray) -> None:
        super().__init__(X, task)
        if len(text) != len(task.classes):
            raise EvarError(f"{task.name}: {len(text)} caption embeddings for {len(task.classes)} classes")
        self.text = text / np.linalg.norm(text, axis=1, keepdims=True)

    def similarities(self, rows: np.ndarray) -> np.ndarray:
        audio = self.X[rows].astype(np.float64)
        return (audio / np.linalg.norm(audio, axis=1, keepdims=True)) @ self.text.T

    def fit_score(self, round_index: int, seed: int) -> float:
        _, _, test = self.rows(round_index)
        similarity = self.similarities(test)
        if self.task.spec.multilabel:
            return mean_average_precision(self.y[test], similarity)
        self.keep_predictions(round_index, seed, test, similarity.argmax(axis=1))
        return float(np.mean(similarity.argmax(axis=1) == self.y[test]))


def caption_embeddings(encoder, task, settings: ZeroShotSettings) -> tuple[list[str], np.ndarray]:
    """The captions of ``task``'s classes and their text embeddings (one caption at a time, as EVAR)."""
    if not hasattr(encoder, "embed_text"):
        raise EvarError(f"zero-shot needs an encoder with a text tower (clap); {type(encoder).__name__} has none")
    captions = class_captions(task.name, task.classes, settings.template)
    return captions, np.concatenate([encoder.embed_text([c]).cpu().numpy() for c in captions])
