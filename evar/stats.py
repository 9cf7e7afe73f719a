"""Normalisation statistics of a front end's output, measured as EVAR does."""

from __future__ import annotations

import numpy as np
import torch


class EvarRunningStats:
    """EVAR's running mean/std over whole batches, reproduced for digit-level parity.

    Each batch contributes its mean, and its mean squared deviation from the running mean after
    that batch, through a running average that divides by the number of batches seen *before*
    the current one. The consequence (kept on purpose, since EVAR's numbers carry it): the second
    batch replaces the first, and the result is the plain average of batches 2..k (batch 1 alone
    when there is only one).
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.sq = 0.0

    def put(self, x: torch.Tensor) -> None:
        """Add one batch of front-end output."""
        x = x.double()
        self.put_moments(x.numel(), float(x.sum()), float((x * x).sum()))

    def put_moments(self, count: int, total: float, total_sq: float) -> None:
        """Add one batch given its element count, sum and sum of squares (the batch may be computed in
        pieces, so a batch of 256 long clips never has to be in memory at once)."""
        batch_mean = total / count
        self.mean = batch_mean if self.n == 0 else self.mean + (batch_mean - self.mean) / self.n
        # mean squared deviation from the updated running mean, from the moments
        batch_sq = total_sq / count - 2 * self.mean * batch_mean + self.mean ** 2
        self.sq = batch_sq if self.n == 0 else self.sq + (batch_sq - self.sq) / self.n
        self.n += 1

    def result(self) -> tuple[float, float]:
        """(mean, std) as float32 values."""
        return float(np.float32(self.mean)), float(np.float32(np.sqrt(self.sq)))
