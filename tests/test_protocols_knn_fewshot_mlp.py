"""kNN, few-shot and MLP probes: checked against scikit-learn and hand computations on the same inputs, and run
end to end through `evar probe --protocol`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from evar.cli import main
from evar.options import FewShotSettings, KnnSettings, MlpSettings
from evar.protocols.base import score_rounds
from evar.protocols.fewshot import FewShotRounds, draw_shots, fit_logistic, row_coordinates
from evar.protocols.knn import KnnRounds, knn_votes
from evar.protocols.linear import LinearProbe, LinearRounds, ProbeStream, classifier_head
from evar.synth.trees import make_esc50_tree
from evar.tasks.base import Task, TaskSpec

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


def blob_task(n: int = 240, dim: int = 12, classes: int = 4, folds: int = 3, seed: int = 0, spread: float = 2.5,
              multilabel: bool = False) -> tuple[Task, np.ndarray]:
    """A CV task of ``folds`` folds over Gaussian blobs, and its embeddings (rows aligned with the metadata)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (classes, dim))
    y = np.arange(n) % classes
    X = (centres[y] + spread * rng.normal(size=(n, dim)) * rng.uniform(0.5, 3, dim) + 5).astype(np.float32)
    labels = [f"c{c}" for c in y]
    if multilabel:
        labels = [f"c{c},c{(c + 1) % classes}" if i % 3 == 0 else f"c{c}" for i, c in enumerate(y)]
    meta = pd.DataFrame({"file": [f"{i}.wav" for i in range(n)], "label": labels, "fold": rng.permutation(n) % folds + 1})
    spec = TaskSpec("blobs", unit_sec=1.0, n_classes=classes, folds=folds, multilabel=multilabel)
    return Task(spec, Path("."), meta), X


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_matches_scikit_learn(metric: str) -> None:
    task, X = blob_task()
    settings = KnnSettings(k=7, metric=metric, temperature=0.07)
    rounds = KnnRounds(X, task, settings)
    y = task.labels()
    for index, split in enumerate(task.splits()):
        scaler = StandardScaler().fit(X[split.train])
        if metric == "cosine":  # X-ARES/DINO's vote: exp(cosine similarity / T), cosine distance = 1 - similarity
            knn = KNeighborsClassifier(7, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1 - d) / 0.07))
        else:
            knn = KNeighborsClassifier(7, algorithm="brute")
        knn.fit(scaler.transform(X[split.train]), y[split.train])
        expected = knn.score(scaler.transform(X[split.test]), y[split.test])
        assert rounds.fit_score(index, 42) == pytest.approx(expected, abs=1e-12)
        if metric == "cosine":  # the votes themselves, normalised, are scikit-learn's class probabilities
            targets = np.eye(4, dtype=np.float32)[y[split.train]]
            votes = knn_votes(scaler.transform(X[split.train]), targets, scaler.transform(X[split.test]), settings)
            np.testing.assert_allclose(votes / votes.sum(1, keepdims=True),
                                       knn.predict_proba(scaler.transform(X[split.test])), atol=2e-5)


def test_knn_votes_by_hand_and_multilabel_map() -> None:
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], np.float32)
    targets = np.array([[1, 0], [1, 1], [0, 1]], np.float32)
    votes = knn_votes(train, targets, np.array([[1.0, 0.05]], np.float32), KnnSettings(k=2, temperature=0.5))
    q = np.array([1.0, 0.05]) / np.linalg.norm([1.0, 0.05])
    s = [q @ (t / np.linalg.norm(t)) for t in train[:2]]  # the two nearest: rows 0 and 1
    np.testing.assert_allclose(votes[0], [np.exp(s[0] / 0.5) + np.exp(s[1] / 0.5), np.exp(s[1] / 0.5)], rtol=1e-5)
    task, X = blob_task(multilabel=True)
    names, scores = score_rounds(KnnRounds(X, task, KnnSettings()), (42,), progress=False)
    assert names == ["fold1", "fold2", "fold3"] and all(0.3 < s[0] <= 1 for s in scores)


def test_fewshot_draws_are_balanced_and_seeded() -> None:
    labels = np.array([0] * 20 + [1] * 5 + [2] * 30)
    rows = draw_shots(labels, 8, np.random.default_rng(0))
    assert np.bincount(labels[rows]).tolist() == [8, 5, 8] and len(set(rows)) == len(rows)
    np.testing.assert_array_equal(rows, draw_shots(labels, 8, np.random.default_rng(0)))
    task, X = blob_task()
    rounds = FewShotRounds(X, task, FewShotSettings(shots=3, draws=4))
    train = next(task.splits()).train
    a, b = rounds.draws(train, 0, 42), rounds.draws(train, 0, 43)
    assert len(a) == 4 and all(np.bincount(task.labels()[d]).tolist() == [3, 3, 3, 3] for d in a)
    assert not all(np.array_equal(x, y) for x, y in zip(a, b))  # another seed, other draws


@pytest.mark.parametrize("dim, repeated", [(6, False), (40, False), (40, True)])
def test_batched_logistic_regression_is_scikit_learns(dim: int, repeated: bool) -> None:
    """40 > rows: solved in the span of the rows (from their Gram matrix; by QR where a row is repeated)."""
    rng = np.random.default_rng(1)
    offset = rng.normal(0, 4, dim)  # rows far off the origin, as embeddings are (the solver centres them)
    problems = [(rng.normal(size=(n, dim)) + np.repeat(rng.normal(0, 2, (3, dim)), n // 3, axis=0) + offset,
                 np.repeat(np.arange(3), n // 3)) for n in (24, 18)]
    if repeated:
        problems[1][0][1] = problems[1][0][0]
    X = torch.zeros(2, 24, dim, dtype=torch.float64)
    y = torch.zeros(2, 24, dtype=torch.long)
    mask = torch.zeros(2, 24)
    for d, (Xd, yd) in enumerate(problems):
        X[d, :len(Xd)], y[d, :len(yd)], mask[d, :len(yd)] = torch.from_numpy(Xd), torch.from_numpy(yd), 1
    weights = fit_logistic(X, y, 3, c=0.5, mask=mask, tol=1e-10).numpy()
    for d, (Xd, yd) in enumerate(problems):
        ref = LogisticRegression(C=0.5, tol=1e-12, max_iter=100_000).fit(Xd, yd)
        # the softmax is invariant to a shift shared by the classes: compare centred weights (float32 solve)
        ours_w, ours_b = weights[d, :dim], weights[d, dim]
        np.testing.assert_allclose(ours_w - ours_w.mean(1, keepdims=True), ref.coef_.T - ref.coef_.T.mean(1, keepdims=True),
                                   atol=1e-4)
        # the objective is nearly flat along the intercepts; where scikit-learn stops there, the optimum is the same
        assert penalised_cross_entropy(ours_w, ours_b, Xd, yd, 0.5) == pytest.approx(
            penalised_cross_entropy(ref.coef_.T, ref.intercept_, Xd, yd, 0.5), rel=1e-9)
        np.testing.assert_allclose(ours_b - ours_b.mean(), ref.intercept_ - ref.intercept_.mean(), atol=5e-4)


def test_logistic_regression_stops_by_scikit_learns_rule() -> None:
    """At the default tol (1e-5, ten times scikit-learn's), the largest gradient of scikit-learn's mean objective
    is at most 1e-5, and the predictions are those of scikit-learn run to 1e-12."""
    rng = np.random.default_rng(2)
    n, dim, k = 60, 100, 6
    y = np.arange(n) % k
    X = rng.normal(size=(n, dim)) + 0.4 * rng.normal(size=(k, dim))[y] + rng.normal(0, 4, dim)
    solved = fit_logistic(torch.from_numpy(X)[None], torch.from_numpy(y)[None], k, c=1.0)[0].numpy()
    W, b = solved[:dim], solved[dim]
    logits = X @ W + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    residual = p / p.sum(1, keepdims=True) - np.eye(k)[y]
    gradient = np.vstack([X.T @ residual + W, residual.sum(0)]) / n
    assert 1e-7 < np.abs(gradient).max() <= 1e-5  # stopped by the rule, not run to the end
    X_test = rng.normal(size=(200, dim)) + 0.4 * rng.normal(size=(k, dim))[np.arange(200) % k] + X.mean(0)
    ref = LogisticRegression(C=1.0, tol=1e-12, max_iter=100_000).fit(X, y)
    np.testing.assert_array_equal((X_test @ W + b).argmax(1), ref.predict(X_test))


def test_logistic_regression_on_embedding_like_rows_is_scikit_learns_optimum() -> None:
    """Float32 rows as embeddings are (far off the origin, dim > rows) on a near-chance task, where test rows
    sit close to the class boundaries: run tight, the predictions are those of scikit-learn run to 1e-12; at
    the default tol, no further from them than scikit-learn stopped at the same tol (6 against 27 of 400; the
    solver before centring, at its own default, 26)."""
    rng = np.random.default_rng(1)
    n, dim, k = 80, 512, 10
    means, offset = rng.normal(size=(k, dim)), rng.normal(0, 10, dim)
    y, y_test = np.arange(n) % k, np.arange(400) % k
    X = (15 * rng.normal(size=(n, dim)) + means[y] + offset).astype(np.float32)
    X_test = (15 * rng.normal(size=(400, dim)) + means[y_test] + offset).astype(np.float32)

    def ours(tol: float) -> np.ndarray:
        solved = fit_logistic(torch.from_numpy(X)[None], torch.from_numpy(y)[None], k, c=1.0, tol=tol)[0]
        return (X_test @ solved[:dim].double().numpy() + solved[dim].double().numpy()).argmax(1)

    def scikit_learn(tol: float) -> np.ndarray:
        return LogisticRegression(C=1.0, tol=tol, max_iter=100_000).fit(X.astype(np.float64), y).predict(
            X_test.astype(np.float64))

    optimum = scikit_learn(1e-12)
    np.testing.assert_array_equal(ours(1e-7), optimum)
    assert np.sum(ours(FewShotSettings().tol) != optimum) <= np.sum(scikit_learn(FewShotSettings().tol) != optimum)


def penalised_cross_entropy(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, c: float) -> float:
    logits = X @ W + b
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].sum() + (W ** 2).sum() / (2 * c))


@pytest.mark.parametrize("repeated", [False, True])
def test_row_coordinates_span_the_rows(repeated: bool) -> None:
    """Z Zᵀ is the Gram matrix of the rows centred on their mean with a unit column appended, and weights in Z's
    basis map to the same logits (Cholesky, or QR for a repeat); padding rows stay out."""
    X = torch.randn(2, 10, 30, dtype=torch.float64) + 3
    mask = torch.ones(2, 10)
    mask[1, 8:], X[1, 8:] = 0, 0  # padding rows
    if repeated:
        X[0, 3] = X[0, 1]
    real = mask[:, :, None].double()
    mean = (X * real).sum(1, keepdim=True) / real.sum(1, keepdim=True)
    Z, to_weights = row_coordinates(X, mask, mean)
    augmented = torch.cat([(X - mean) * real, real], dim=2)
    torch.testing.assert_close((Z @ Z.transpose(1, 2)) * real * real.transpose(1, 2), augmented @ augmented.transpose(1, 2))
    V = torch.randn(2, 10, 4, dtype=torch.float64) * real
    W, unit = to_weights(V)
    torch.testing.assert_close(((X - mean) @ W + unit) * real, (Z @ V) * real)


def test_fewshot_scores_equal_per_draw_scikit_learn_and_centroid_by_hand() -> None:
    task, X = blob_task(dim=8)
    settings = FewShotSettings(shots=5, draws=3)
    rounds = FewShotRounds(X, task, settings)
    y = task.labels()
    split = next(task.splits())
    score = rounds.fit_score(0, 7)
    expected = [LogisticRegression(C=1.0, tol=1e-12, max_iter=100_000).fit(X[rows], y[rows]).score(X[split.test], y[split.test])
                for rows in rounds.draws(split.train, 0, 7)]
    np.testing.assert_allclose(rounds.draw_scores[(0, 7)], expected, atol=1e-12)
    assert score == pytest.approx(np.mean(expected))
    centroid = FewShotRounds(X, task, FewShotSettings(shots=5, draws=2, classifier="centroid"))
    centroid.fit_score(0, 7)
    for rows, got in zip(centroid.draws(split.train, 0, 7), centroid.draw_scores[(0, 7)]):
        unit = X[rows] / np.linalg.norm(X[rows], axis=1, keepdims=True)
        means = np.stack([unit[y[rows] == c].mean(0) for c in range(4)])
        assert got == pytest.approx(np.mean((X[split.test] @ means.T / np.linalg.norm(means, axis=1)).argmax(1)
                                            == y[split.test]))


def test_mlp_head_is_evars_and_its_dropout_draws_from_the_stream() -> None:
    head = classifier_head(10, 3, (8, 6), 0.5, None)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "ReLU", "StreamDropout", "Linear", "ReLU", "StreamDropout", "Linear"]
    x = torch.randn(5, 8)
    g = torch.Generator()
    dropout = classifier_head(8, 3, (8,), 0.5, g)[2].train()
    g.manual_seed(3)  # after the layers' initialisation drew from it
    torch.manual_seed(3)
    np.testing.assert_array_equal(dropout(x).numpy(), torch.nn.functional.dropout(x, 0.5, training=True).numpy())
    # with a stream, the layers are initialised from it in order, as EVAR's MLP built under its seed
    g = torch.Generator().manual_seed(0)
    streamed = classifier_head(10, 3, (8,), 0.5, g)
    torch.manual_seed(0)
    reference = [torch.nn.Linear(10, 8), torch.nn.Linear(8, 3)]
    for ours, theirs in zip([streamed[0], streamed[3]], reference):
        torch.testing.assert_close(ours.weight, theirs.weight, rtol=0, atol=0)
        torch.testing.assert_close(ours.bias, theirs.bias, rtol=0, atol=0)


def test_mlp_probe_learns_and_the_grid_keeps_the_best_on_validation() -> None:
    task, X = blob_task(n=300, classes=3, spread=1.0)
    stream_a, stream_b = ProbeStream(42), ProbeStream(42)
    split = next(task.splits())
    y = task.labels()
    a = LinearProbe(hidden=(16,), lr=1e-2, max_epochs=40).fit(X[split.train], y[split.train], stream=stream_a)
    b = LinearProbe(hidden=(16,), lr=1e-2, max_epochs=40).fit(X[split.train], y[split.train], stream=stream_b)
    np.testing.assert_array_equal(a.decision_function(X[split.test]), b.decision_function(X[split.test]))
    assert a.score(X[split.test], y[split.test]) > 0.8
    settings = MlpSettings(hidden=(16,), grid=True, max_epochs=15, patience=5)
    assert settings.mode == "clean"  # a grid seeds each fit on its own
    rounds = LinearRounds(X, task, settings)
    assert len(rounds.candidates()) == 6
    rounds.fit_score(0, 42)
    kept = rounds.chosen[(0, 42)]
    train, valid, _ = rounds.rows(0)
    fits = {}
    for kwargs in rounds.candidates():
        probe = LinearProbe(seed=42, n_classes=3, **kwargs).fit(X[train], y[train])
        fits[(tuple(kwargs["hidden"]), kwargs["lr"])] = probe.best_valid_
    assert fits[(tuple(kept["hidden"]), kept["lr"])] == max(fits.values())


def test_probe_protocols_from_the_command_line(tmp_path: Path, evar_dirs: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_esc50_tree(tmp_path / "ESC-50-master", n_classes=3, clips_per_class_per_fold=2, sample_rate=16000,
                           seconds=1.0)
    assert main(["prepare", "esc50", "--root", str(root)]) == 0
    base = ["probe", "--task", "esc50", "--model", "melspec"]
    assert main([*base, "--protocol", "knn", "--k", "3"]) == 0
    assert main([*base, "--protocol", "fewshot", "--shots", "2", "--draws", "3", "--seeds", "1,2"]) == 0
    assert main([*base, "--protocol", "mlp", "--hidden", "32", "--max-epochs", "5"]) == 0
    rows = pd.read_csv(evar_dirs / "results" / "scores.csv")
    assert rows["protocol"].tolist() == ["knn", "fewshot", "mlp"] and (rows["n_folds"] == 5).all()
    settings = [__import__("json").loads(s) for s in rows["settings"]]
    assert settings[0]["k"] == 3 and settings[0]["metric"] == "cosine" and settings[0]["temperature"] == 0.07
    assert settings[1]["shots"] == 2 and np.shape(settings[1]["draw_scores"]) == (5, 2, 3)
    assert settings[2]["hidden"] == [32] and settings[2]["dropout"] == 0.5
    # class-wise results: every test prediction of every fold (and seed, and few-shot draw) in the confusion matrix
    for index, predictions in enumerate((30, 30 * 2 * 3, 30)):
        confusion = np.asarray(settings[index]["confusion"])
        assert confusion.shape == (3, 3) and confusion.sum() == predictions and (confusion.sum(1) == predictions // 3).all()
        assert np.trace(confusion) / confusion.sum() == pytest.approx(rows["score"][index], abs=1e-6)
        assert list(settings[index]["class_accuracy"]) == sorted(settings[index]["class_accuracy"])
    assert main(["plot", "confusion", "--model", "melspec", "--task", "esc50", "--protocol", "knn"]) == 0
    png = evar_dirs / "results" / "plots" / "confusion-melspec-esc50-knn.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["leaderboard", "--protocol", "knn"]) == 0
    assert "| melspec |" in capsys.readouterr().out
    assert main([*base, "--protocol", "knn", "--shots", "2"]) == 2  # an option of another protocol
    assert "--shots do(es) not apply to the knn probe" in capsys.readouterr().err
