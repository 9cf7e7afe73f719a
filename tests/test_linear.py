"""Linear probe: EVAR's classifier behaviour, scikit-learn style API, multi-label mAP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evar.metrics.classification import mean_average_precision
from evar.protocols.linear import AutogradStep, LinearProbe, SoftmaxLinearStep, cpu_threads
from evar.protocols.splits import EVAR_HOLDOUT, HoldoutRule, holdout, holdout_rows


def _blobs(n: int, d: int, classes: int, seed: int, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, d))
    y = rng.integers(0, classes, n)
    return (centres[y] + spread * rng.normal(size=(n, d)) + 100.0).astype(np.float32), y


def test_fit_predict_score_on_separable_data() -> None:
    X, y = _blobs(400, 16, 4, seed=0)
    probe = LinearProbe(lr=1e-2, max_epochs=60, seed=1).fit(X[:300], y[:300])
    assert probe.score(X[300:], y[300:]) > 0.95
    assert probe.predict(X[300:]).shape == (100,)
    assert abs(probe._standardise(X[:300]).mean().item()) < 0.1  # standardised with training statistics


def test_holdout_contains_every_class_and_is_seeded() -> None:
    y = np.array([0] * 50 + [1] * 50 + [2] * 3)
    train, valid = holdout(len(y), np.random.default_rng(3), HoldoutRule(0.1), y)
    assert set(y[valid]) == {0, 1, 2} and len(valid) == 10 and len(set(train) | set(valid)) == len(y)
    again = holdout(len(y), np.random.default_rng(3), HoldoutRule(0.1), y)
    np.testing.assert_array_equal(valid, again[1])
    # rows of a round: sorted train and validation rows; EVAR's rule holds out ceil(10%) and covers multi-hot labels
    rows = np.arange(100, 203)
    train_rows, valid_rows = holdout_rows(rows, np.random.default_rng(3), HoldoutRule(0.1), np.r_[np.zeros(100), y])
    assert (np.diff(valid_rows) > 0).all() and set(valid_rows) | set(train_rows) == set(rows)
    multi = np.eye(3)[y]
    _, evar_valid = holdout(len(y), np.random.RandomState(0), EVAR_HOLDOUT, multi)
    assert len(evar_valid) == 11 and (multi[evar_valid].sum(axis=0) > 0).all()


def test_same_seed_same_result_and_early_stopping() -> None:
    X, y = _blobs(300, 8, 3, seed=2, spread=4.0)
    a = LinearProbe(seed=5, patience=3).fit(X, y)
    b = LinearProbe(seed=5, patience=3).fit(X, y)
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))
    assert len(a.history_) < 200  # stopped early
    best_epoch = max(i for i, h in enumerate(a.history_) if h["valid"] == a.best_valid_)
    assert len(a.history_) == best_epoch + 1 + 3  # an equal later score replaces the best; patience 3


def test_evar_loss_is_mean_over_classes() -> None:
    import torch

    probe = LinearProbe()
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    expected = -np.log(np.exp(2) / (np.exp(2) + 1 + np.exp(-1))) / 3
    assert probe._loss(logits, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)


def test_mean_average_precision_by_hand() -> None:
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    s = np.array([[0.9, 0.2], [0.8, 0.7], [0.3, 0.9], [0.1, 0.1]])
    # class 0: ranks 1 (hit), 2, 3 (hit) -> (1 + 2/3) / 2; class 1: ranks 1 (hit), 2 (hit) -> 1
    assert mean_average_precision(y, s) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)


def test_multilabel_probe() -> None:
    rng = np.random.default_rng(0)
    Y = (rng.random((300, 3)) < 0.4).astype(np.float32)
    X = (Y @ rng.normal(size=(3, 10)) + 0.1 * rng.normal(size=(300, 10))).astype(np.float32)
    probe = LinearProbe(multilabel=True, lr=1e-2, max_epochs=50).fit(X[:200], Y[:200])
    assert probe.score(X[200:], Y[200:]) > 0.9


@pytest.mark.parametrize("threads", [1, 2])
def test_written_out_linear_step_is_autograd_and_adam_bit_for_bit(threads: int) -> None:
    """The linear probe's single-label step (gradient written out, functional Adam) gives the same bits as
    autograd with torch.optim.Adam: weights, bias and losses after 40 minibatches, the last one short."""
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(530, 64, generator=generator) * 3 + 1
    y = torch.randint(0, 7, (530,), generator=generator)
    heads = [torch.nn.Linear(64, 7), torch.nn.Linear(64, 7)]
    heads[1].load_state_dict(heads[0].state_dict())
    initial = heads[0].weight.detach().clone()
    probe = LinearProbe()
    steps = [AutogradStep(heads[0], probe._loss, 3e-4, 1e-8), SoftmaxLinearStep(heads[1], 3e-4, 1e-8)]
    with cpu_threads(threads, "cpu"):
        for epoch in range(4):
            order = torch.randperm(530, generator=generator)
            for start in range(0, 530, 50):
                idx = order[start:start + 50]
                losses = [step(X[idx], y[idx]) for step in steps]
                assert torch.equal(losses[0], losses[1])
    assert torch.equal(heads[0].weight, heads[1].weight) and torch.equal(heads[0].bias, heads[1].bias)
    assert not torch.equal(heads[0].weight, initial)  # it trained
