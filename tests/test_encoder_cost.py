"""The encoder cost table (``evar list models --cost``): complete, and what counting gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from evar.cli import main
from evar.encoders import create_encoder, encoder_costs, list_encoders
from evar.results.provenance import COST_SECONDS, count_cost


def test_every_built_in_encoder_has_its_cost() -> None:
    costs = encoder_costs()
    built_in = {spec.name for spec in list_encoders() if spec.source.startswith("evar.")}
    assert built_in - set(costs) == set(), "run: python benchmarks/encoder_cost.py --models NAME"
    assert all(c["counted_on_sec"] == COST_SECONDS and c["gflops_per_audio_second"] > 0 for c in costs.values())


@pytest.mark.parametrize("name", ["melspec", "byola"])
def test_the_table_is_what_counting_gives(name: str, byola512_weights: Path) -> None:
    encoder = create_encoder(name, weights=str(byola512_weights) if name == "byola" else None)
    counted = count_cost(encoder, COST_SECONDS)
    assert counted["params"] == encoder_costs()[name]["params"]
    assert counted["gflops_per_audio_second"] == pytest.approx(encoder_costs()[name]["gflops_per_audio_second"],
                                                               rel=1e-3)


def test_list_models_cost(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "models", "--cost"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["byola"][3:5] == ["0.60", f"{encoder_costs()['byola']['gflops_per_audio_second']:.2f}"]


def test_recurrent_layers_are_counted() -> None:
    """torch's counter has no LSTM formula: evar adds the gate products (Resemblyzer is a 3-layer LSTM)."""
    import torch

    class Recurrent(torch.nn.Module):
        sample_rate = 100

        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(40, 256, 3, batch_first=True)

        def embed(self, wav: torch.Tensor) -> torch.Tensor:
            return self.lstm(wav.reshape(1, -1, 40))[0]

    steps = 4 * 100 // 40
    gates = 4 * 256 * (40 + 256) + 2 * 4 * 256 * (256 + 256)  # every layer's input and hidden weights
    assert count_cost(Recurrent(), 4.0)["gflops_per_audio_second"] == pytest.approx(2 * steps * gates / 4 / 1e9,
                                                                                  abs=1e-4)
