"""COLA: front end against the original TensorFlow code, the bilinear contrastive loss, weights, layers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import evar
from evar.encoders import get_encoder_spec
from evar.encoders.cola import (ColaEncoder, ColaLogMel, ColaModel, bilinear_similarity, contrastive_loss,
                                l2_normalise)
from evar.errors import EvarError
from evar.encoders.cola_pretrain import random_segment, save_encoder_weights

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "cola_frontend_reference.npz"
# Produced by tests/fixtures/cola_make_frontend_reference.py: google-research/google-research cola/data.py (0c1bbe5)
# run with TensorFlow 2.21 CPU. Bins far below their frame's peak amplify float32 FFT round-off (observed up to
# 7.5e-3 in the log near the 1e-5 clipping floor; TF itself is 1e-3 from float64 there); bins within 8 nats
# (~35 dB) of their frame's peak agree to 6.3e-5.
FLOOR_ATOL, ATOL, WITHIN_NATS = 1e-2, 1e-4, 8.0


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURE))


def _close_logmel(actual: torch.Tensor, expected: np.ndarray) -> None:
    actual = actual.numpy()
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=FLOOR_ATOL)
    loud = expected > expected.max(axis=-1, keepdims=True) - WITHIN_NATS
    np.testing.assert_allclose(actual[loud], expected[loud], atol=ATOL)


def test_frontend_matches_tensorflow(reference: dict) -> None:
    logmel = ColaLogMel()
    np.testing.assert_allclose(logmel.mel_fb.numpy(), reference["mel_matrix"], atol=1e-5)
    _close_logmel(logmel(torch.from_numpy(reference["long"][:16000])), reference["logmel_segment"])
    encoder = ColaEncoder("byola", d=64)
    for name in ("long", "short"):  # 0.98-s windows, end padding, per-window L2 norm
        wav = torch.from_numpy(reference[name])[None]
        _close_logmel(encoder.logmel(encoder._windows(wav)), reference[f"eval_logmel_{name}"])
    short = l2_normalise(torch.from_numpy(reference["short"]))  # pre-training crop of a short clip: centred padding
    segment = random_segment(short, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(segment.numpy(), reference["window_short"], atol=1e-7)


def test_bilinear_similarity_and_loss_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    p = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    w = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    logits = bilinear_similarity(a, p, w)  # s[i, j] = a_i^T W p_j
    torch.testing.assert_close(logits, torch.tensor([[2.0, 1.0], [3.0, 1.0]]))
    # row 0 targets column 0: log(1 + e^-1); row 1 targets column 1: log(1 + e^2)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(2))) / 2
    assert contrastive_loss(logits).item() == pytest.approx(expected, abs=1e-6)
    assert contrastive_loss(logits.T).item() != pytest.approx(expected, abs=1e-2)  # orientation matters


def test_model_logits_use_projection_and_bilinear() -> None:
    torch.manual_seed(0)
    model = ColaModel("byola", d=64).eval()
    a, p = torch.randn(3, 16000) * 0.05, torch.randn(3, 16000) * 0.05
    with torch.no_grad():
        za, zp = model.embed(a), model.embed(p)
        assert za.shape == (3, 512) and za.abs().max() <= 1.0  # tanh output
        torch.testing.assert_close(model(a, p), za @ model.bilinear @ zp.T, rtol=1e-5, atol=1e-5)


def test_no_weights_means_pretrain_first() -> None:
    assert get_encoder_spec("cola").weights is None and get_encoder_spec("cola_byola").weights is None
    with pytest.raises(EvarError, match=r"no official COLA weights.*evar pretrain cola --audio-dir"):
        evar.load_encoder("cola")
    with pytest.raises(EvarError, match="--backbone byola"):
        evar.load_encoder("cola_byola")


def test_weights_roundtrip_layers_and_fusion(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = ColaModel("byola", d=64)
    save_encoder_weights(model, tmp_path / "cola.safetensors", {"backbone": "byola"})
    torch.save({"model": model.state_dict()}, tmp_path / "cola.train.pt")  # a training checkpoint loads too
    wav = torch.randn(2, 20000) * 0.1  # two windows each, the second zero-padded
    reference = None
    for name in ("cola.safetensors", "cola.train.pt"):
        encoder = evar.load_encoder("cola_byola", weights=str(tmp_path / name))
        assert encoder.embed_dim == 64 and len(encoder.weights_sha256) == 64
        frames, timestamps = encoder.embed_frames(wav)
        assert frames.shape == (2, 2, 64)
        np.testing.assert_allclose(timestamps.numpy(), [0.49, 1.47], atol=1e-6)
        torch.testing.assert_close(encoder.embed(wav), frames.mean(dim=1))
        reference = frames if reference is None else reference
        torch.testing.assert_close(frames, reference)
    layers = encoder.forward_layers(wav)
    assert [t.shape for t in layers] == [(2, 2, 2048), (2, 2, 1024), (2, 2, 512), (2, 2, 64), (2, 2, 64)]
    fused = evar.load_encoder("cola_byola", weights=str(tmp_path / "cola.safetensors"), layers=["conv3", "fc2"])
    torch.testing.assert_close(fused.embed(wav), torch.cat([layers[2].mean(1), layers[4].mean(1)], dim=1))
    mean_max = evar.load_encoder("cola_byola", weights=str(tmp_path / "cola.safetensors"), pool="mean_max")
    torch.testing.assert_close(mean_max.embed(wav), frames.mean(1) + frames.max(1).values)


def test_wrong_weights_are_refused(tmp_path: Path) -> None:
    from evar.encoders.byola import AudioNTT2020

    torch.save(AudioNTT2020(d=512).state_dict(), tmp_path / "byola.pth")  # BYOL-A keys, not COLA's
    with pytest.raises(EvarError, match="not an evar COLA checkpoint"):
        evar.load_encoder("cola_byola", weights=str(tmp_path / "byola.pth"))
    save_encoder_weights(ColaModel("byola", d=64), tmp_path / "b.safetensors", {})
    with pytest.raises(EvarError, match="not a COLA efficientnet_b0 checkpoint"):
        evar.load_encoder("cola", weights=str(tmp_path / "b.safetensors"))
    with pytest.raises(EvarError, match="weights file not found"):
        evar.load_encoder("cola", weights=str(tmp_path / "missing.safetensors"))


def test_efficientnet_b0_backbone() -> None:
    torch.manual_seed(0)
    encoder = ColaEncoder("efficientnet_b0").eval()
    # the trainable parameters of Keras' EfficientNetB0(include_top=False, input_shape=(None, 64, 1)), TF 2.21
    assert sum(p.numel() for p in encoder.backbone.parameters()) == 4_006_972
    wav = torch.randn(1, 15680) * 0.1
    with torch.no_grad():
        layers = encoder.forward_layers(wav)
        assert [t.shape[-1] for t in layers] == [16, 24, 40, 80, 112, 192, 320, 1280]
        torch.testing.assert_close(encoder.embed(wav), layers[-1][:, 0])
    assert encoder.embed_dim == 1280


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda(tmp_path: Path) -> None:
    save_encoder_weights(ColaModel("byola", d=64), tmp_path / "c.safetensors", {})
    cpu = evar.load_encoder("cola_byola", weights=str(tmp_path / "c.safetensors"))
    gpu = evar.load_encoder("cola_byola", weights=str(tmp_path / "c.safetensors"), device="cuda")
    wav = torch.randn(1, 16000) * 0.1
    torch.testing.assert_close(gpu.embed(wav).cpu(), cpu.embed(wav), rtol=1e-4, atol=1e-4)
