"""The one holdout: a validation part drawn from a round's training rows, under a stated rule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HoldoutRule:
    """How many rows validate and when a draw is accepted.

    ``ceil``: ``ceil(fraction * n)`` rows (scikit-learn's ``train_test_split``, EVAR's), else ``round`` and at
    least one. A single-label draw is repeated (up to ``attempts`` times, keeping the last) until the validation
    part holds every class of the rows; ``give_up_early`` accepts the first draw when it cannot (fewer validation
    rows than classes); ``cover_multilabel`` asks the same of multi-hot labels (every class present in the rows).
    """

    fraction: float = 0.1
    ceil: bool = False
    attempts: int = 1000
    give_up_early: bool = True
    cover_multilabel: bool = False

    def size(self, n: int) -> int:
        return math.ceil(self.fraction * n) if self.ceil else max(1, int(round(n * self.fraction)))


#: EVAR's ``train_test_sure_split`` (its linear evaluation; the random stream replays EVAR's draws)
EVAR_HOLDOUT = HoldoutRule(ceil=True, attempts=100, give_up_early=False, cover_multilabel=True)


def holdout(n: int, rng: np.random.Generator | np.random.RandomState, rule: HoldoutRule = HoldoutRule(),
            labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) positions ``0..n-1`` in drawn order (``rng.permutation(n)``, the first ``rule.size(n)``
    validate); ``labels`` (class indices, or multi-hot rows) of the ``n`` rows make the draw cover the classes."""
    n_valid = rule.size(n)
    check = _coverage(labels, n_valid, rule)
    for _ in range(rule.attempts):
        order = rng.permutation(n)
        valid, train = order[:n_valid], order[n_valid:]
        if check is None or check(valid):
            break
    return train, valid


def _coverage(labels: np.ndarray | None, n_valid: int, rule: HoldoutRule):
    if labels is None:
        return None
    if labels.ndim == 2:
        if not rule.cover_multilabel:
            return None
        present = labels.sum(axis=0) > 0
        return lambda valid: np.array_equal(labels[valid].sum(axis=0) > 0, present)
    classes = np.unique(labels)
    if rule.give_up_early and n_valid < len(classes):
        return None
    return lambda valid: len(np.unique(labels[valid])) == len(classes)


def holdout_rows(rows: np.ndarray, rng: np.random.Generator, rule: HoldoutRule = HoldoutRule(),
                 labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`holdout` of the rows ``rows`` (``labels`` indexed by row), as sorted (train, valid) rows."""
    train, valid = holdout(len(rows), rng, rule, None if labels is None else labels[rows])
    return np.sort(rows[train]), np.sort(rows[valid])
