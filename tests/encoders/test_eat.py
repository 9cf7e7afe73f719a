"""EAT: parity with the hub model's own code on a tiny checkpoint it saved, strict loading, frames and layers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import evar
from evar.errors import EvarError
from fixture_support import FIXTURES

# Produced by tests/fixtures/eat_make_reference.py (see eat_README.md) with the original remote code.
# Observed: fbank 2.3e-3 at the log floor and 2.6e-4 above it (clip_b's DC offset makes float32 fbanks sensitive: the
# original's own kaldi.py run here with 2 threads differs from its 1-thread reference by 1.6e-4), input 2.5e-4,
# last layer 6.3e-5 (values up to 4.5), embedding 1.2e-6.
FOLDER = FIXTURES / "eat_tiny"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "eat_reference.npz"))


@pytest.mark.parametrize("clip", ["clip_a", "clip_b"])
def test_matches_the_original(clip: str, reference: dict) -> None:
    encoder = evar.load_encoder("eat", weights=str(FOLDER))
    wav = torch.from_numpy(reference[f"{clip}/wave"])[None]
    fbank = encoder.fbank(wav - wav.mean())[0].numpy()
    np.testing.assert_allclose(fbank, reference[f"{clip}/fbank"], atol=5e-3)
    above_floor = reference[f"{clip}/fbank"] > -10
    np.testing.assert_allclose(fbank[above_floor], reference[f"{clip}/fbank"][above_floor], atol=5e-4)
    with torch.no_grad():
        layers = encoder.backbone(encoder.features(wav))
    np.testing.assert_allclose(layers[0][0].numpy(), reference[f"{clip}/layer_0"], atol=2e-4)
    np.testing.assert_allclose(layers[-1][0].numpy(), reference[f"{clip}/features"], atol=2e-4)
    np.testing.assert_allclose(encoder.embed(wav)[0].numpy(), reference[f"{clip}/embedding"], atol=1e-5)


def test_frames_layers_and_batch(reference: dict) -> None:
    encoder = evar.load_encoder("eat", weights=str(FOLDER))
    a, b = reference["clip_a/wave"], reference["clip_b/wave"][:len(reference["clip_a/wave"])]
    batch = encoder.embed(torch.from_numpy(np.stack([a, b])))
    np.testing.assert_allclose(batch[0].numpy(), reference["clip_a/embedding"], atol=1e-5)  # alone = in a batch
    frames, timestamps = encoder.embed_frames(torch.from_numpy(a)[None])
    tokens = reference["clip_a/features"][1:].reshape(64, 8, -1).mean(axis=1)  # the 8 frequency patches per step
    np.testing.assert_allclose(frames[0].numpy(), tokens, atol=2e-4)
    np.testing.assert_allclose(timestamps[:2].numpy(), [0.0875, 0.2475], atol=1e-6)  # 16 frames of 10 ms, centred
    assert encoder.layers == ("layer1", "layer2") and len(encoder.forward_layers(torch.from_numpy(a)[None])) == 2
    assert encoder.config()["model_type"] == "eat" and encoder.weights_sha256


def test_strict_loading(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "eat"
    shutil.copytree(FOLDER, broken)
    state = load_file(str(broken / "model.safetensors"))
    del state["model.pre_norm.bias"]
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(EvarError, match=r"not a loadable EAT checkpoint \(missing \['pre_norm.bias'\]"):
        evar.load_encoder("eat", weights=str(broken))
    config = json.loads((FOLDER / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "model_type": "beats"}))
    with pytest.raises(EvarError, match="not an EAT configuration"):
        evar.load_encoder("eat", weights=str(broken))
    (broken / "model.safetensors").unlink()
    with pytest.raises(EvarError, match="holds config.json and model.safetensors"):
        evar.load_encoder("eat", weights=str(broken))
    with pytest.raises(EvarError, match="fetched from the Hugging Face hub"):
        evar.create_encoder("eat", allow_download=False)
