"""Few-shot probes on cached embeddings (MTEB's audio classification: logistic regression on 8 clips per class,
10 draws), or a nearest-centroid classifier. The logistic regressions of all draws of a round are solved as one
batched problem."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from evar.errors import EvarError
from evar.options import FewShotSettings
from evar.protocols.base import EmbeddingRounds


def draw_shots(labels: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``shots`` rows of each class present in ``labels`` (positions into it), drawn without replacement."""
    chosen = [rng.choice(np.flatnonzero(labels == c), min(shots, int(np.sum(labels == c))), replace=False)
              for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def fit_logistic(X: torch.Tensor, y: torch.Tensor, n_classes: int, c: float, mask: torch.Tensor | None = None,
                 max_iter: int = 1000, refine_iter: int = 20) -> torch.Tensor:
    """Multinomial logistic regressions ``(batch, dim + 1, n_classes)`` (last row: intercepts) on a batch of
    problems ``X (batch, n, dim)``, ``y (batch, n)``, ``mask (batch, n)`` marking real rows (padding rows must be
    zero): each minimises scikit-learn's objective ``sum of cross-entropies + ||W||² / (2c)`` (intercept
    unpenalised). The problems are independent, so one L-BFGS on their sum reaches each one's optimum; it runs in
    float32 until the line search stalls or the gradient is below 1e-5, then at most ``refine_iter`` iterations in
    ``X``'s precision. When ``dim`` exceeds ``n``, the optimum lies in the span of the rows (the penalty only
    grows outside it), so it is solved there, ``n`` wide, from the rows' Gram matrix (:func:`row_coordinates`)."""
    batch, rows, dim = X.shape
    mask = torch.ones(y.shape, dtype=X.dtype) if mask is None else mask.to(X.dtype)
    Z, to_weights = (X, None) if dim <= rows else row_coordinates(X, mask)
    width = Z.shape[2]
    design = torch.cat([Z, torch.ones(batch, rows, 1, dtype=X.dtype)], dim=2)
    weights = torch.zeros(batch, width + 1, n_classes, dtype=torch.float32)
    for dtype, iterations, tolerance in ((torch.float32, max_iter, 1e-5), (X.dtype, refine_iter, 1e-7)):
        weights = _lbfgs(design.to(dtype), y, mask.to(dtype), weights.to(dtype), c, iterations, tolerance)
    solved = weights.to(X.dtype)
    if to_weights is None:
        return solved
    return torch.cat([to_weights(solved[:, :width]), solved[:, width:]], dim=1)


def row_coordinates(X: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, Callable]:
    """Coordinates ``Z (batch, n, n)`` of the rows in an orthonormal basis of their span, and the map from
    weights ``V`` in that basis to weights in the original space. From the Cholesky factor of the Gram matrix
    ``X Xᵀ = L Lᵀ``: ``Z = L``, basis ``Xᵀ L⁻ᵀ`` (a third of the work of a QR decomposition); where a Gram matrix
    is singular or badly conditioned (repeated rows), from a QR decomposition of ``Xᵀ``.
    Padding rows (mask 0) get a unit diagonal, so their coordinates stay out of the real rows' way."""
    gram = X @ X.transpose(1, 2) + torch.diag_embed(1 - mask)
    L, info = torch.linalg.cholesky_ex(gram)
    pivots = torch.diagonal(L, dim1=1, dim2=2) ** 2
    scale = (X * X).sum(2).amax(1, keepdim=True)
    if bool((info == 0).all()) and bool((pivots > 1e-10 * scale).all()):
        return L, lambda V: X.transpose(1, 2) @ torch.linalg.solve_triangular(L.transpose(1, 2), V, upper=True)
    basis, R = torch.linalg.qr(X.transpose(1, 2))
    return R.transpose(1, 2), lambda V: basis @ V


def _lbfgs(design: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, start: torch.Tensor, c: float,
           max_iter: int, tolerance: float) -> torch.Tensor:
    """L-BFGS (strong Wolfe) on the summed penalised cross-entropies from ``start``; the intercepts are last.
    The gradient is written out (``designᵀ (softmax - onehot) + W / c``): one matrix product each way, no graph."""
    width = design.shape[2] - 1
    weights = start.clone()
    targets = torch.nn.functional.one_hot(y, start.shape[2]).to(design.dtype) * mask.unsqueeze(2)
    penalised = torch.ones(1, width + 1, 1, dtype=design.dtype)
    penalised[:, width] = 0
    transposed = design.transpose(1, 2).contiguous()
    optimiser = torch.optim.LBFGS([weights], lr=1, max_iter=max_iter, tolerance_grad=tolerance, tolerance_change=0,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        log_p = torch.log_softmax(design @ weights, dim=2)
        shrunk = weights * penalised
        weights.grad = transposed @ (log_p.exp() * mask.unsqueeze(2) - targets) + shrunk / c
        return -(log_p * targets).sum() + (shrunk * weights).sum() / (2 * c)

    with torch.no_grad():
        optimiser.step(closure)
    return weights


class FewShotRounds(EmbeddingRounds):
    """Few-shot classification per round: ``draws`` training sets of ``shots`` clips per class, each scored on
    the round's test split; the round's score is their mean (each draw's score in ``draw_scores``)."""

    verb = "few-shot"

    def __init__(self, X: np.ndarray, task, settings: FewShotSettings) -> None:
        if task.spec.multilabel:
            raise EvarError(f"{task.name} is multi-label: few-shot draws need one class per clip")
        super().__init__(X, task)
        self.settings = settings
        self.draw_scores: dict[tuple[int, int], list[float]] = {}

    def draws(self, train: np.ndarray, round_index: int, seed: int) -> list[np.ndarray]:
        """The training rows of each draw (the same for any encoder: they depend on seed, round and labels)."""
        rng = np.random.default_rng([seed, round_index])
        return [train[draw_shots(self.y[train], self.settings.shots, rng)] for _ in range(self.settings.draws)]

    def fit_score(self, round_index: int, seed: int) -> float:
        train, _, test = self.rows(round_index)
        sets = self.draws(train, round_index, seed)
        n_classes = len(self.task.classes)
        X_test, y_test = self.X[test].astype(np.float64), self.y[test]
        if self.settings.classifier == "centroid":
            predictions = np.stack([self._centroid_predictions(rows, X_test, n_classes) for rows in sets])
        else:
            size = max(len(rows) for rows in sets)
            X = torch.zeros(len(sets), size, self.X.shape[1], dtype=torch.float64)
            y = torch.zeros(len(sets), size, dtype=torch.long)
            mask = torch.zeros(len(sets), size)
            for d, rows in enumerate(sets):
                X[d, :len(rows)] = torch.from_numpy(self.X[rows].astype(np.float64))
                y[d, :len(rows)] = torch.from_numpy(self.y[rows])
                mask[d, :len(rows)] = 1
            weights = fit_logistic(X, y, n_classes, self.settings.c, mask)
            design = torch.cat([torch.from_numpy(X_test), torch.ones(len(X_test), 1, dtype=torch.float64)], dim=1)
            predictions = torch.einsum("nd,bdc->bnc", design, weights).argmax(dim=2).numpy()
        scores = [float(np.mean(p == y_test)) for p in predictions]
        self.keep_predictions(round_index, seed, np.tile(test, len(sets)), predictions.reshape(-1))  # every draw
        self.draw_scores[(round_index, seed)] = scores
        return float(np.mean(scores))

    def _centroid_predictions(self, rows: np.ndarray, X_test: np.ndarray, n_classes: int) -> np.ndarray:
        support = self.X[rows].astype(np.float64)
        support /= np.maximum(np.linalg.norm(support, axis=1, keepdims=True), 1e-12)
        centroids = np.full((n_classes, support.shape[1]), np.nan)
        for c in np.unique(self.y[rows]):
            centroids[c] = support[self.y[rows] == c].mean(axis=0)
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        similarity = np.nan_to_num(X_test @ centroids.T, nan=-np.inf)  # classes without shots never win
        return similarity.argmax(axis=1)
