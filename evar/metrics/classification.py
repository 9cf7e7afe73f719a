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
