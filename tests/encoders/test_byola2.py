"""BYOL-A v2: parity with the original v2 network run by EVAR's wrapper, checkpoint loading, layers.

The fixture ``tests/fixtures/byola2_reference.npz`` was produced by ``make_byola2_reference.py`` with
nttcslab/byol-a 3e65c9283498d06915e6dbcff3445307d8d3e930 (``v2/byol_a2/models.py``) and
nttcslab/eval-audio-repr 88ba7728896484b22e02187dedbb86fc61fc8177 (``evar/ar_byola2.py``,
``config/byola2.yaml``) from the deterministic checkpoint rebuilt here (see byola2_README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evar import EvarError, create_encoder
from evar.encoders.byola2 import BYOLA2_WEIGHTS
from evar.encoders.base import mean_max_pool
from fixture_support import FIXTURES, fixture_module

#: observed max |difference| 4.4e-5 on values up to 32 (float32, torch.stft vs nnAudio's conv STFT)
RTOL, ATOL = 1e-4, 5e-4


RECIPE = fixture_module("make_byola2_reference")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "byola2_reference.npz") as data:
        return dict(data)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The deterministic checkpoint in the official key format (a plain state_dict, as train_v2.py saves)."""
    path = tmp_path_factory.mktemp("byola2") / "AudioNTT2022-BYOLA-64x96d2048.pth"
    torch.save(RECIPE.deterministic_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def encoder(checkpoint: Path, reference):
    enc = create_encoder("byola2", weights=str(checkpoint))
    enc.set_stats(*reference["stats"])
    return enc


def test_matches_original(encoder, reference):
    for key in ("a", "b"):
        frames, _ = encoder.embed_frames(reference[f"wav_{key}"])
        np.testing.assert_allclose(frames[..., RECIPE.FRAME_DIMS].numpy(), reference[f"frames_{key}"],
                                   rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(encoder.embed(reference[f"wav_{key}"]).numpy(), reference[f"embed_{key}"],
                                   rtol=RTOL, atol=ATOL)


def test_frames_and_timestamps(encoder, reference):
    frames, seconds = encoder.embed_frames(reference["wav_a"])  # 2 s: 201 mel frames -> 50 output frames
    assert frames.shape == (2, 50, 3072) and encoder.embed_dim == 3072
    assert encoder.frame_hop_sec == pytest.approx(0.04)
    # frame k pools mel frames 4k..4k+3, centred at (4k + 1.5) * 10 ms
    np.testing.assert_allclose(seconds.numpy(), (np.arange(50) * 4 + 1.5) * 0.01, rtol=1e-6)
    conv, fc = frames[..., :1024], frames[..., 1024:]
    assert (conv >= 0).all() and (fc >= 0).all()  # both halves end in a ReLU


def test_checkpoint_keys_and_errors(checkpoint: Path, tmp_path: Path):
    state = RECIPE.deterministic_state_dict()
    enc = create_encoder("byola2", weights=str(checkpoint))
    assert set(enc.net.state_dict()) == set(state)  # no missing, no unexpected keys
    assert len(enc.weights_sha256) == 64 and enc.config()["weights_sha256"] == enc.weights_sha256
    prefixed = tmp_path / "body.pth"  # EVAR's load_pretrained_weights(model_key='body') accepts this form too
    torch.save({"state_dict": {f"body.{k}": v for k, v in state.items()}}, prefixed)
    torch.testing.assert_close(create_encoder("byola2", weights=str(prefixed)).net.state_dict(), enc.net.state_dict())
    v1_like = tmp_path / "v1.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.3")}, v1_like)
    with pytest.raises(EvarError, match="v1.pth: not a BYOL-A v2"):
        create_encoder("byola2", weights=str(v1_like))
    with pytest.raises(EvarError, match="AudioNTT2022-BYOLA-64x96d2048.pth"):
        create_encoder("byola2", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(EvarError, match="github.com/nttcslab/byol-a"):
        create_encoder("byola2", allow_download=False)
    official = BYOLA2_WEIGHTS
    assert official.url.endswith("/v2/AudioNTT2022-BYOLA-64x96d2048.pth") and official.sha256 is None


def test_layers_and_fusion(checkpoint: Path, encoder, reference):
    wav = torch.from_numpy(reference["wav_a"])
    layers = encoder.forward_layers(wav)
    assert [t.shape for t in layers] == [(2, 100, 2048), (2, 50, 1024), (2, 50, 2048), (2, 50, 2048)]
    fused = create_encoder("byola2", weights=str(checkpoint), layers=["conv2", "fc2"])
    fused.set_stats(*reference["stats"])
    assert fused.embed_dim == 3072
    frames, _ = encoder.embed_frames(wav)
    torch.testing.assert_close(fused.embed(wav), mean_max_pool(frames))  # conv2 + fc2 = the output frame
    by_index = create_encoder("byola2", weights=str(checkpoint), layers=[0, 3])
    assert by_index.embed_dim == 2048 + 2048


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda(checkpoint: Path, reference):
    enc = create_encoder("byola2", weights=str(checkpoint), device="cuda")
    enc.set_stats(*reference["stats"])
    np.testing.assert_allclose(enc.embed(reference["wav_b"]).cpu().numpy(), reference["embed_b"], rtol=1e-3, atol=2e-3)
