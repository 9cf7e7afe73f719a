"""Fine-tuning under EVAR's protocol: the encoder plus a BatchNorm/Linear head, trained end to end.

Defaults follow EVAR's ``finetune.py``: SGD (momentum 0.9, no weight decay), linear warm-up from 0
then cosine to 1e-7 stepped every iteration, mixup on waveforms, SpecAugment-style masks and random
resize crop on the log-mel, per-encoder settings (:data:`FT_DEFAULTS`). Each round (fold or the
task's split) trains a fresh copy of the encoder.

A run writes ``results/finetune/<task>/<model>-<run_id>/``::

    run.json                  identity (everything that changes the result), then the result
    log.csv                   round, epoch, phase, lr, train_loss, valid, test
    curves.png                loss and metric curves (when matplotlib is installed)
    <round>/best.safetensors  encoder + head at the best validation epoch
    <round>/last.pt           full training state after the last finished epoch (``--resume``)
    <round>/result.json       the round's score, once the round is finished

Feature-level augmentation needs an encoder whose front end is separable: ``features(wav)`` and
``forward_from_features(features)`` giving ``(frames, timestamps)``, normalisation included, with
``feature_axes`` naming the frequency and time axes of the features (default ``(-2, -1)``: ``(B, F, T)``).
Masked and padded areas take the normalisation mean (EVAR's 0 after normalisation); encoders without
task statistics use 0. Other encoders get waveform-level augmentation (mixup) only, with a warning.
"""

from __future__ import annotations

import json
import math
import os
import random
import uuid
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from evar.audio import crop_offset, crop_or_pad, load_audio
from evar.protocols.augment import FeatureAugment, mix_training, mixup, sample_mix_training, sample_mixup
from evar.embeddings.stats import STATS_MAX_CLIPS
from evar.encoders import get_encoder_spec
from evar.encoders.base import Encoder
from evar.errors import EvarError
from evar.io import safe_name
from evar.options import ModelChoice, RunOptions
from evar.protocols.base import Result, Rounds, score_rounds, weights_field
from evar.protocols.splits import HoldoutRule, holdout_rows
from evar.protocols.losses import LOSSES, binary_cross_entropy, inverse_frequency_weights, make_loss
from evar.paths import results_dir
from evar.metrics.classification import mean_average_precision
from evar.protocols.linear import seed_everything
from evar.results.store import append_result, check_writable
from evar.embeddings.stats import front_end_stats
from evar.tasks import Split, Task, load_task
from evar.io import atomic_write, atomic_write_text
from evar.encoders.weights import load_state_dict
from evar.log import log

OPTIMIZERS = ("sgd", "adamw")
CV_PROTOCOLS = ("holdout", "evar")


def finetune_defaults(model: str) -> dict[str, Any]:
    """EVAR's settings for ``model``: :class:`FineTuneSettings`' defaults (EVAR's CNN14 settings, used for
    encoders without their own) updated with the encoder spec's ``finetune`` entry (EVAR's config/<model>.yaml)."""
    try:
        own = get_encoder_spec(model).finetune
    except EvarError:  # a prefixed or unregistered model
        own = {}
    return {**{f.name: f.default for f in fields(FineTuneSettings)}, **own}


@dataclass
class FineTuneSettings:
    """Every setting of a fine-tuning run (all recorded with its result).

    ``loss``: ce (EVAR's; BCE on multi-label tasks), wce (ce with inverse-frequency class weights),
    bce, afl (asymmetric focal loss with ``afl_gamma``/``afl_zeta``), soft_f1. ``inverse_frequency``
    adds inverse-frequency class weights to bce/afl; ``pos_weight`` > 1 up-weights active targets.
    ``mix_training``: the first ``mix_epochs`` (fraction) of the epochs train on blends
    ``a x_i + (1 − a) x_j`` (``a ~ U(mix_ratio)``) with the union of their labels and BCE, the rest
    on unmixed clips (mixup off). ``cv_protocol`` applies to tasks without a validation split:
    ``holdout`` validates on ``valid_fraction`` of the training clips and reports the test score
    at the best validation epoch; ``evar`` validates on the test fold and reports the best test
    score over epochs (EVAR's, optimistic). ``aug_shared``: one mask/crop per batch (EVAR's quirk).
    ``early_stop`` N > 0 stops once ``epoch > best_epoch + N``. ``epoch_test``: test every epoch
    (for the log) rather than once with the best weights.
    """

    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 200
    warmup_epochs: float = 5
    mixup: float = 0.5
    freq_mask: int = 30
    time_mask: int = 100
    rrc: bool = False
    optimizer: str = "sgd"
    loss: str = "ce"
    inverse_frequency: bool = False
    pos_weight: float = 1.0
    afl_gamma: float = 0.0
    afl_zeta: float = 1.0
    mix_training: bool = False
    mix_epochs: float = 0.5
    mix_ratio: tuple[float, float] = (0.3, 0.7)
    freeze: bool = False
    early_stop: int = 0
    seed: int = 42
    cv_protocol: str = "holdout"
    valid_fraction: float = 0.1
    aug_shared: bool = False
    amp: bool = False
    epoch_test: bool = True
    lr_min: float = 1e-7

    def validate(self) -> None:
        """Raise an EvarError naming the first setting out of range."""
        checks = [
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.batch_size >= 2, f"--batch-size must be >= 2 (the head's BatchNorm needs 2), got {self.batch_size}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {self.warmup_epochs}"),
            (self.mixup >= 0, f"--mixup must be >= 0 (0 turns it off), got {self.mixup}"),
            (self.freq_mask >= 0 and self.time_mask >= 0, "--freq-mask and --time-mask must be >= 0"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (self.loss in LOSSES, f"--loss must be one of {LOSSES}, got {self.loss!r}"),
            (self.cv_protocol in CV_PROTOCOLS,
             f"--cv-protocol must be one of {CV_PROTOCOLS}, got {self.cv_protocol!r}"),
            (0 < self.mix_epochs < 1, f"--mix-epochs is a fraction of --epochs in (0, 1), got {self.mix_epochs}"),
            (0 <= self.mix_ratio[0] <= self.mix_ratio[1] <= 1,
             f"--mix-ratio must be 0 <= low <= high <= 1, got {self.mix_ratio}"),
            (not self.mix_training or self.epochs >= 2,
             "--mix-training needs --epochs >= 2 (a mixed and an unmixed phase)"),
            (self.early_stop >= 0, f"--early-stop must be >= 0 (0 turns it off), got {self.early_stop}"),
            (0 < self.valid_fraction < 1, f"valid_fraction must be in (0, 1), got {self.valid_fraction}"),
        ]
        for ok, message in checks:
            if not ok:
                raise EvarError(message)

    @property
    def mix_training_epochs(self) -> int:
        """Epochs of the mixed phase (at least 1, leaving at least 1 unmixed)."""
        return min(self.epochs - 1, max(1, int(round(self.mix_epochs * self.epochs)))) if self.mix_training else 0


def resolve_settings(model: str, **overrides: Any) -> FineTuneSettings:
    """EVAR's defaults for ``model`` with the given settings (``None`` keeps the default)."""
    known = {f.name for f in fields(FineTuneSettings)}
    unknown = set(overrides) - known
    if unknown:
        raise EvarError(f"unknown fine-tuning setting(s) {sorted(unknown)}; known: {', '.join(sorted(known))}")
    values = {**finetune_defaults(model), **{k: v for k, v in overrides.items() if v is not None}}
    values["mix_ratio"] = tuple(float(r) for r in values.get("mix_ratio", (0.3, 0.7)))
    settings = FineTuneSettings(**values)
    settings.validate()
    return settings


def warmup_cosine_lr(t: float, base_lr: float, epochs: float, warmup_epochs: float, lr_min: float = 1e-7) -> float:
    """Learning rate at (fractional) epoch ``t``: linear from 0 over ``warmup_epochs``, then cosine to
    ``lr_min`` at ``epochs`` (timm's CosineLRScheduler as EVAR configures it: the cosine phase is
    measured from epoch 0, not from the end of the warm-up)."""
    if t < warmup_epochs:
        return base_lr * t / warmup_epochs
    if t >= epochs:
        return lr_min
    return lr_min + 0.5 * (base_lr - lr_min) * (1 + math.cos(math.pi * t / epochs))


class WarmupCosine:
    """Sets the optimiser's learning rate from :func:`warmup_cosine_lr`; EVAR calls it after every
    iteration with ``epoch + iteration / iterations_per_epoch``."""

    def __init__(self, optimizer: torch.optim.Optimizer, settings: FineTuneSettings) -> None:
        self.optimizer, self.settings = optimizer, settings
        self.set(0.0)

    def set(self, t: float) -> None:
        self.t = t
        s = self.settings
        lr = warmup_cosine_lr(t, s.lr, s.epochs, s.warmup_epochs, s.lr_min)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict[str, float]:
        return {"t": self.t}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.set(state["t"])


class TaskHead(nn.Module):
    """EVAR's fine-tuning head: BatchNorm1d without affine parameters, then Linear ~ N(0, 0.01), bias 0."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False)
        self.linear = nn.Linear(dim, n_classes)
        nn.init.normal_(self.linear.weight, mean=0.0, std=0.01)
        nn.init.constant_(self.linear.bias, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


def supports_feature_augment(encoder: Encoder) -> bool:
    """True when the encoder separates its front end: ``features`` and ``forward_from_features``."""
    cls = type(encoder)
    own_features = getattr(cls, "features", None) is not getattr(Encoder, "features", None)
    hook = getattr(cls, "forward_from_features", None)
    return own_features and hook is not None and hook is not getattr(Encoder, "forward_from_features", None)


class FineTuneModel(nn.Module):
    """Encoder + :class:`TaskHead`; with an augmentation and its random generator, training
    batches are augmented between the encoder's front end and its network (on the axes named by
    the encoder's ``feature_axes``, frequency then time, default ``(-2, -1)``)."""

    def __init__(self, encoder: Encoder, n_classes: int, augment: FeatureAugment | None = None,
                 fill: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = TaskHead(encoder.embed_dim, n_classes)
        self.augment, self.fill = augment, fill

    def embed(self, wav: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        if rng is None or self.augment is None:
            return self.encoder(wav)
        freq_axis, time_axis = getattr(self.encoder, "feature_axes", (-2, -1))
        features = self.encoder.features(wav).movedim((freq_axis, time_axis), (-2, -1))
        features = self.augment(features, rng, self.fill).movedim((-2, -1), (freq_axis, time_axis))
        frames, _ = self.encoder.forward_from_features(features)
        return self.encoder.pool(frames)

    def forward(self, wav: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        return self.head(self.embed(wav, rng))


class _Clips(Dataset):
    """``(wav, target)`` pairs: clips read at the encoder's rate, cropped to the unit (random start
    derived from ``(seed, key, file)`` when ``random_crop``, else the beginning) or zero-padded."""

    def __init__(self, paths: Sequence[Path], targets: np.ndarray, sample_rate: int, unit_samples: int,
                 random_crop: bool, key: str, seed: int) -> None:
        self.paths, self.targets = list(paths), targets
        self.sample_rate, self.unit_samples, self.random_crop, self.key, self.seed = (
            sample_rate, unit_samples, random_crop, key, seed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.paths[index]
        wav = load_audio(path, self.sample_rate)
        offset = crop_offset(len(wav), self.unit_samples, self.random_crop, f"{self.key}:{path}", self.seed)
        return torch.from_numpy(crop_or_pad(wav, self.unit_samples, offset)), torch.from_numpy(self.targets[index])


def _batches(n: int, batch_size: int, order: np.ndarray) -> list[list[int]]:
    """Consecutive batches of ``order``; a last batch of one joins the previous (BatchNorm needs 2)."""
    batches = [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2].extend(batches.pop())
    return batches


def _loader(dataset: Dataset, batches: list[list[int]], num_workers: int) -> DataLoader:
    # an explicit generator keeps the DataLoader off the global torch RNG (dropout's)
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(0))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _atomic_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()},
                                             str(tmp)))


def _rng_states(np_rng: np.random.Generator) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "augment": json.dumps(np_rng.bit_generator.state),
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _restore_rng_states(states: dict[str, Any], np_rng: np.random.Generator) -> None:
    np_rng.bit_generator.state = json.loads(states["augment"])
    random.setstate(states["python"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def plot_curves(history: list[dict[str, Any]], path: Path, metric: str) -> Path | None:
    """Training loss and valid/test metric per epoch, one line per round, as a PNG (matplotlib Agg)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed (pip install 'evar-bench[plots]'); no curves.png")
        return None
    df = pd.DataFrame(history)
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    loss_ax, metric_ax = fig.subplots(1, 2)
    for name, rows in df.groupby("round", sort=False):
        line, = loss_ax.plot(rows["epoch"], rows["train_loss"], label=name)
        metric_ax.plot(rows["epoch"], rows["valid"], color=line.get_color(), label=f"{name} valid")
        if rows["test"].notna().any():
            metric_ax.plot(rows["epoch"], rows["test"], color=line.get_color(), linestyle="--", label=f"{name} test")
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="loss")
    metric_ax.set(xlabel="epoch", ylabel=metric, title=metric)
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
    return path


class _Run:
    """One fine-tuning run: the task, the encoder and its initial weights, settings and folder."""

    def __init__(self, task: Task, encoder: Encoder, settings: FineTuneSettings, options: RunOptions, run_dir: Path,
                 epoch_hook: Callable[[str, int, nn.Module], None] | None) -> None:
        self.task, self.encoder, self.settings = task, encoder, settings
        self.device, self.num_workers, self.progress, self.run_dir, self.epoch_hook = (
            options.device, options.num_workers, options.progress, run_dir, epoch_hook)
        self.initial_state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
        self.labels = task.labels()
        self.multilabel = task.spec.multilabel
        self.n_classes = len(task.classes)
        self.paths = task.paths()
        self.unit_samples = int(round(task.spec.unit_sec * encoder.sample_rate))
        self.amp = settings.amp and torch.device(self.device).type == "cuda"
        self.augment = FeatureAugment(settings.freq_mask, settings.time_mask, settings.rrc, settings.aug_shared)
        self.feature_augment = self.augment.active and supports_feature_augment(encoder)
        self.history: list[dict[str, Any]] = []

    # -- data ------------------------------------------------------------------------------------
    def targets(self, rows: np.ndarray) -> np.ndarray:
        if self.multilabel:
            return self.labels[rows].astype(np.float32)
        return np.eye(self.n_classes, dtype=np.float32)[self.labels[rows]]

    def clips(self, rows: np.ndarray, random_crop: bool, key: str) -> _Clips:
        return _Clips([self.paths[i] for i in rows], self.targets(rows), self.encoder.sample_rate,
                      self.unit_samples, random_crop, key, self.settings.seed)

    def round_rows(self, split: Split, round_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """(train, valid, test, valid_is_test) rows of a round, under the chosen CV protocol."""
        usable = np.ones(len(self.labels), dtype=bool) if self.multilabel else self.labels >= 0
        pick = lambda rows: rows[usable[rows]] if rows is not None else None  # noqa: E731
        train, valid, test = pick(split.train), pick(split.valid), pick(split.test)
        if len(train) < 2 or len(test) == 0:
            raise EvarError(f"{self.task.name} {split.name}: needs >= 2 training and >= 1 test clips")
        if valid is not None and len(valid):
            return train, valid, test, False
        if self.settings.cv_protocol == "evar":
            return train, test, test, True
        rng = np.random.default_rng(self.settings.seed + round_index)
        train, valid = holdout_rows(train, rng, HoldoutRule(self.settings.valid_fraction),
                                    None if self.multilabel else self.labels)
        if len(train) < 2:
            raise EvarError(f"{self.task.name} {split.name}: too few clips to hold out a validation set")
        return train, valid, test, False

    def measure_stats(self, rows: np.ndarray) -> tuple[float, float]:
        """EVAR's normalisation statistics on this round's shuffled, randomly cropped training clips."""
        dataset = self.clips(rows, True, "stats")
        order = np.random.default_rng(self.settings.seed).permutation(len(rows))
        loader = _loader(dataset, _batches(len(rows), self.settings.batch_size, order), self.num_workers)
        return front_end_stats(self.encoder, ([wav] for wav, _ in loader), max_clips=STATS_MAX_CLIPS)

    # -- evaluation ------------------------------------------------------------------------------
    def predict(self, model: FineTuneModel, dataset: _Clips) -> np.ndarray:
        model.eval()
        order = np.arange(len(dataset))
        outputs = []
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            for wav, _ in _loader(dataset, _batches(len(dataset), self.settings.batch_size, order), self.num_workers):
                outputs.append(model(wav.to(self.device)).float().cpu().numpy())
        return np.concatenate(outputs)

    def score(self, logits: np.ndarray, rows: np.ndarray) -> float:
        if self.multilabel:
            return mean_average_precision(self.labels[rows], logits)
        return float((logits.argmax(axis=1) == self.labels[rows]).mean())

    # -- training --------------------------------------------------------------------------------
    def write_log(self, extra: Sequence[dict[str, Any]] = ()) -> None:
        rows = self.history + list(extra)
        if rows:
            atomic_write_text(self.run_dir / "log.csv", pd.DataFrame(rows).to_csv(index=False))

    def train_round(self, round_index: int, split: Split) -> dict[str, Any]:
        """Train one round (resuming from its ``last.pt`` when present); returns its result."""
        s = self.settings
        folder = self.run_dir / split.name
        folder.mkdir(parents=True, exist_ok=True)
        train, valid, test, valid_is_test = self.round_rows(split, round_index)
        seed_everything(s.seed)
        encoder = self.encoder
        encoder.load_state_dict(self.initial_state)
        model = FineTuneModel(encoder, self.n_classes, self.augment if self.feature_augment else None).to(self.device)
        if s.freeze:
            for p in encoder.parameters():
                p.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        if s.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=s.lr, momentum=0.9, weight_decay=0.0)
        else:  # EVAR's AdamW settings
            optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=1e-4, betas=(0.9, 0.95), eps=1e-8, amsgrad=True)
        scheduler = WarmupCosine(optimizer, s)
        class_weights = None
        if s.loss == "wce" or s.inverse_frequency:
            class_weights = inverse_frequency_weights(self.labels[train], self.n_classes).to(self.device)
        loss_fn = make_loss(s.loss, self.multilabel, class_weights, s.pos_weight, s.afl_gamma, s.afl_zeta)
        aug_rng = np.random.default_rng([s.seed, round_index])
        state: dict[str, Any] = {"epoch": -1, "best_valid": -math.inf, "best_epoch": -1, "best_test": None,
                                 "stopped": False, "stats": None, "history": []}
        last = folder / "last.pt"
        if last.is_file():
            saved = torch.load(last, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            _restore_rng_states(saved["rng"], aug_rng)
            state = saved["state"]
            if state["stats"] is not None:
                encoder.set_stats(*state["stats"])
        elif encoder.needs_stats:
            state["stats"] = list(self.measure_stats(train))
            encoder.set_stats(*state["stats"])
        model.fill = state["stats"][0] if state["stats"] is not None else 0.0
        test_data = self.clips(test, False, "test")
        valid_data = test_data if valid_is_test else self.clips(valid, True, "valid")
        iters = len(_batches(len(train), s.batch_size, np.arange(len(train))))
        bar = tqdm(total=s.epochs, initial=state["epoch"] + 1, unit="epoch", disable=not self.progress,
                   desc=f"finetune {self.task.name} {split.name}")
        for epoch in range(state["epoch"] + 1, s.epochs):
            if state["stopped"]:
                break
            mixed = epoch < s.mix_training_epochs
            order = np.random.default_rng([s.seed, round_index, epoch]).permutation(len(train))
            loader = _loader(self.clips(train, True, f"train:{round_index}:{epoch}"),
                             _batches(len(train), s.batch_size, order), self.num_workers)
            model.train()
            if s.freeze:
                encoder.eval()
            total, count, lr = 0.0, 0, optimizer.param_groups[0]["lr"]
            for it, (wav, target) in enumerate(loader):
                wav, target = wav.to(self.device), target.to(self.device)
                if mixed:
                    wav, target = mix_training(wav, target, *sample_mix_training(len(wav), s.mix_ratio, aug_rng))
                elif s.mixup > 0 and not s.mix_training:
                    wav, target = mixup(wav, target, *sample_mixup(len(wav), s.mixup, aug_rng))
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                    logits = model(wav, aug_rng if self.feature_augment else None)
                loss = binary_cross_entropy(logits.float(), target) if mixed else loss_fn(logits.float(), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                lr = optimizer.param_groups[0]["lr"]
                scheduler.set(epoch + it / iters)
                total += float(loss.detach()) * len(wav)
                count += len(wav)
            valid_logits = self.predict(model, valid_data)
            valid_score = self.score(valid_logits, valid)
            test_score = valid_score if valid_is_test else (
                self.score(self.predict(model, test_data), test) if s.epoch_test else None)
            if valid_score > state["best_valid"]:  # EVAR: a strictly better score replaces the best
                state.update(best_valid=valid_score, best_epoch=epoch, best_test=test_score)
                _atomic_safetensors(model.state_dict(), folder / "best.safetensors")
            state["history"].append({"round": split.name, "epoch": epoch, "phase": "mix" if mixed else "train",
                                     "lr": lr, "train_loss": total / max(count, 1), "valid": valid_score,
                                     "test": test_score})
            state["epoch"] = epoch
            if s.early_stop and epoch > state["best_epoch"] + s.early_stop:
                state["stopped"] = True
            _atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "rng": _rng_states(aug_rng), "state": state}, last)
            self.write_log(state["history"])
            bar.update(1)
            bar.set_postfix(valid=f"{valid_score:.4f}", best=f"{state['best_valid']:.4f}")
            if self.epoch_hook is not None:
                self.epoch_hook(split.name, epoch, model)
        bar.close()
        best_test = state["best_test"]
        if best_test is None:  # tests were not run every epoch: test the best weights now
            model.load_state_dict(load_state_dict(folder / "best.safetensors"))
            best_test = self.score(self.predict(model, test_data), test)
        result = {"round": split.name, "score": best_test, "best_epoch": state["best_epoch"],
                  "best_valid": state["best_valid"], "valid_is_test": valid_is_test, "n_train": int(len(train)),
                  "n_valid": int(len(valid)), "n_test": int(len(test)), "stats": state["stats"],
                  "history": state["history"]}
        atomic_write_text(folder / "result.json", json.dumps(result, indent=1))
        last.unlink(missing_ok=True)
        if s.freeze:
            for p in encoder.parameters():
                p.requires_grad_(True)
        return result


def _find_resumable(base: Path, model: str, identity: dict[str, Any]) -> Path | None:
    """The latest unfinished run under ``base`` with exactly this identity."""
    candidates = []
    for run_json in base.glob(f"{safe_name(model)}-*/run.json"):
        info = json.loads(run_json.read_text())
        if not info.get("complete") and info.get("identity") == identity:
            candidates.append(run_json.parent)
    return max(candidates, key=lambda p: (p / "run.json").stat().st_mtime) if candidates else None


def finetune(task: str, model: ModelChoice, overrides: dict[str, Any] | None = None, run: RunOptions = RunOptions(),
             resume: bool = False, encoder: Encoder | None = None,
             epoch_hook: Callable[[str, int, nn.Module], None] | None = None, record: bool = True) -> Result:
    """Fine-tune ``model`` on the prepared ``task`` under EVAR's protocol; ``overrides`` are
    :class:`FineTuneSettings` fields (unset ones take the encoder's EVAR defaults, :func:`finetune_defaults`).

    Appends a ``protocol='finetune'`` row to ``results/scores.csv`` when ``record``. ``resume``
    continues the latest unfinished run with identical settings (same result as an uninterrupted
    run). ``epoch_hook(round, epoch, model)`` is called after each epoch's checkpoint is written.
    """
    device, weights = run.device, model.weights
    check_writable()  # checkpoints and the row go under the results folder
    prepared = load_task(task)
    settings = resolve_settings(model.name, **(overrides or {}))
    encoder = encoder or model.build(device)
    encoder = encoder.to(device)
    if settings.amp and torch.device(device).type != "cuda":
        log.warning("--amp works on CUDA only; training in float32")
        settings.amp = False
    identity = {"task": task, "model": model.name, "encoder": encoder.config(), "weights_sha256": encoder.weights_sha256,
                "n_files": len(prepared), "unit_sec": prepared.spec.unit_sec, "settings": asdict(settings)}
    identity = json.loads(json.dumps(identity, default=str))
    base = results_dir() / "finetune" / task
    run_dir = _find_resumable(base, model.name, identity) if resume else None
    if resume and run_dir is None:
        log.warning("no unfinished run with these settings to resume; starting a new run")
    if run_dir is None:
        run_dir = base / f"{safe_name(model.name)}-{uuid.uuid4().hex[:12]}"
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "run.json", json.dumps({"identity": identity, "complete": False}, indent=1))
    run_id = run_dir.name.rsplit("-", 1)[1]
    run = _Run(prepared, encoder, settings, replace(run, device=device), run_dir, epoch_hook)
    if run.augment.active and not run.feature_augment:
        log.warning(f"{type(encoder).__name__} has no separable front end (features + "
                    "forward_from_features); frequency/time masks and random resize crop are off, "
                    "mixup on waveforms still applies")
    has_valid = all(split.valid is not None and len(split.valid) for split in prepared.splits())
    rounds = FineTuneRounds(run)
    names, scores = score_rounds(rounds, [settings.seed], progress=False)
    plot_curves(run.history, run_dir / "curves.png", prepared.spec.metric)
    recorded = {**asdict(settings), "unit_sec": prepared.spec.unit_sec, "encoder": encoder.config(),
                "device": device, "feature_augment": run.feature_augment,
                "validation": "task valid split" if has_valid else (
                    "EVAR: held-out fold as validation, best test score over epochs (optimistic)"
                    if settings.cv_protocol == "evar" else f"holdout: {settings.valid_fraction:.0%} of training, "
                    "test at the best validation epoch"),
                "best_epochs": [r["best_epoch"] for r in rounds.results], "run_dir": str(run_dir)}
    result = Result("finetune", task, model.name, [], prepared.spec.metric, names, [settings.seed], scores, recorded,
                    weights_field(model.name, weights), encoder.weights_sha256 or "", run_id=run_id)
    info = json.loads((run_dir / "run.json").read_text())
    info.update(complete=True, rounds=names, scores=[s[0] for s in scores], mean=result.mean, std=result.std)
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=1))
    if record and not info.get("recorded"):
        append_result(result.row())
        info["recorded"] = True
        atomic_write_text(run_dir / "run.json", json.dumps(info, indent=1))
    return result


class FineTuneRounds(Rounds):
    """Fine-tuning's rounds: each trains a fresh copy of the encoder (or reads the round's finished result)."""

    def __init__(self, run: "_Run") -> None:
        super().__init__(run.task)
        self.run, self.results = run, []

    def fit_score(self, round_index: int, seed: int) -> float:
        split, run = self.splits[round_index], self.run
        done = run.run_dir / split.name / "result.json"
        result = json.loads(done.read_text()) if done.is_file() else run.train_round(round_index, split)
        run.history.extend(result["history"])
        run.write_log()
        self.results.append(result)
        return float(result["score"])
