"""``--layers weighted``: SUPERB's learnt softmax-weighted sum of layers in front of the linear (or MLP) probe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from evar.cli import main
from evar.protocols.linear import LayerWeights, LinearProbe
from evar.synth.trees import make_esc50_tree
from fixture_support import FIXTURES


def test_layer_weights_are_a_softmax_weighted_sum() -> None:
    head = LayerWeights(3)
    x = torch.arange(12, dtype=torch.float32).view(2, 6)  # 2 rows of 3 layers x 2 dims
    np.testing.assert_allclose(head(x).detach().numpy(), x.view(2, 3, 2).mean(dim=1).numpy(), rtol=1e-6)  # starts equal
    with torch.no_grad():
        head.weights.copy_(torch.tensor([0.0, 0.0, 50.0]))
    np.testing.assert_allclose(head(x).detach().numpy(), x.view(2, 3, 2)[:, 2].numpy(), rtol=1e-6)


def test_training_moves_the_weight_to_the_informative_layer() -> None:
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    noise = [rng.normal(size=(300, 8)) for _ in range(3)]
    noise[1] += np.eye(3)[y] @ rng.normal(0, 3, (3, 8))  # only layer 1 carries the class
    X = np.concatenate(noise, axis=1).astype(np.float32)
    probe = LinearProbe(lr=1e-2, max_epochs=60, mode="clean", weighted_layers=3).fit(X[:240], y[:240])
    weights = torch.softmax(probe.model_[0].weights, dim=0).detach().numpy()
    assert weights.argmax() == 1 and weights[1] > 0.4
    assert probe.score(X[240:], y[240:]) > 0.9


def test_weighted_layers_from_the_command_line(tmp_path: Path, evar_dirs: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_esc50_tree(tmp_path / "ESC-50-master", n_classes=3, clips_per_class_per_fold=1, sample_rate=16000,
                           seconds=1.0)
    model = ["--model", f"hf:{FIXTURES / 'hf_tiny' / 'hubert'}"]  # embed + 2 layers, all 32 wide
    assert main(["prepare", "esc50", "--root", str(root)]) == 0
    assert main(["probe", "--task", "esc50", *model, "--layers", "weighted", "--max-epochs", "5", "--seeds", "1,2"]) == 0
    assert "layer weights (fold1, seed 1): embed" in capsys.readouterr().out
    row = pd.read_csv(evar_dirs / "results" / "scores.csv").iloc[0]
    settings = json.loads(row["settings"])
    assert row["layers"] == "weighted" and settings["layer_names"] == ["embed", "layer1", "layer2"]
    weights = np.asarray(settings["layer_weights"])
    assert weights.shape == (5, 2, 3) and np.allclose(weights.sum(axis=2), 1, atol=1e-5)
    assert main(["plot", "layer-weights", *model, "--task", "esc50"]) == 0
    png = next((evar_dirs / "results" / "plots").glob("layer-weights-*.png"))
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["probe", "--task", "esc50", *model, "--layers", "weighted", "--protocol", "knn"]) == 2
    assert "linear or mlp protocol" in capsys.readouterr().err
