"""Fine-tuning losses against values computed by hand (tolerance 1e-6 unless stated).

Shared inputs: logits (0, ln 3) give sigmoid outputs y = (0.5, 0.75); with target z = (1, 0) the
BCE terms are -ln 0.5 = ln 2 and -ln(1 - 0.75) = ln 4 = 2 ln 2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evar.errors import EvarError
from evar.protocols.losses import (
    asymmetric_focal_loss, binary_cross_entropy, evar_cross_entropy, inverse_frequency_weights, make_loss,
    soft_f1_loss,
)

LN2 = math.log(2)
LOGITS = torch.tensor([[0.0, math.log(3)]])
TARGET = torch.tensor([[1.0, 0.0]])


def close(value: torch.Tensor, expected: float, tol: float = 1e-6) -> None:
    assert abs(float(value) - expected) < tol, (float(value), expected)


def test_evar_cross_entropy_means_over_classes_too():
    # softmax of (0, ln 2, 0) = (1/4, 1/2, 1/4); target class 1 -> -ln(1/2) / 3 classes
    logits = torch.tensor([[0.0, LN2, 0.0]])
    target = torch.tensor([[0.0, 1.0, 0.0]])
    close(evar_cross_entropy(logits, target), LN2 / 3)
    # two examples: second is (0, 0) over 2 classes target 0 -> ln 2 / 2; batch of 2 x 2 classes
    logits2 = torch.tensor([[0.0, 0.0], [0.0, math.log(3)]])
    target2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # -ln(1/2) and -ln(3/4)
    close(evar_cross_entropy(logits2, target2), (LN2 - math.log(0.75)) / 4)
    # class weights (2, 1): the first example's term doubles
    close(evar_cross_entropy(logits2, target2, torch.tensor([2.0, 1.0])), (2 * LN2 - math.log(0.75)) / 4)
    # soft (mixup) targets: 0.25/0.75 of the (1/2, 1/2) example
    close(evar_cross_entropy(torch.zeros(1, 2), torch.tensor([[0.25, 0.75]])), LN2 / 2)


def test_bce_plain_reweighted_and_class_weighted():
    close(binary_cross_entropy(LOGITS, TARGET), (LN2 + 2 * LN2) / 2)
    close(binary_cross_entropy(LOGITS, TARGET, pos_weight=3.0), (3 * LN2 + 2 * LN2) / 2)  # simple re-weighting
    close(binary_cross_entropy(LOGITS, TARGET, class_weights=torch.tensor([1.0, 2.0])), (LN2 + 4 * LN2) / 2)
    assert torch.allclose(binary_cross_entropy(LOGITS, TARGET),
                          torch.nn.functional.binary_cross_entropy_with_logits(LOGITS, TARGET))


def test_asymmetric_focal_loss_hand_values():
    # gamma=2, zeta=1: (1 - 0.5)^2 * ln 2 = 0.25 ln 2 for the active term; 0.75^1 * 2 ln 2 = 1.5 ln 2 inactive
    close(asymmetric_focal_loss(LOGITS, TARGET, gamma=2.0, zeta=1.0), (0.25 * LN2 + 1.5 * LN2) / 2)
    # gamma=1, zeta=2: 0.5 ln 2 and 0.5625 * 2 ln 2
    close(asymmetric_focal_loss(LOGITS, TARGET, gamma=1.0, zeta=2.0), (0.5 * LN2 + 1.125 * LN2) / 2)
    # gamma = zeta = 0 is BCE
    close(asymmetric_focal_loss(LOGITS, TARGET, gamma=0.0, zeta=0.0), 1.5 * LN2)
    # inverse-frequency class weights (1, 2) on top
    close(asymmetric_focal_loss(LOGITS, TARGET, 2.0, 1.0, class_weights=torch.tensor([1.0, 2.0])),
          (0.25 * LN2 + 3.0 * LN2) / 2)


def test_frame_losses_respect_the_mask():
    # (B=1, T=2, C=2): frame 0 is the shared example, frame 1 is masked out whatever it holds
    logits = torch.stack([LOGITS[0], torch.tensor([5.0, -7.0])])[None]
    target = torch.stack([TARGET[0], torch.tensor([0.0, 1.0])])[None]
    mask = torch.tensor([[1.0, 0.0]])
    close(binary_cross_entropy(logits, target, mask=mask), 1.5 * LN2)
    close(asymmetric_focal_loss(logits, target, 2.0, 1.0, mask=mask), 0.875 * LN2)


def test_soft_f1_macro_micro_and_masked():
    probs = torch.tensor([[0.8, 0.1], [0.4, 0.6]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # class 0: TP .8 FP .4 FN .2 -> 1.6/2.2; class 1: TP .6 FP .1 FN .4 -> 1.2/1.7
    close(soft_f1_loss(probs, target), 1 - (1.6 / 2.2 + 1.2 / 1.7) / 2, 1e-6)
    # micro: TP 1.4 FP .5 FN .6 -> 2.8 / 3.9
    close(soft_f1_loss(probs, target, average="micro"), 1 - 2.8 / 3.9, 1e-6)
    # frames (B=1, T=3, C=1): y (.9, .2, .7), z (1, 0, 0); the third frame masked -> TP .9 FP .2 FN .1
    y = torch.tensor([[[0.9], [0.2], [0.7]]])
    z = torch.tensor([[[1.0], [0.0], [0.0]]])
    close(soft_f1_loss(y, z, mask=torch.tensor([[1.0, 1.0, 0.0]])), 1 - 1.8 / 2.1, 1e-6)
    close(soft_f1_loss(y, z), 1 - 1.8 / 2.8, 1e-6)  # unmasked: FP .2 + .7, FN .1
    with pytest.raises(EvarError, match="macro"):
        soft_f1_loss(y, z, average="weighted")


def test_inverse_frequency_weights():
    # 4 labels, 3 classes, counts (3, 1, 0): N / (C n_c) = 4/9, 4/3, and 0 for the absent class
    w = inverse_frequency_weights(np.array([0, 0, 0, 1]), 3)
    assert np.allclose(w.numpy(), [4 / 9, 4 / 3, 0.0])
    w = inverse_frequency_weights(np.array([[1, 0], [1, 1]], dtype=np.float32), 2)  # multi-hot counts (2, 1)
    assert np.allclose(w.numpy(), [0.5, 1.0])


def test_make_loss_dispatch():
    close(make_loss("ce", multilabel=False)(LOGITS, TARGET), evar_cross_entropy(LOGITS, TARGET))
    close(make_loss("ce", multilabel=True)(LOGITS, TARGET), 1.5 * LN2)  # EVAR: BCE for multi-label tasks
    close(make_loss("wce", False, torch.tensor([2.0, 1.0]))(LOGITS, TARGET),
          evar_cross_entropy(LOGITS, TARGET, torch.tensor([2.0, 1.0])))
    close(make_loss("afl", True, gamma=2.0, zeta=1.0)(LOGITS, TARGET), 0.875 * LN2)
    # soft F1 on softmax for single-label: softmax(0, ln 3) = (1/4, 3/4) against (1, 0):
    # class 0 TP .25 FN .75 -> .5/1.25; class 1 FP .75 -> 0
    close(make_loss("soft_f1", False)(LOGITS, TARGET), 1 - (0.5 / 1.25) / 2, 1e-6)
    close(make_loss("soft_f1", True)(LOGITS, TARGET), 1 - (1.0 / 1.5) / 2, 1e-6)  # sigmoid (.5, .75)
    with pytest.raises(EvarError, match="class weights"):
        make_loss("wce", False)
    with pytest.raises(EvarError, match="unknown loss"):
        make_loss("focal", False)
