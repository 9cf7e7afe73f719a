"""Fine-tuning under EVAR's protocol: the encoder plus a BatchNorm/Linear head, trained end to end.

Defaults follow EVAR's ``finetune.py``: SGD (momentum 0.9, no weight decay), linear warm-up from 0
then cosine to 1e-7 stepped every iteration, mixup on waveforms, SpecAugment-style masks and random
resize crop on the log-mel, per-encoder settings (the encoder spec's ``finetune``). Each round (fold or the
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

The model and schedule are in :mod:`evar.protocols.finetune_model`, a run's training loop in
:mod:`evar.protocols.finetune_run`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from evar.encoders import get_encoder_spec
from evar.encoders.base import Encoder
from evar.errors import EvarError
from evar.io import atomic_write_text, safe_name
from evar.log import log
from evar.options import ModelChoice, RunOptions
from evar.paths import results_dir
from evar.protocols.base import Result, Rounds, score_rounds, weights_field
from evar.protocols.finetune_run import FineTuneRun, plot_curves
from evar.protocols.losses import LOSSES
from evar.results import provenance
from evar.results.store import append_result, check_writable
from evar.tasks import load_task

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


def _find_resumable(base: Path, model: str, identity: dict[str, Any]) -> Path | None:
    """The latest unfinished run under ``base`` with exactly this identity."""
    candidates = []
    for run_json in base.glob(f"{safe_name(model)}-*/run.json"):
        info = json.loads(run_json.read_text())
        if not info.get("complete") and info.get("identity") == identity:
            candidates.append(run_json.parent)
    return max(candidates, key=lambda p: (p / "run.json").stat().st_mtime) if candidates else None


@provenance.timed_run
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
    provenance.note_encoder(encoder, prepared.spec.unit_sec)
    training = FineTuneRun(prepared, encoder, settings, run, run_dir, epoch_hook)
    if training.augment.active and not training.feature_augment:
        log.warning(f"{type(encoder).__name__} has no separable front end (features + "
                    "forward_from_features); frequency/time masks and random resize crop are off, "
                    "mixup on waveforms still applies")
    rounds = FineTuneRounds(training)
    has_valid = all(split.valid is not None and len(split.valid) for split in rounds.splits)
    names, scores = score_rounds(rounds, [settings.seed], progress=False)
    plot_curves(training.history, run_dir / "curves.png", prepared.spec.metric)
    recorded = {**asdict(settings), "unit_sec": prepared.spec.unit_sec, "encoder": encoder.config(),
                "device": device, "feature_augment": training.feature_augment,
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

    stage = "training"

    def __init__(self, training: FineTuneRun) -> None:
        super().__init__(training.task)
        self.training, self.results = training, []

    def fit_score(self, round_index: int, seed: int) -> float:
        split, training = self.splits[round_index], self.training
        done = training.run_dir / split.name / "result.json"
        result = json.loads(done.read_text()) if done.is_file() else training.train_round(round_index, split)
        training.history.extend(result["history"])
        training.write_log()
        self.results.append(result)
        return float(result["score"])
