"""evar.protocols.evar_stream replays the draws EVAR's code makes from the global generators: each primitive is checked
against the real thing (DataLoader, nn.Linear, default-initialised layers, scikit-learn's split) under the same seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from evar.encoders.base import default_init_words
from evar.encoders.byola import AudioNTT2020
from evar.protocols.splits import EVAR_HOLDOUT, holdout
from evar.protocols.evar_stream import init_linear, loader_iteration, pass1_orders, skip_words, stats_batches


def _same_state(generator: torch.Generator) -> None:
    """The global generator and ``generator`` are at the same point of their stream."""
    assert torch.equal(torch.get_rng_state(), generator.get_state())


@pytest.mark.parametrize("num_workers", [0, 1])
def test_shuffled_loader_iteration(num_workers: int) -> None:
    torch.manual_seed(7)
    real = torch.cat(list(DataLoader(range(37), batch_size=5, shuffle=True, num_workers=num_workers))).numpy()
    g = torch.Generator().manual_seed(7)
    np.testing.assert_array_equal(loader_iteration(g, 37), real)
    _same_state(g)


def test_plain_loader_iteration_draws_one_seed() -> None:
    torch.manual_seed(3)
    list(DataLoader(range(10), batch_size=4))
    g = torch.Generator().manual_seed(3)
    loader_iteration(g)
    _same_state(g)


def test_linear_initialisation() -> None:
    torch.manual_seed(11)
    real = torch.nn.Linear(24, 5)
    after_real = torch.get_rng_state()
    mine = torch.nn.Linear(24, 5)  # (its own default draws are overwritten below)
    torch.set_rng_state(after_real)
    g = torch.Generator().manual_seed(11)
    init_linear(mine, g)
    torch.testing.assert_close(mine.weight, real.weight, rtol=0, atol=0)
    torch.testing.assert_close(mine.bias, real.bias, rtol=0, atol=0)
    _same_state(g)


def test_building_byola_draws_one_word_per_conv_and_linear_parameter() -> None:
    torch.manual_seed(42)
    net = AudioNTT2020(n_mels=64, d=512)  # the layers EVAR's AudioNTT2020Task6 builds, in the same order
    g = torch.Generator().manual_seed(42)
    skip_words(g, default_init_words(net))
    _same_state(g)
    assert default_init_words(net) == 599808  # 640 + 2 x 36,928 + 2 x 262,656


def test_holdout_is_scikit_learns_split_until_every_class_is_held_out() -> None:
    from sklearn.model_selection import train_test_split

    y = np.repeat(np.arange(6), 7)
    np.random.seed(5)
    for _ in range(100):  # EVAR's train_test_sure_split: the global RandomState, redrawn until complete
        X_trn, X_val, y_trn, y_val = train_test_split(np.arange(len(y)), y, test_size=0.1)
        if len(set(y_val)) == 6:
            break
    train, valid = holdout(len(y), np.random.RandomState(5), EVAR_HOLDOUT, y)
    np.testing.assert_array_equal(valid, X_val)
    np.testing.assert_array_equal(train, X_trn)


def test_pass1_orders_follow_the_chain() -> None:
    """Two rounds, statistics pass: model words, stats loader, round 1 train/valid/test, round 2 train/test."""
    torch.manual_seed(42)
    torch.empty(1000).uniform_()
    stats = torch.cat(list(DataLoader(range(30), batch_size=8, shuffle=True))).numpy()
    first = torch.cat(list(DataLoader(range(30), batch_size=8, shuffle=True))).numpy()
    list(DataLoader(range(5)))
    list(DataLoader(range(6)))
    second = torch.cat(list(DataLoader(range(28), batch_size=8, shuffle=True))).numpy()
    orders = pass1_orders([(30, 5, 6), (28, 0, 8)], init_words=1000)
    np.testing.assert_array_equal(orders.stats_order, stats)
    np.testing.assert_array_equal(orders.train_orders[0], first)
    np.testing.assert_array_equal(orders.train_orders[1], second)


def test_stats_batches_stop_after_max_clips() -> None:
    batches = stats_batches(np.arange(1000), max_clips=500, batch_size=256)
    assert [len(b) for b in batches] == [256, 256]
    assert [len(b) for b in stats_batches(np.arange(300), max_clips=5000)] == [256, 44]
