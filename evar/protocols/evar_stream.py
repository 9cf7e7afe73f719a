"""EVAR's random-number stream, reproduced without touching the global generators.

EVAR (nttcslab/eval-audio-repr, lineareval.py at 88ba772; its papers' numbers come from the two-pass runner)
seeds Python, NumPy and torch once per run and then draws from the global generators in a fixed order:

Pass 1 (embeddings, seed 42): the model is built (its Conv/Linear layers' default initialisation draws one
32-bit word per parameter), the statistics pass iterates the shuffled training loader of the first fold
(``precompute``), then every fold's training loader is iterated once more (shuffled: the rows of its embedding
matrix are in that order), its validation and test loaders once each. Every DataLoader iteration draws one
int64 "base seed"; a shuffled one draws a second int64 and yields ``randperm(n)`` of a generator seeded with it.

Pass 2 (the linear step, one run per seed): seed, then per fold in order: ``nn.Linear`` initialised from the
global generator, a NumPy permutation for the 10% holdout of folds without a validation split, and per epoch
three DataLoader iterations (shuffled training batches, then the validation loader).

Which clips form the statistics pass's first batch (which EVAR's running mean leaves out), in which order the
classifier sees its training rows, its initial weights and every batch therefore follow from the seed; this
module replays those draws so evar's numbers are EVAR's, seed for seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

#: clips per batch of EVAR's statistics pass (its training loader's batch size)
STATS_BATCH = 256


def _int64(generator: torch.Generator) -> int:
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


def loader_iteration(generator: torch.Generator, n: int | None = None) -> np.ndarray | None:
    """The draws of one DataLoader iteration (num_workers any): the base seed, and for a shuffled loader of
    ``n`` items the sampler's seed and the order it yields."""
    _int64(generator)  # _BaseDataLoaderIter: the workers' base seed
    if n is None:
        return None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(_int64(generator)))  # RandomSampler
    return order.numpy()


def skip_words(generator: torch.Generator, n: int) -> None:
    """Draw ``n`` 32-bit words, as default-initialising Conv/Linear layers with ``n`` parameters does."""
    for start in range(0, n, 1 << 22):
        torch.empty(min(1 << 22, n - start)).uniform_(generator=generator)


@dataclass
class Pass1Orders:
    """What EVAR's first pass draws: the statistics pass's clip order (first round's training rows, positions
    into them) and, per round, the order of its training rows in EVAR's embedding matrix."""

    stats_order: np.ndarray
    train_orders: list[np.ndarray]


def pass1_orders(rounds: list[tuple[int, int, int]], init_words: int, seed: int = 42, stats: bool = True) -> Pass1Orders:
    """Replay pass 1 for ``rounds`` = [(n_train, n_valid, n_test), ...]; ``init_words`` = parameters of the
    Conv/Linear layers EVAR's model construction initialises; ``stats`` = the encoder runs a statistics pass."""
    g = torch.Generator().manual_seed(seed)
    stats_order, train_orders = np.arange(rounds[0][0]), []
    for index, (n_train, n_valid, n_test) in enumerate(rounds):
        if index == 0:
            skip_words(g, init_words)
            if stats:
                stats_order = loader_iteration(g, n_train)
        train_orders.append(loader_iteration(g, n_train))
        for n in (n_valid, n_test):
            if n:  # EVAR returns early, without iterating, for an empty loader
                loader_iteration(g)
    return Pass1Orders(stats_order, train_orders)


def task_pass1_orders(task, init_words: int, seed: int = 42, stats: bool = True) -> Pass1Orders:
    """:func:`pass1_orders` for the rounds of ``task`` (a :class:`evar.tasks.Task`)."""
    rounds = [(len(s.train), len(s.valid) if s.valid is not None else 0, len(s.test)) for s in task.splits()]
    return pass1_orders(rounds, init_words, seed, stats)


def stats_batches(order: np.ndarray, max_clips: int = 5000, batch_size: int = STATS_BATCH) -> list[np.ndarray]:
    """Whole batches of ``order`` until at least ``max_clips`` clips are seen (EVAR's calculate_norm_stats)."""
    batches, seen = [], 0
    for start in range(0, len(order), batch_size):
        batches.append(order[start:start + batch_size])
        seen += len(batches[-1])
        if seen >= max_clips:
            break
    return batches


def init_linear(linear: torch.nn.Linear, generator: torch.Generator) -> None:
    """``nn.Linear``'s default initialisation (kaiming-uniform weight, uniform bias) drawn from ``generator``."""
    with torch.no_grad():
        torch.nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5), generator=generator)
        bound = 1 / math.sqrt(linear.in_features) if linear.in_features > 0 else 0
        torch.nn.init.uniform_(linear.bias, -bound, bound, generator=generator)
