"""The parameter-free k-nearest-neighbour probe on cached embeddings (X-ARES's kNN evaluation).

One similarity matrix per round, in chunks of test rows; through the protocol skeleton
(:class:`~evar.protocols.base.EmbeddingRounds`).
"""

from __future__ import annotations

import numpy as np
import torch

from evar.metrics.classification import mean_average_precision
from evar.options import KnnSettings
from evar.protocols.base import EmbeddingRounds

#: test rows per similarity chunk (memory: chunk x training rows floats)
KNN_CHUNK = 4096


def standardiser(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of ``X``'s columns in float64, constant columns scaled by 1 (scikit-learn's StandardScaler)."""
    X64 = np.asarray(X, dtype=np.float64)
    mean, std = X64.mean(axis=0), X64.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def knn_votes(train: np.ndarray, targets: np.ndarray, test: np.ndarray, settings: KnnSettings) -> np.ndarray:
    """Class votes ``(len(test), n_classes)`` of the ``k`` nearest training rows; ``targets`` is one-hot or
    multi-hot ``(len(train), n_classes)``. Cosine neighbours vote ``exp(similarity / temperature)``, Euclidean
    ones 1 each."""
    train_t = torch.from_numpy(np.ascontiguousarray(train, dtype=np.float32))
    targets_t = torch.from_numpy(np.asarray(targets, dtype=np.float32))
    k = min(settings.k, len(train_t))
    if settings.metric == "cosine":
        train_t = torch.nn.functional.normalize(train_t, dim=1)
    votes = []
    for start in range(0, len(test), KNN_CHUNK):
        query = torch.from_numpy(np.ascontiguousarray(test[start:start + KNN_CHUNK], dtype=np.float32))
        if settings.metric == "cosine":
            similarity = torch.nn.functional.normalize(query, dim=1) @ train_t.T
        else:
            similarity = -torch.cdist(query, train_t)
        top, index = similarity.topk(k, dim=1)
        weight = torch.exp(top / settings.temperature) if settings.metric == "cosine" else torch.ones_like(top)
        votes.append(torch.einsum("qk,qkc->qc", weight, targets_t[index]))
    return torch.cat(votes).numpy() if votes else np.zeros((0, targets.shape[1]), np.float32)


class KnnRounds(EmbeddingRounds):
    """k-nearest-neighbour classification per round: accuracy (ties go to the first class), or mAP of the votes
    for multi-label tasks."""

    verb = "knn"

    def __init__(self, X: np.ndarray, task, settings: KnnSettings) -> None:
        super().__init__(X, task)
        self.settings = settings

    def fit_score(self, round_index: int, seed: int) -> float:
        train, _, test = self.rows(round_index)  # nothing to tune: the validation split is not used
        mean, scale = standardiser(self.X[train])
        n_classes = len(self.task.classes)
        targets = self.y[train] if self.task.spec.multilabel else np.eye(n_classes, dtype=np.float32)[self.y[train]]
        votes = knn_votes((self.X[train] - mean) / scale, targets, (self.X[test] - mean) / scale, self.settings)
        if self.task.spec.multilabel:
            return mean_average_precision(self.y[test], votes)
        self.keep_predictions(round_index, seed, test, votes.argmax(axis=1))
        return float(np.mean(votes.argmax(axis=1) == self.y[test]))
