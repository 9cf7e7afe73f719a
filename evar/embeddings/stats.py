"""Normalisation statistics of a front end's output, measured as EVAR does."""

from __future__ import annotations

from typing import Iterable

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


def front_end_stats(encoder, batches: Iterable[Iterable[torch.Tensor]], max_clips: int | None = None
                    ) -> tuple[float, float]:
    """The statistics pass every protocol uses: EVAR's running statistics of ``encoder.features`` over ``batches``.

    Each item of ``batches`` is one EVAR batch, given as pieces (waveform tensors ``(clips, samples)``) so that a
    batch of many long clips is never in memory at once; its moments are accumulated in float64 over the pieces.
    The pass stops after the batch in which ``max_clips`` clips have been seen.
    """
    stats, seen = EvarRunningStats(), 0
    with torch.inference_mode():
        for pieces in batches:
            count, total, total_sq = 0, 0.0, 0.0
            for wav in pieces:
                x = encoder.features(wav.to(encoder.device)).double()
                count, total, total_sq = count + x.numel(), total + float(x.sum()), total_sq + float((x * x).sum())
                seen += len(wav)
            if count:
                stats.put_moments(count, total, total_sq)
            if max_clips is not None and seen >= max_clips:
                break
    return stats.result()
