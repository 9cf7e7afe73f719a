"""Normalisation statistics of a front end's output, measured as EVAR does: the one statistics pass
(:func:`front_end_stats`) and EVAR's batches of a task's first training round (:func:`measure_stats`)."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from evar.embeddings.datasets import AudioStore, ClipDataset, ordered_loader
from evar.encoders.base import Encoder
from evar.protocols.evar_stream import stats_batches, task_pass1_orders
from evar.tasks import Task

#: clips and batch size of EVAR's statistics pass (its first round's training clips, shuffled)
STATS_MAX_CLIPS = 5000
STATS_BATCH_SIZE = 256
#: clips per front-end call inside a statistics batch (bounds memory; the batch statistics are unchanged)
STATS_PIECE = 16


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


def measure_stats(encoder: Encoder, task: Task, unit_sec: float, seed: int = 42, num_workers: int = 0,
                  max_clips: int = STATS_MAX_CLIPS, batch_size: int = STATS_BATCH_SIZE,
                  store: AudioStore | None = None) -> tuple[float, float]:
    """EVAR's normalisation statistics: front-end output over shuffled, randomly cropped training
    clips of the first round, whole batches until ``max_clips`` are seen. With ``store``, clips it holds (as
    this pass crops them) are read from it and the others written to it, for the embedding pass to reuse.

    The batches are EVAR's (a shuffled DataLoader of ``batch_size`` with this seed); each is decoded and
    measured in pieces of ``STATS_PIECE`` clips, so a batch of 256 long clips is never in memory at once.
    """
    rows = task.first_train_rows()
    all_paths = task.paths()
    keys = list(task.meta["file"].iloc[rows])
    dataset = ClipDataset([all_paths[i] for i in rows], encoder.sample_rate, int(unit_sec * encoder.sample_rate),
                          np.ones(len(rows), dtype=bool), seed, on_error="skip", keys=keys, store=store)
    batches = [b.tolist() for b in stats_batches(stats_order(encoder, task, seed), max_clips, batch_size)]
    pieces = [batch[i:i + STATS_PIECE] for batch in batches for i in range(0, len(batch), STATS_PIECE)]
    loader = iter(DataLoader(dataset, batch_sampler=pieces, num_workers=num_workers))

    def good_pieces(batch: list[int]) -> Iterator[torch.Tensor]:
        for _ in range(0, len(batch), STATS_PIECE):
            index, wav, errors, whole = next(loader)
            good = [j for j, error in enumerate(errors) if not error]
            if store is not None:
                for j in good:
                    store.write(keys[int(index[j])], wav[j].numpy(), random_crop=True, whole=bool(whole[j]))
            if good:
                yield wav[good]

    return front_end_stats(encoder, (good_pieces(batch) for batch in batches))


def stats_order(encoder: Encoder, task: Task, seed: int = 42) -> np.ndarray:
    """The order in which EVAR's statistics pass meets the first round's training clips: its seeded loader's
    permutation, replayed exactly when the encoder's construction draws are known (``evar_init_words``), else a
    permutation from a generator seeded with ``seed``."""
    words = getattr(encoder, "evar_init_words", None)
    if words is not None:
        return task_pass1_orders(task, words, seed).stats_order
    n = len(task.first_train_rows())
    return next(iter(ordered_loader(range(n), n, 0, shuffle=True, seed=seed))).numpy()
