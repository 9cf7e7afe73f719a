"""Training losses for fine-tuning: EVAR's cross-entropy, (re-)weighted BCE, asymmetric focal loss,
soft F-measure, and the class weights they take.

Every loss takes logits (or, for :func:`soft_f1_loss`, probabilities) of shape ``(B, C)`` for clip
outputs or ``(B, T, C)`` for frame outputs, and targets of the same shape in [0, 1] (one-hot,
multi-hot, or soft after mixup). Frame losses accept a ``mask`` ``(B, T)`` that selects valid frames.
Reductions are means over the terms that count, so every loss is on the scale of its unweighted form.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from evar.errors import EvarError

LOSSES = ("ce", "wce", "bce", "afl", "soft_f1")


def _class_weights(weights: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | float:
    return 1.0 if weights is None else weights.to(like.device, like.dtype)


def _masked_mean(terms: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``terms`` (B, [T,] C) over the frames where ``mask`` (B, T) is 1."""
    if mask is None:
        return terms.mean()
    m = mask.to(terms.dtype).unsqueeze(-1).expand_as(terms)
    return (terms * m).sum() / m.sum().clamp_min(1.0)


def evar_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                       class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """EVAR's single-label loss ``-mean(w_c · target · log_softmax(logits))``.

    The mean runs over classes as well as examples (so it is the usual cross-entropy divided by C).
    ``class_weights`` (C,) gives weighted cross-entropy on the same scale.
    """
    return -(_class_weights(class_weights, logits) * target * F.log_softmax(logits, dim=-1)).mean()


def binary_cross_entropy(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0,
                         class_weights: torch.Tensor | None = None,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """BCE on sigmoid outputs, ``-mean(w_c [p · z log y + (1 − z) log(1 − y)])``.

    ``pos_weight`` p > 1 up-weights active targets (simple re-weighting); ``class_weights`` (C,)
    weighs each class (e.g. :func:`inverse_frequency_weights`).
    """
    log_y, log_1my = F.logsigmoid(logits), F.logsigmoid(-logits)
    terms = -(pos_weight * target * log_y + (1 - target) * log_1my)
    return _masked_mean(_class_weights(class_weights, logits) * terms, mask)


def asymmetric_focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 0.0, zeta: float = 1.0,
                          class_weights: torch.Tensor | None = None,
                          mask: torch.Tensor | None = None) -> torch.Tensor:
    """Asymmetric focal loss (Imoto et al.): ``-mean[(1 − y)^γ z log y + y^ζ (1 − z) log(1 − y)]``.

    ``y = sigmoid(logits)``, ``z`` the target. γ focuses the active terms on hard examples, ζ the
    inactive ones; γ = ζ = 0 is plain BCE.
    """
    y = torch.sigmoid(logits)
    log_y, log_1my = F.logsigmoid(logits), F.logsigmoid(-logits)
    terms = -((1 - y) ** gamma * target * log_y + y ** zeta * (1 - target) * log_1my)
    return _masked_mean(_class_weights(class_weights, logits) * terms, mask)


def soft_f1_loss(probs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                 average: str = "macro", eps: float = 1e-7) -> torch.Tensor:
    """Soft F-measure loss ``1 − 2TP / (2TP + FP + FN)`` on probabilities.

    ``TP = Σ y z``, ``FP = Σ y (1 − z)``, ``FN = Σ (1 − y) z`` over examples (and the frames where
    ``mask`` is 1, for ``(B, T, C)`` outputs). ``average='macro'`` takes F per class then the mean
    over classes; ``'micro'`` sums over classes first. ``eps`` keeps an empty class finite.
    """
    if average not in ("macro", "micro"):
        raise EvarError(f"soft F1 average must be 'macro' or 'micro', got {average!r}")
    if mask is not None:
        m = mask.to(probs.dtype).unsqueeze(-1)
        probs, target = probs * m, target * m  # masked frames count as neither TP, FP nor FN
    dims = tuple(range(probs.ndim - 1))
    tp = (probs * target).sum(dims)
    fp = (probs * (1 - target)).sum(dims)
    fn = ((1 - probs) * target).sum(dims)
    if average == "micro":
        tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
    f1 = 2 * tp / (2 * tp + fp + fn + eps)
    return 1 - f1.mean()


def inverse_frequency_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Class weights ``N / (C · n_c)`` from training labels (indices, or a multi-hot matrix).

    A class absent from the training labels gets weight 0 (it has no examples to weigh).
    """
    y = np.asarray(y)
    counts = y.sum(axis=0).astype(np.float64) if y.ndim == 2 else np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def make_loss(name: str, multilabel: bool, class_weights: torch.Tensor | None = None, pos_weight: float = 1.0,
              gamma: float = 0.0, zeta: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss ``f(logits, target)`` named by ``--loss``.

    ``ce``: EVAR's cross-entropy (BCE for multi-label tasks, as EVAR); ``wce``: ``ce`` with
    ``class_weights``; ``bce``; ``afl``; ``soft_f1`` (on softmax probabilities for single-label
    tasks, sigmoid for multi-label).
    """
    if name not in LOSSES:
        raise EvarError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    if name == "wce" and class_weights is None:
        raise EvarError("--loss wce needs class weights (computed from the training labels)")
    if name in ("ce", "wce"):
        if multilabel:
            return lambda logits, target: binary_cross_entropy(logits, target, pos_weight, class_weights)
        return lambda logits, target: evar_cross_entropy(logits, target, class_weights)
    if name == "bce":
        return lambda logits, target: binary_cross_entropy(logits, target, pos_weight, class_weights)
    if name == "afl":
        return lambda logits, target: asymmetric_focal_loss(logits, target, gamma, zeta, class_weights)
    to_probs = torch.sigmoid if multilabel else (lambda logits: torch.softmax(logits, dim=-1))
    return lambda logits, target: soft_f1_loss(to_probs(logits), target)
