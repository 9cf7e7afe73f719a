"""EVAR's linear evaluation: a standardised linear classifier with early stopping, per fold and seed."""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import replace
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.optim.adam import adam

from evar.errors import EvarError
from evar.metrics.classification import mean_average_precision
from evar.protocols.evar_stream import init_linear, loader_iteration, task_pass1_orders
from evar.protocols.splits import EVAR_HOLDOUT, HoldoutRule, holdout
from evar.options import LINEAR_MODES, LinearSettings, MlpSettings
from evar.protocols.base import EmbeddingRounds, score_rounds


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (EVAR seeds all three before training)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


#: learning rates of the MLP grid (with one or two hidden layers)
MLP_GRID_LRS = (1e-3, 3e-4, 1e-4)

#: rows x dimension x classes below which a fit keeps one thread: all cores gain little there, and beside a busy
#: process even one timed epoch on all cores costs more than the fit (benchmarks/probe_threads.py)
SMALL_PROBE = 10_000_000


class ThreadChooser:
    """Threads for the epochs of one linear fit: small problems keep one thread; larger ones, as measured
    fastest: a warm-up epoch on one thread (the first calls of a fit cost more), then one epoch on all cores and
    one on one thread, and the faster is kept (on a quiet machine all cores win, beside a busy process one does;
    benchmarks/probe_threads.py). The thread count does not change the arithmetic of these small matrix
    products."""

    def __init__(self, rows: int, dim: int, classes: int) -> None:
        self.cores = torch.get_num_threads()
        self.small = rows * dim * classes < SMALL_PROBE or self.cores == 1
        self.seconds: dict[int, float] = {}

    def threads(self, epoch: int) -> int:
        if self.small:
            return 1
        if epoch < 3:
            return self.cores if epoch == 1 else 1
        return min(self.seconds, key=self.seconds.get)

    def record(self, epoch: int, seconds: float) -> None:
        if 1 <= epoch < 3:
            self.seconds[self.threads(epoch)] = seconds


@contextlib.contextmanager
def cpu_threads(n: int, device: str) -> Iterator[None]:
    """Run torch's CPU ops with ``n`` threads (restored after)."""
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ProbeStream:
    """The random generators one EVAR linear run draws from, in order, for all its rounds (one per seed):
    torch's (weights, batch order) and NumPy's legacy one (holdouts), as ``seed_everything(seed)`` leaves them."""

    def __init__(self, seed: int) -> None:
        self.torch = torch.Generator().manual_seed(seed)
        self.numpy = np.random.RandomState(seed)


class StreamDropout(nn.Module):
    """Dropout whose masks come from ``generator`` (None: torch's global one), drawn as ``nn.Dropout`` draws them."""

    def __init__(self, p: float, generator: torch.Generator | None) -> None:
        super().__init__()
        self.p, self.generator = p, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        on = self.generator.device if self.generator is not None else x.device  # a CPU stream draws on the CPU
        keep = torch.empty(x.shape, dtype=x.dtype, device=on).bernoulli_(1 - self.p, generator=self.generator)
        return x * keep.to(x.device) / (1 - self.p)


class LayerWeights(nn.Module):
    """SUPERB's featuriser on pooled layers: ``(N, L·D)`` (L standardised layers side by side) → the
    softmax(``weights``)-weighted sum ``(N, D)``; the weights start equal (zeros)."""

    def __init__(self, n_layers: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = x.view(x.shape[0], len(self.weights), -1)
        return torch.einsum("l,nld->nd", torch.softmax(self.weights, dim=0), layers)


def classifier_head(dim: int, n_classes: int, hidden: tuple[int, ...], dropout: float,
                    generator: torch.Generator | None) -> nn.Module:
    """EVAR's classifier (TorchMLPClassifier2's MLP): Linear → ReLU → Dropout per hidden layer, then Linear; with
    ``generator``, each Linear initialised from it in order and the dropout masks drawn from it."""
    sizes = [dim, *hidden, n_classes]
    layers: list[nn.Module] = []
    for index, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(size_in, size_out)
        if generator is not None:
            init_linear(linear, generator)
        layers.append(linear)
        if index < len(hidden):
            layers += [nn.ReLU(), StreamDropout(dropout, generator)]
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


#: EVAR's Adam (TorchMLPClassifier2): betas and eps
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


class AutogradStep:
    """One Adam step of any head on a minibatch, through autograd and ``torch.optim.Adam``; returns the loss."""

    def __init__(self, model: nn.Module, loss, lr: float, weight_decay: float) -> None:
        self.model, self.loss = model, loss
        self.optimiser = torch.optim.Adam(model.parameters(), lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS,
                                          weight_decay=weight_decay)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.loss(self.model(x), y)
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        return loss.detach()


class SoftmaxLinearStep:
    """The same step for a linear head under the single-label loss (``-(onehot * log_softmax).mean()``), with
    the gradient written out and torch's functional Adam: autograd's and ``torch.optim.Adam``'s arithmetic, bit
    for bit (tests/test_linear.py), without building a graph or the optimiser's wrapper; about 1.3-1.5x faster
    on the probe's minibatches of 200 rows."""

    def __init__(self, linear: nn.Linear, lr: float, weight_decay: float) -> None:
        self.params = [linear.weight.detach(), linear.bias.detach()]  # updated in place: the model sees them
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.tensor(0.0) for _ in self.params]  # as torch.optim.Adam keeps them
        self.lr, self.weight_decay = lr, weight_decay

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weight, bias = self.params
        with torch.no_grad():
            log_p = torch.log_softmax(nn.functional.linear(x, weight, bias), dim=1)
            one_hot = nn.functional.one_hot(y, log_p.shape[1]).to(log_p.dtype)
            loss = -(one_hot * log_p).mean()
            grad = torch._log_softmax_backward_data(one_hot * -(1.0 / one_hot.numel()), log_p, 1, log_p.dtype)
            adam(self.params, [grad.t().mm(x), grad.sum(0)], self.exp_avgs, self.exp_avg_sqs, [], self.steps,
                 foreach=False, amsgrad=False, beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], lr=self.lr,
                 weight_decay=self.weight_decay, eps=ADAM_EPS, maximize=False)
        return loss


class LinearProbe:
    """scikit-learn-style linear probe with EVAR's settings (TorchMLPClassifier2; ``hidden`` sizes make it EVAR's
    MLP, whose hidden layers end in ReLU and Dropout(``dropout``); ``weighted_layers`` L > 0 reads each row as L
    layers side by side and learns their softmax-weighted sum first, as SUPERB).

    ``fit`` standardises the embeddings, trains ``nn.Linear`` with Adam (minibatches of ``min(batch_size, n)``)
    and stops when validation accuracy (mAP for multi-label) has not improved for ``patience`` epochs, restoring
    the best weights; an equal score replaces the best. Without a validation set, a random ``valid_fraction``
    of the training data is held out, re-drawn until every class appears in it.

    ``mode="evar"`` (default) is EVAR's classifier to the last draw: the weights, holdout and batch order come
    from ``stream`` (EVAR's generators, shared by the rounds of one seed; a fresh one from ``seed`` when not
    given) exactly as its DataLoaders draw them; the scaler (statistics in float64, as scikit-learn) is fitted
    on all training rows before the holdout, whose size is ``ceil(valid_fraction * n)``; the batch size counts
    the rows before the holdout; predictions are the argmax of ``sigmoid(logits)`` in float32, so logits above
    ~16.6 tie at 1.0 and the first such class wins, as in EVAR; multi-label loss is BCE on the sigmoid.
    ``mode="clean"`` seeds each fit on its own, fits the scaler on the training part after the holdout and
    predicts the argmax of the logits.
    """

    def __init__(self, lr: float = 3e-4, max_epochs: int = 200, patience: int = 20, batch_size: int = 200,
                 weight_decay: float = 1e-8, valid_fraction: float = 0.1, multilabel: bool = False,
                 seed: int = 42, device: str = "cpu", n_classes: int | None = None, mode: str = "evar",
                 hidden: tuple[int, ...] = (), dropout: float = 0.5, weighted_layers: int = 0) -> None:
        if mode not in LINEAR_MODES:
            raise EvarError(f"linear mode must be one of {LINEAR_MODES}, got {mode!r}")
        self.n_classes = n_classes
        self.lr, self.max_epochs, self.patience, self.batch_size = lr, max_epochs, patience, batch_size
        self.weight_decay, self.valid_fraction, self.multilabel = weight_decay, valid_fraction, multilabel
        self.seed, self.device, self.mode = seed, device, mode
        self.hidden, self.dropout, self.weighted_layers = tuple(hidden), dropout, weighted_layers

    def _predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """What the score ranks: EVAR ranks ``sigmoid(logits)`` (float32 ties included), the clean mode the logits."""
        return torch.sigmoid(logits) if self.mode == "evar" or self.multilabel else logits

    def _score(self, logits: torch.Tensor, y: torch.Tensor) -> float:
        scores = self._predictions(logits)
        if self.multilabel:
            return mean_average_precision(y.cpu().numpy(), scores.cpu().numpy())
        hits = scores.argmax(dim=1) == y
        return float(hits.double().mean() if self.mode == "evar" else hits.float().mean())

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            if self.mode == "evar":  # EVAR: BCE on the sigmoid (log clamped at -100), not the fused form
                return nn.functional.binary_cross_entropy(torch.sigmoid(logits), y)
            return nn.functional.binary_cross_entropy_with_logits(logits, y)
        one_hot = nn.functional.one_hot(y, logits.shape[1]).float()
        return -(one_hot * torch.log_softmax(logits, dim=1)).mean()  # EVAR: mean over classes too

    def _fit_scaler(self, X: np.ndarray) -> None:
        if self.mode == "evar":  # scikit-learn's StandardScaler: float64 statistics, near-constant columns kept as is
            X64 = X.astype(np.float64)
            self.mean_ = X64.mean(axis=0)
            var = X64.var(axis=0)
            eps = np.finfo(np.float64).eps
            constant = var <= len(X) * eps * var + (len(X) * self.mean_ * eps) ** 2
            self.scale_ = np.where(constant, 1.0, np.sqrt(var))
        else:
            self.mean_ = X.mean(axis=0)
            self.scale_ = X.std(axis=0)
            self.scale_[self.scale_ == 0] = 1.0

    def fit(self, X: np.ndarray, y: np.ndarray, X_valid: np.ndarray | None = None,
            y_valid: np.ndarray | None = None, stream: ProbeStream | None = None) -> "LinearProbe":
        """Train on (X, y); y holds class indices, or a multi-hot matrix when ``multilabel``. ``stream`` (mode
        ``evar``): the generators of this seed's run, shared with its earlier rounds."""
        with cpu_threads(torch.get_num_threads(), self.device):  # restored after the fit
            return self._fit(X, y, X_valid, y_valid, stream)

    def _fit(self, X: np.ndarray, y: np.ndarray, X_valid: np.ndarray | None, y_valid: np.ndarray | None,
             stream: ProbeStream | None) -> "LinearProbe":
        X, y = np.asarray(X, dtype=np.float32), np.asarray(y)
        n_before_holdout = len(X)
        if self.mode == "evar":
            stream = stream or ProbeStream(self.seed)
            self._fit_scaler(X)
            if X_valid is None:
                train, valid = holdout(len(y), stream.numpy, replace(EVAR_HOLDOUT, fraction=self.valid_fraction), y)
                X, X_valid, y, y_valid = X[train], X[valid], y[train], y[valid]
        else:
            stream = None  # each fit seeded on its own
            seed_everything(self.seed)
            if X_valid is None:
                train, valid = holdout(len(y), np.random.default_rng(self.seed), HoldoutRule(self.valid_fraction), y)
                X, X_valid, y, y_valid = X[train], X[valid], y[train], y[valid]
            self._fit_scaler(X)
        self.n_classes_ = y.shape[1] if self.multilabel else self.n_classes or int(max(y.max(), np.max(y_valid))) + 1
        dev = torch.device(self.device)
        Xt, Xv = self._standardise(X).to(dev), self._standardise(X_valid).to(dev)
        label_dtype = torch.float32 if self.multilabel else torch.long
        yt, yv = torch.as_tensor(y, dtype=label_dtype, device=dev), torch.as_tensor(y_valid, dtype=label_dtype, device=dev)
        width = X.shape[1] // self.weighted_layers if self.weighted_layers else X.shape[1]
        self.model_ = classifier_head(width, self.n_classes_, self.hidden, self.dropout,
                                      stream.torch if stream is not None else None)
        if self.weighted_layers:  # no random draw: EVAR's stream is untouched
            self.model_ = nn.Sequential(LayerWeights(self.weighted_layers), self.model_)
        self.model_ = self.model_.to(dev)
        if isinstance(self.model_, nn.Linear) and not self.multilabel:
            step = SoftmaxLinearStep(self.model_, self.lr, self.weight_decay)
        else:
            step = AutogradStep(self.model_, self._loss, self.lr, self.weight_decay)
        self.batch_ = min(self.batch_size, n_before_holdout if stream is not None else len(Xt))
        best, best_state, since_best = -np.inf, None, 0
        self.history_: list[dict[str, float]] = []
        chooser = ThreadChooser(len(Xt), Xt.shape[1], self.n_classes_)
        for epoch in range(self.max_epochs):
            if dev.type == "cpu":
                torch.set_num_threads(chooser.threads(epoch))
            started = time.perf_counter()
            self.model_.train()
            if stream is not None:
                order = torch.from_numpy(loader_iteration(stream.torch, len(Xt))).to(dev)  # the shuffled loader
            else:
                order = torch.randperm(len(Xt), device=dev)
            total = 0.0
            for start in range(0, len(Xt), self.batch_):
                idx = order[start:start + self.batch_]
                total += float(step(Xt[idx], yt[idx])) * len(idx)
            if stream is not None:
                loader_iteration(stream.torch)  # the validation loader's iteration
            valid_score = self._score(self._logits(Xv, self.batch_ if stream is not None else len(Xv)), yv)
            chooser.record(epoch, time.perf_counter() - started)
            self.history_.append({"epoch": epoch, "loss": total / len(Xt), "valid": valid_score})
            if valid_score >= best:
                best, since_best = valid_score, 0
                best_state = {k: v.detach().clone() for k, v in self.model_.state_dict().items()}
            else:
                since_best += 1
                if since_best >= self.patience:
                    break
        self.model_.load_state_dict(best_state)
        self.stream_ = stream
        self.best_valid_ = best
        self.best_epoch_ = max(range(len(self.history_)), key=lambda e: (self.history_[e]["valid"], e))
        return self

    def _logits(self, X: torch.Tensor, batch: int) -> torch.Tensor:
        """Logits of standardised ``X`` in batches of ``batch`` rows (as EVAR's evaluation loaders)."""
        self.model_.eval()
        with torch.no_grad():
            return torch.cat([self.model_(X[i:i + batch]) for i in range(0, len(X), batch)]) if len(X) else \
                torch.zeros(0, self.n_classes_)

    def _standardise(self, X: np.ndarray) -> torch.Tensor:
        X = np.asarray(X, dtype=np.float32)
        if self.mode == "evar":  # scikit-learn's in-place float32 updates with float64 statistics
            X = X.copy()
            X -= self.mean_
            X /= self.scale_
            return torch.from_numpy(X)
        return torch.from_numpy(((X - self.mean_) / self.scale_).astype(np.float32))

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits ``(N, n_classes)`` (in mode ``evar``, like EVAR's evaluation loader, one draw from the stream)."""
        if self.stream_ is not None:
            loader_iteration(self.stream_.torch)
        X = self._standardise(X).to(self.device)
        with cpu_threads(1, self.device):
            return self._logits(X, 256 if self.mode == "evar" else max(1, len(X))).cpu().numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        logits = self.decision_function(X)
        if self.multilabel:
            return (logits > 0).astype(np.float32)
        return self._predictions(torch.from_numpy(logits)).argmax(dim=1).numpy()

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy, or mAP for multi-label."""
        logits = torch.from_numpy(self.decision_function(X))
        label_dtype = torch.float32 if self.multilabel else torch.long
        return self._score(logits, torch.as_tensor(np.asarray(y), dtype=label_dtype))


def evar_row_orders(task, init_words: int | None, needs_stats: bool, seed: int = 42) -> list[np.ndarray] | None:
    """Per round, the order of its training rows in EVAR's embedding matrix (pass 1 of EVAR's two-pass runner,
    see :mod:`evar.protocols.evar_stream`), for encoders whose EVAR construction draws are known (``init_words``,
    the encoder's ``evar_init_words``); None otherwise (the rows then stay in metadata order)."""
    if init_words is None:
        return None
    return task_pass1_orders(task, init_words, seed, stats=needs_stats).train_orders


class LinearRounds(EmbeddingRounds):
    """The linear (or MLP) probe's rounds on embeddings ``X`` aligned with ``task.meta``.

    In ``evar`` mode each seed is one EVAR run: its generators pass from round to round (``chained``), and each
    round's training rows are taken in ``row_orders`` (EVAR's row order, :func:`evar_row_orders`) when given.
    An :class:`~evar.options.MlpSettings` grid fits each candidate and keeps the best on validation.
    """

    def __init__(self, X: np.ndarray, task, settings: LinearSettings, device: str = "cpu",
                 row_orders: list[np.ndarray] | None = None, weighted_layers: int = 0) -> None:
        super().__init__(X, task)
        self.settings, self.device, self.row_orders = settings, device, row_orders
        self.weighted_layers = weighted_layers
        self.layer_weights: dict[tuple[int, int], list[float]] = {}  # weighted layers: the softmax learnt
        self.chained = settings.mode == "evar"
        self.verb = "mlp" if isinstance(settings, MlpSettings) else "probe"
        self.streams: dict[int, ProbeStream] = {}
        self.chosen: dict[tuple[int, int], dict] = {}  # grid: (round, seed) → the candidate kept

    def candidates(self) -> list[dict]:
        """The probe's keyword arguments: one set, or each point of the MLP grid."""
        kwargs = self.settings.probe_kwargs()
        if not getattr(self.settings, "grid", False):
            return [kwargs]
        width = self.settings.hidden[0]
        return [{**kwargs, "hidden": hidden, "lr": lr} for hidden in ((width,), (width, width))
                for lr in MLP_GRID_LRS]

    def fit_score(self, round_index: int, seed: int) -> float:
        if self.chained and (round_index == 0 or seed not in self.streams):
            self.streams[seed] = ProbeStream(seed)
        order = self.row_orders[round_index] if self.row_orders is not None else None
        train, valid, test = self.rows(round_index, order)
        X, y = self.X, self.y
        best = None
        for kwargs in self.candidates():
            probe = LinearProbe(multilabel=self.task.spec.multilabel, seed=seed, n_classes=len(self.task.classes),
                                device=self.device, weighted_layers=self.weighted_layers, **kwargs)
            probe.fit(X[train], y[train], X[valid] if valid is not None else None,
                      y[valid] if valid is not None else None, stream=self.streams.get(seed))
            if best is None or probe.best_valid_ > best[0].best_valid_:
                best = (probe, kwargs)
        if len(self.candidates()) > 1:
            self.chosen[(round_index, seed)] = {"hidden": list(best[1]["hidden"]), "lr": best[1]["lr"]}
        probe = best[0]
        if self.weighted_layers:
            weights = torch.softmax(probe.model_[0].weights.detach().cpu(), dim=0)
            self.layer_weights[(round_index, seed)] = [round(float(w), 6) for w in weights]
        logits = torch.from_numpy(probe.decision_function(X[test]))  # one evaluation pass (one stream draw)
        label_dtype = torch.float32 if self.task.spec.multilabel else torch.long
        if not self.task.spec.multilabel:
            self.keep_predictions(round_index, seed, test, probe._predictions(logits).argmax(dim=1).numpy())
        return probe._score(logits, torch.as_tensor(np.asarray(y[test]), dtype=label_dtype))


def evaluate_embeddings(X: np.ndarray, task, settings: LinearSettings = LinearSettings(), device: str = "cpu",
                        progress: bool = True, row_orders: list[np.ndarray] | None = None,
                        only_round: int | None = None) -> tuple[list[str], list[list[float]]]:
    """The linear protocol's rounds (all, or ``only_round``) on embeddings ``X``: round names and
    ``scores[round][seed]`` (:class:`LinearRounds` through :func:`evar.protocols.base.score_rounds`)."""
    rounds = LinearRounds(X, task, settings, device, row_orders)
    return score_rounds(rounds, settings.seeds, progress, only_round)
