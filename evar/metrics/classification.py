"""Classification scores: mean average precision (multi-label); accuracy is the mean of argmax hits."""

from __future__ import annotations

import numpy as np


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Macro average precision over classes with at least one positive (multi-label metric)."""
    aps = []
    for c in range(y_true.shape[1]):
        positives = y_true[:, c] > 0
        if not positives.any():
            continue
        order = np.argsort(-scores[:, c], kind="stable")
        hits = positives[order]
        precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
        aps.append(precision_at_hit.mean())
    return float(np.mean(aps)) if aps else float("nan")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``(n_classes, n_classes)``: row = true class, column = predicted class."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return counts


def class_accuracies(confusion: np.ndarray) -> np.ndarray:
    """Per-class accuracy (recall) from a confusion matrix; NaN for a class with no test clips."""
    totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(confusion) / np.maximum(totals, 1), np.nan)
