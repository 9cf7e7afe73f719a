"""BYOL-A v1: the real 512-d checkpoint against the original implementation (fixture), keys, layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import evar
from evar.encoders.base import LayerFusion
from evar.encoders.byola import AudioNTT2020, BYOLAEncoder
from evar.errors import EvarError
from evar.embeddings.stats import EvarRunningStats

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "byola512_reference.npz"
# Produced by tests/fixtures/make_byola_reference.py: nttcslab/eval-audio-repr 88ba772 (nnAudio 0.3.4 log-mel)
# + nttcslab/byol-a 3e65c92 AudioNTT2020Task6 with the real 512-d weights; see tests/fixtures/README.md.
# Tolerance: torch.stft vs nnAudio's conv STFT differ by ~1e-4 in the log-mel; values reach ~160.
RTOL, ATOL = 1e-4, 2e-3


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURE))


def test_real_checkpoint_matches_original(byola512_weights: Path, reference: dict) -> None:
    encoder = evar.load_encoder("byola", weights=str(byola512_weights))
    encoder.set_stats(*reference["stats"])
    for batch in ("a", "b"):
        wav = torch.from_numpy(reference[f"wav_{batch}"])
        np.testing.assert_allclose(encoder.features(wav).numpy(), reference[f"logmel_{batch}"], rtol=RTOL, atol=ATOL)
        frames, timestamps = encoder.embed_frames(wav)
        np.testing.assert_allclose(frames.numpy(), reference[f"frames_{batch}"], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(encoder.embed(wav).numpy(), reference[f"embed_{batch}"], rtol=RTOL, atol=ATOL)
        assert timestamps.shape == (frames.shape[1],)
        np.testing.assert_allclose(np.diff(timestamps.numpy()), 0.08, atol=1e-6)
    assert encoder.weights_sha256 == "6cc64226318494f06ef41d7e5810be7d37abfd6490da45abdab48f188c5332e2"


def test_evar_running_stats_quirk(reference: dict) -> None:
    """EVAR's running mean lets the second batch replace the first (values from EVAR's own code)."""
    a, b = torch.from_numpy(reference["logmel_a"]), torch.from_numpy(reference["logmel_b"])
    for batches, expected in (([a], "evar_stats_a"), ([a, b], "evar_stats_ab"), ([b, a], "evar_stats_ba")):
        stats = EvarRunningStats()
        for x in batches:
            stats.put(x)
        np.testing.assert_allclose(stats.result(), reference[expected], rtol=1e-5)


def test_official_keys_load_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "AudioNTT2020-BYOLA-64x96d1024.pth"
    torch.save(AudioNTT2020(d=1024).state_dict(), path)
    encoder = evar.load_encoder("byola1024", weights=str(path))
    assert encoder.embed(torch.zeros(1, 16000)).shape == (1, 1024)
    with pytest.raises(EvarError, match="not a BYOL-A d=512 checkpoint"):
        evar.load_encoder("byola", weights=str(path))


def test_layers_and_fusion(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(AudioNTT2020(d=512).state_dict(), path)
    fused = evar.load_encoder("byola", weights=str(path), layers=["conv3", "fc2"])
    plain = evar.load_encoder("byola", weights=str(path))
    for key, value in plain.state_dict().items():  # building the fusion leaves BatchNorm statistics alone
        torch.testing.assert_close(fused.encoder.state_dict()[key], value)
    assert fused.embed_dim == 512 + 512
    wav = torch.randn(2, 16000)
    base = fused.encoder
    layers = base.forward_layers(wav)
    expected = torch.cat([layers[2].mean(1) + layers[2].amax(1), layers[4].mean(1) + layers[4].amax(1)], dim=1)
    torch.testing.assert_close(fused.embed(wav), expected)
    mean_only = LayerFusion(base, ["conv3", "fc2"], pool="mean")
    torch.testing.assert_close(mean_only.embed(wav), torch.cat([layers[2].mean(1), layers[4].mean(1)], dim=1))
    assert [t.shape[-1] for t in layers] == [2048, 1024, 512, 512, 512]


def test_htk_convention_differs_from_evar() -> None:
    wav = torch.randn(1, 16000)
    evar_style, byola_style = BYOLAEncoder(mel="evar"), BYOLAEncoder(mel="byola")
    assert not torch.allclose(evar_style.features(wav), byola_style.features(wav))
    with pytest.raises(EvarError, match="unknown mel convention"):
        BYOLAEncoder(mel="kaldi")
