"""Audio↔text retrieval (EVAR's ``retr_a2t_t2a.py``, 88ba772, with WavCaps' metrics): for a caption task's test
clips, the cached audio embeddings and the text tower's embeddings of every caption are compared by cosine
similarity; each clip retrieves captions (a2t) and each caption retrieves clips (t2a). The row's score is t2a
mAP@10 (the DCASE language-based audio retrieval metric); its settings hold R@1/5/10/50, mAP@10, medR and meanR
of both directions (:mod:`evar.metrics.retrieval`). Clips without embeddings are left out with their captions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tqdm import tqdm

from evar.errors import EvarError
from evar.log import log
from evar.metrics.retrieval import audio_to_text, cosine_similarity, text_to_audio
from evar.options import RetrievalSettings
from evar.protocols.base import Rounds


class RetrievalRounds(Rounds):
    """The one test round of a caption task, from audio embeddings ``X`` (aligned with ``task.meta``) and an
    embedding of each test caption (``text``, in the order of :meth:`test_captions`)."""

    verb = "retrieval"

    def __init__(self, X: np.ndarray, task, text: np.ndarray) -> None:
        super().__init__(task)
        self.X = X
        rows, owner, _ = test_captions(task)
        if len(text) != len(owner):
            raise EvarError(f"{task.name}: {len(text)} caption embeddings for {len(owner)} test captions")
        usable = np.isfinite(np.asarray(X)[rows]).all(axis=1)
        if not usable.all():
            log.warning("%d test clip(s) without embeddings are left out with their captions", int((~usable).sum()))
        kept = usable[owner]
        self.rows, self.text = rows[usable], text[kept]
        self.owner = np.cumsum(usable)[owner[kept]] - 1  # caption -> index among the kept clips
        #: both directions' scores, filled by :meth:`fit_score`
        self.scores: dict[str, dict[str, float]] = {}

    def fit_score(self, round_index: int, seed: int) -> float:
        if len(self.rows) == 0:
            raise EvarError(f"{self.task.name}: no test clip has an embedding")
        similarity = cosine_similarity(np.asarray(self.X[self.rows]), self.text)
        self.scores = {"a2t": audio_to_text(similarity, self.owner), "t2a": text_to_audio(similarity, self.owner)}
        return self.scores["t2a"]["mAP@10"]

    def recorded(self) -> dict[str, Any]:
        """What the results row keeps: both directions' scores and the counts."""
        return {"retrieval": self.scores, "test_clips": int(len(self.rows)), "test_captions": int(len(self.owner))}


def test_captions(task) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The test rows of a caption task, each caption's position among them, and the captions in that order."""
    if task.spec.kind != "captions":
        raise EvarError(f"retrieval needs a caption task (clotho, audiocaps); {task.name} has no captions")
    rows = next(iter(task.splits())).test
    listed = task.captions()
    owner = np.concatenate([np.full(len(listed[r]), i) for i, r in enumerate(rows)]).astype(np.int64)
    return rows, owner, [c for r in rows for c in listed[r]]


def caption_embeddings(encoder, task, settings: RetrievalSettings, progress: bool = True) -> np.ndarray:
    """The text tower's embedding of every test caption of ``task``, ``settings.text_batch`` at a time."""
    if not hasattr(encoder, "embed_text"):
        raise EvarError(f"retrieval needs an encoder with a text tower (clap); {type(encoder).__name__} has none")
    _, _, captions = test_captions(task)
    batches = range(0, len(captions), settings.text_batch)
    return np.concatenate([encoder.embed_text(captions[s:s + settings.text_batch]).float().cpu().numpy()
                           for s in tqdm(batches, desc=f"captions {task.name}", unit="batch", disable=not progress)])
