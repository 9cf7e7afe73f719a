"""Few-shot probes on cached embeddings (MTEB's audio classification: logistic regression on 8 clips per class,
10 draws), or a nearest-centroid classifier. The logistic regressions of all draws of a round are solved as one
batched problem."""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

from evar.errors import EvarError
from evar.options import FewShotSettings
from evar.protocols.base import EmbeddingRounds

log = logging.getLogger(__name__)


def draw_shots(labels: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``shots`` rows of each class present in ``labels`` (positions into it), drawn without replacement."""
    chosen = [rng.choice(np.flatnonzero(labels == c), min(shots, int(np.sum(labels == c))), replace=False)
              for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def fit_logistic(X: torch.Tensor, y: torch.Tensor, n_classes: int, c: float, mask: torch.Tensor | None = None,
                 tol: float = 1e-5, max_iter: int = 1000) -> torch.Tensor:
    """Multinomial logistic regressions ``(batch, dim + 1, n_classes)`` (last row: intercepts; in ``X``'s dtype)
    on a batch of problems ``X (batch, n, dim)``, ``y (batch, n)``, ``mask (batch, n)`` marking real rows
    (padding rows must be zero): each minimises scikit-learn's objective ``sum of cross-entropies + ||W||² / (2c)``
    (intercept unpenalised) until scikit-learn's stopping rule holds: the largest gradient of that objective
    divided by the rows (scikit-learn's mean form) is at most ``tol`` (scikit-learn's default is 1e-4), checked
    on the weights returned. The problems are independent, so one L-BFGS on their sum reaches each one's optimum.
    It is solved on rows centred on their mean (the same optimum: the intercept takes the shift, and the
    conditioning is far better); when ``dim`` exceeds ``n``, in the span of the rows (the penalty only grows
    outside it), ``n`` wide, from the rows' Gram matrix in float64 (:func:`row_coordinates`)."""
    batch, rows, dim = X.shape
    mask = torch.ones(y.shape, dtype=X.dtype) if mask is None else mask.to(X.dtype)
    real, counts = mask.unsqueeze(2), mask.sum(1)
    mean = (X * real).sum(1, keepdim=True) / counts[:, None, None]
    if dim < rows:
        Z, to_weights = ((X - mean) * real).double(), None
    else:
        Z, to_weights = row_coordinates(X, mask, mean)
    design = torch.cat([Z, real.double()], dim=2)
    targets = torch.nn.functional.one_hot(y, n_classes).to(X.dtype) * real
    targets64, mask64 = targets.double(), mask.double()
    threshold = tol * float(counts.min())  # on the summed objective
    weights = torch.zeros(batch, Z.shape[2] + 1, n_classes)
    for _ in range(4):  # a miss tightens the solver's threshold
        weights = _minimise(design, targets64, mask64, c, weights, max_iter, threshold)
        weights = _newton_intercepts(design, targets64, mask64, weights.double())
        W, intercept = weights[:, :-1], weights[:, -1:].to(X.dtype)
        if to_weights is None:
            W = W.to(X.dtype)
        else:  # the appended unit column's weight joins the intercepts
            W, unit = to_weights(W)
            intercept = intercept + unit
        solved = torch.cat([W, intercept - mean @ W], dim=1)
        worst = float((summed_gradient(X, targets, real, solved, c).abs().amax((1, 2)) / counts).max())
        if worst <= tol:
            break
        threshold *= tol / worst / 2
    else:
        log.warning("few-shot logistic regression stopped with a gradient of %.2g, above tol %.2g", worst, tol)
    return solved


def summed_gradient(X: torch.Tensor, targets: torch.Tensor, real: torch.Tensor, solved: torch.Tensor,
                    c: float) -> torch.Tensor:
    """The gradient of the summed objective at weights ``solved`` (intercepts last), in the original features."""
    W, intercept = solved[:, :-1], solved[:, -1:]
    residual = (torch.softmax(X @ W + intercept, dim=2) - targets) * real
    return torch.cat([X.transpose(1, 2) @ residual + W / c, residual.sum(1, keepdim=True)], dim=1)


def _newton_intercepts(design: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor,
                       steps: int = 2) -> torch.Tensor:
    """Newton steps on the intercepts alone, from the solver's weights: on centred rows the intercepts' gradient
    moves into the original features' weights' gradient times the mean (``Xᵀ r = (X - mean)ᵀ r + meanᵀ Σ r``),
    so it is brought near zero here (exact Hessian ``Σ diag(p) - p pᵀ`` per problem, made regular along the
    ones, the direction the softmax ignores) instead of solving every weight that much tighter."""
    weights = weights.clone()
    n_classes = weights.shape[2]
    for _ in range(steps):
        p = torch.softmax(design @ weights, dim=2) * mask.unsqueeze(2)
        hessian = torch.diag_embed(p.sum(1)) - p.transpose(1, 2) @ p + 1 / n_classes
        weights[:, -1] -= torch.linalg.solve(hessian, (p - targets).sum(1))
    return weights


def _minimise(design: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, c: float, start: torch.Tensor,
              max_iter: int, threshold: float) -> torch.Tensor:
    """L-BFGS in float32, then, only where float32 stalled above ``threshold``, in ``design``'s precision."""
    weights = Objective(design.float(), targets.float(), mask.float(), c).minimise(start.float(), max_iter, threshold)
    if design.dtype == torch.float32:
        return weights
    problem = Objective(design, targets, mask, c)
    weights = weights.to(design.dtype)
    if float(problem.value_and_gradient(weights)[1].abs().max()) > threshold:
        weights = problem.minimise(weights, max_iter, threshold)
    return weights


def row_coordinates(X: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, Callable]:
    """Coordinates ``Z (batch, n, n)``, in float64, of the rows of ``[X - mean, 1]`` (centred on the real rows'
    ``mean (batch, 1, dim)``, a unit column appended so that the Gram matrix stays regular) in an orthonormal basis of their span,
    and the map from weights ``V`` in that basis to the centred rows' weights ``(batch, dim, k)`` (in ``X``'s
    dtype) and the unit column's ``(batch, 1, k)``. From the Cholesky factor of the Gram matrix ``L Lᵀ``
    (centred from ``X Xᵀ``, so no centred copy of ``X`` is made): ``Z = L``, basis ``[X - mean, 1]ᵀ L⁻ᵀ``; where a
    Gram matrix is singular or badly conditioned (repeated rows), from a QR decomposition of ``[X - mean, 1]ᵀ``.
    Padding rows (mask 0) get a unit diagonal, out of the real rows' way."""
    m = mask.double().unsqueeze(2)
    counts = m.sum(1, keepdim=True)
    X64 = X.double()
    gram = X64 @ X64.transpose(1, 2)
    row_means = gram @ m / counts  # x_i · mean
    centred = (gram - row_means * m.transpose(1, 2) - m * row_means.transpose(1, 2)
               + (m.transpose(1, 2) @ row_means) / counts * (m * m.transpose(1, 2)))
    gram = centred * (m * m.transpose(1, 2)) + m * m.transpose(1, 2) + torch.diag_embed(1 - m[:, :, 0])
    L, info = torch.linalg.cholesky_ex(gram)
    pivots = torch.diagonal(L, dim1=1, dim2=2) ** 2
    scale = torch.diagonal(gram, dim1=1, dim2=2).amax(1, keepdim=True)
    if bool((info == 0).all()) and bool((pivots > 1e-10 * scale).all()):
        def to_weights(V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            U = (torch.linalg.solve_triangular(L.transpose(1, 2), V, upper=True) * m).to(X.dtype)
            summed = U.sum(1, keepdim=True)
            return X.transpose(1, 2) @ U - mean.transpose(1, 2) @ summed, summed
        return L, to_weights
    basis, R = torch.linalg.qr(torch.cat([(X64 - mean.double()) * m, m], dim=2).transpose(1, 2))

    def from_basis(V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        W = (basis @ V).to(X.dtype)
        return W[:, :-1], W[:, -1:]
    return R.transpose(1, 2), from_basis


class Objective:
    """The summed penalised cross-entropies of a batch of problems (the intercepts last in ``design``), with the
    gradient written out (``designᵀ (softmax - onehot) + W / c``): one matrix product each way, no graph."""

    def __init__(self, design: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, c: float) -> None:
        width = design.shape[2] - 1
        self.design, self.transposed, self.c = design, design.transpose(1, 2).contiguous(), c
        self.mask, self.targets = mask.unsqueeze(2), targets
        self.penalised = torch.ones(1, width + 1, 1, dtype=design.dtype)
        self.penalised[:, width] = 0

    def value_and_gradient(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_p = torch.log_softmax(self.design @ weights, dim=2)
        shrunk = weights * self.penalised
        gradient = self.transposed @ (log_p.exp() * self.mask - self.targets) + shrunk / self.c
        return -(log_p * self.targets).sum() + (shrunk * weights).sum() / (2 * self.c), gradient

    def minimise(self, start: torch.Tensor, max_iter: int, threshold: float) -> torch.Tensor:
        """L-BFGS (strong Wolfe) from ``start`` until the largest gradient is at most ``threshold`` or the line
        search stalls."""
        weights = start.to(self.design.dtype).clone()
        optimiser = torch.optim.LBFGS([weights], lr=1, max_iter=max_iter, tolerance_grad=threshold,
                                      tolerance_change=0, history_size=20, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            value, weights.grad = self.value_and_gradient(weights)
            return value

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
            X = torch.zeros(len(sets), size, self.X.shape[1])  # float32 as cached; the solver's Gram is float64
            y = torch.zeros(len(sets), size, dtype=torch.long)
            mask = torch.zeros(len(sets), size)
            for d, rows in enumerate(sets):
                X[d, :len(rows)] = torch.from_numpy(self.X[rows].astype(np.float32))
                y[d, :len(rows)] = torch.from_numpy(self.y[rows])
                mask[d, :len(rows)] = 1
            weights = fit_logistic(X, y, n_classes, self.settings.c, mask, self.settings.tol)
            design = torch.cat([torch.from_numpy(X_test), torch.ones(len(X_test), 1, dtype=torch.float64)], dim=1)
            predictions = torch.einsum("nd,bdc->bnc", design, weights.double()).argmax(dim=2).numpy()
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
