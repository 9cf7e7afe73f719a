"""``beats``: the re-implementation against microsoft/unilm's original BEATs code on the same checkpoints.

The reference (tests/fixtures/beats_reference.npz, fixtures/beats_README.md) is what unilm 732d834's ``BEATs``
(BEATs.py, backbone.py, modules.py unmodified; torchaudio 2.8.0's kaldi.py for the fbank) computed from
``beats_tiny.pt`` / ``beats_tiny_ft.pt``: tiny random checkpoints in the official ``{"cfg", "model"}`` layout
(2 layers of 64, DeepNorm, gated relative positions, 16 x 16 patches).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import evar
from evar.encoders.beats import load_beats
from evar.errors import EvarError
from evar.io import file_sha256
from fixture_support import FIXTURES, probe_smoke_tree

#: measured: 1.6e-5 on the fbank (float32 rounding of Kaldi's log), 2.1e-5 after the layers (values up to 5)
TOLERANCE = 1e-4
CHECKPOINT = FIXTURES / "beats_tiny.pt"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "beats_reference.npz"))


def per_step(tokens: np.ndarray) -> np.ndarray:
    """The original's time-major patch tokens (B, T*8, D) as evar's 160-ms steps (mean of 8 frequency patches)."""
    return tokens.reshape(tokens.shape[0], -1, 8, tokens.shape[2]).mean(axis=2)


@pytest.mark.parametrize("checkpoint", ["beats_tiny.pt", "beats_tiny_ft.pt"])
def test_frames_layers_and_clip_embedding_equal_the_original(checkpoint: str, reference) -> None:
    encoder = evar.create_encoder("beats", weights=str(FIXTURES / checkpoint))
    assert encoder.layers == ("embed", "layer1", "layer2") and encoder.embed_dim == 64
    for clip in ("clip_a", "clip_b"):
        wav = torch.from_numpy(reference[clip])[None]
        frames, times = encoder.embed_frames(wav)
        np.testing.assert_allclose(frames.numpy(), per_step(reference[f"{clip}.features"]), atol=TOLERANCE)
        # EVAR's AR_BEATs: the mean over every patch token of the last layer
        np.testing.assert_allclose(encoder.embed(wav).numpy(), reference[f"{clip}.features"].mean(axis=1),
                                   atol=TOLERANCE)
        with torch.no_grad():
            layers = encoder.forward_layers(wav)
        for layer, key in zip(layers, ("encoder_input", "layer_0", "layer_1")):
            np.testing.assert_allclose(layer.numpy(), per_step(reference[f"{clip}.{key}"]), atol=TOLERANCE)
        # frames every 160 ms, centred on their 16 fbank frames (25-ms windows every 10 ms)
        np.testing.assert_allclose(times.numpy(), 0.0875 + 0.16 * np.arange(frames.shape[1]), atol=1e-6)
    assert encoder.weights_sha256 == file_sha256(FIXTURES / checkpoint)


def test_the_checkpoint_is_loaded_strictly(tmp_path: Path) -> None:
    checkpoint = torch.load(CHECKPOINT, weights_only=True)
    broken = dict(checkpoint, model={k: v for k, v in checkpoint["model"].items() if "grep_a" not in k})
    torch.save(broken, tmp_path / "missing.pt")
    with pytest.raises(EvarError, match=r"not a BEATs checkpoint \(missing \['encoder.layers.0.self_attn.grep_a'"):
        load_beats(str(tmp_path / "missing.pt"))
    torch.save(checkpoint["model"], tmp_path / "flat.pt")
    with pytest.raises(EvarError, match="expected a dict with 'cfg' and 'model'"):
        load_beats(str(tmp_path / "flat.pt"))
    torch.save(dict(checkpoint, cfg={**checkpoint["cfg"], "layer_norm_first": True}), tmp_path / "prenorm.pt")
    with pytest.raises(EvarError, match="unsupported configuration"):
        load_beats(str(tmp_path / "prenorm.pt"))
    with pytest.raises(EvarError, match="BEATs_iter3.pt are not in"):
        evar.create_encoder("beats")  # the official file is a OneDrive share: pass it or put it in the cache


def test_too_short_audio_is_a_clear_error() -> None:
    encoder = evar.create_encoder("beats", weights=str(CHECKPOINT))
    with pytest.raises(EvarError, match="at least 16 fbank frames"):
        encoder.embed(np.zeros(2000, np.float32))


def test_probe_beats_on_the_smoke_tree(tmp_path: Path, evar_dirs: Path, capsys: pytest.CaptureFixture) -> None:
    row = probe_smoke_tree(tmp_path, evar_dirs / "results", "beats", "--weights", str(CHECKPOINT))
    assert "beats on esc50: accuracy" in capsys.readouterr().out
    assert row["weights_sha256"] == file_sha256(CHECKPOINT)
