"""The fine-tuned model: the encoder plus EVAR's BatchNorm/Linear head, with feature-level augmentation; and
the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from evar.encoders.base import Encoder
from evar.protocols.augment import FeatureAugment

if TYPE_CHECKING:  # the settings' module imports this one
    from evar.protocols.finetune import FineTuneSettings


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
