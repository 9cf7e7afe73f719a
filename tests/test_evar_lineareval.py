"""On the same embeddings, evar's linear probe (mode "evar") is EVAR's classifier, epoch for epoch.

The reference is what EVAR's own TorchMLPClassifier2 computed in its two-pass runner's second pass (one seed,
then the rounds in order on the same generators), made by tests/fixtures/make_evar_lineareval_reference.py
from daisukelab/general-learning 158e570 (the file EVAR 88ba772 downloads), torch 2.13 CPU, scikit-learn 1.x:
a split task (given validation set) and two folds (10% holdout by train_test_sure_split), seeds 42 and 43.
Observed: every validation accuracy, best epoch and test accuracy equal; best weights equal within 1e-6 — for the
linear classifier and for EVAR's MLP (``--hidden``, one hidden layer of 16).
"""

from __future__ import annotations

import numpy as np
import pytest

from evar.protocols.linear import LinearProbe, ProbeStream
from fixture_support import FIXTURES

SEEDS = (42, 43)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "evar_lineareval_reference.npz"))


def _check(probe: LinearProbe, reference: dict, key: str, X_test: np.ndarray, y_test: np.ndarray) -> None:
    curve = [h["valid"] for h in probe.history_]
    np.testing.assert_allclose(curve, reference[f"{key}_valid_curve"], rtol=0, atol=1e-6)  # logged with 7 decimals
    assert probe.best_epoch_ == int(reference[f"{key}_best_epoch"])
    first = probe.model_[0] if probe.hidden else probe.model_  # the reference keeps the first Linear's weights
    np.testing.assert_allclose(first.weight.detach().numpy(), reference[f"{key}_weight"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first.bias.detach().numpy(), reference[f"{key}_bias"], rtol=1e-5, atol=1e-6)
    assert probe.score(X_test, y_test) == pytest.approx(float(reference[f"{key}_test_accuracy"]), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_split_task_matches_evar(reference: dict, seed: int) -> None:
    r = reference
    probe = LinearProbe(seed=seed, n_classes=4).fit(r["X_train"], r["y_train"], r["X_valid"], r["y_valid"],
                                                   stream=ProbeStream(seed))
    _check(probe, r, f"split_s{seed}", r["X_test"], r["y_test"])


@pytest.mark.parametrize("seed", SEEDS)
def test_folds_share_one_stream_as_in_evar(reference: dict, seed: int) -> None:
    r = reference
    stream = ProbeStream(seed)
    for k, (train, test) in enumerate((("fold2", "fold1"), ("fold1", "fold2")), start=1):
        probe = LinearProbe(seed=seed, n_classes=4).fit(r[f"X_{train}"], r[f"y_{train}"], stream=stream)
        _check(probe, r, f"folds_s{seed}_round{k}", r[f"X_{test}"], r[f"y_{test}"])


@pytest.mark.parametrize("seed", SEEDS)
def test_mlp_is_evars_hidden_layer_classifier(reference: dict, seed: int) -> None:
    """lineareval.py --hidden (16,): Linear, ReLU, Dropout(0.5), Linear; initialisation and dropout masks drawn from
    the seed's stream in EVAR's order, so every epoch is EVAR's."""
    r = reference
    probe = LinearProbe(seed=seed, n_classes=4, hidden=(16,)).fit(r["X_train"], r["y_train"], r["X_valid"],
                                                                 r["y_valid"], stream=ProbeStream(seed))
    _check(probe, r, f"mlp_split_s{seed}", r["X_test"], r["y_test"])
    stream = ProbeStream(seed)
    for k, (train, test) in enumerate((("fold2", "fold1"), ("fold1", "fold2")), start=1):
        probe = LinearProbe(seed=seed, n_classes=4, hidden=(16,)).fit(r[f"X_{train}"], r[f"y_{train}"], stream=stream)
        _check(probe, r, f"mlp_folds_s{seed}_round{k}", r[f"X_{test}"], r[f"y_{test}"])


def test_clean_mode_differs_from_evar(reference: dict) -> None:
    """The clean variant is another protocol (own seeding, scaler after the holdout): it must not pass as EVAR's."""
    r = reference
    probe = LinearProbe(seed=42, n_classes=4, mode="clean").fit(r["X_fold2"], r["y_fold2"])
    curve = [h["valid"] for h in probe.history_]
    reference_curve = r["folds_s42_round1_valid_curve"]
    assert len(curve) != len(reference_curve) or not np.allclose(curve, reference_curve, atol=1e-6)
