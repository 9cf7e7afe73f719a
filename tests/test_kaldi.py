"""evar.frontends.kaldi against torchaudio's compliance.kaldi.fbank (reference outputs in tests/fixtures/ast_reference.npz).

The reference came from torchaudio 2.11.0's pure-python ``compliance/kaldi.py`` (loaded from the
unpacked wheel, see tests/fixtures/ast_README.md), float32, on the fixture's generated 1 s clip.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from evar.errors import EvarError
from evar.frontends.kaldi import KaldiFbank, kaldi_mel_banks, kaldi_mel_scale
from fixture_support import load_reference


# the same settings as KALDI_CASES in tests/fixtures/ast_make_reference.py, in evar.frontends.kaldi's terms
CASES = {
    "ast": dict(num_mel_bins=128, window="hanning"),
    "povey80": dict(num_mel_bins=80, window="povey"),
    "hamming64": dict(num_mel_bins=64, window="hamming", low_freq=64.0, high_freq=-400.0,
                      preemphasis=0.0, remove_dc_offset=False, use_power=False),
}


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return load_reference("ast_reference.npz")


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torchaudio_kaldi(ref: dict[str, np.ndarray], name: str) -> None:
    out = KaldiFbank(**CASES[name])(torch.from_numpy(ref["wav_b"]))
    expected = ref[f"kaldi_{name}"]
    assert out.shape == (1, *expected.shape)
    # float32 log values: observed max |diff| 1.7e-4; 1e-3 allows other BLAS/FFT back ends
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=0, atol=1e-3)


def test_ast_fbank_of_batch_matches_per_clip_reference(ref: dict[str, np.ndarray]) -> None:
    """EVAR's AST front end (mean removed, then fbank per clip) equals the batched module."""
    wav = torch.from_numpy(ref["wav_a"])
    out = KaldiFbank()(wav - wav.mean(dim=1, keepdim=True)).numpy()
    assert out.shape == (2, 198, 128)
    out, expected = out[:, :: int(ref["fbank_a_step"])], ref["fbank_a"]
    # near-silent bins (log values near the float32-eps floor, -15.9) carry float32 rounding:
    # torchaudio's own float32 result differs from its float64 one by 3.4e-3 there
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-2)
    assert np.median(np.abs(out - expected)) < 1e-5


def test_frame_count_and_centres() -> None:
    fbank = KaldiFbank()
    assert [fbank.num_frames(n) for n in (399, 400, 559, 560, 16000)] == [0, 1, 1, 2, 98]
    assert fbank(torch.zeros(3, 16000)).shape == (3, 98, 128)
    assert fbank.frame_centre_sec(0) == pytest.approx(0.0125)
    assert fbank.frame_centre_sec(10) == pytest.approx(0.1125)


def test_silence_hits_the_epsilon_floor() -> None:
    out = KaldiFbank()(torch.zeros(1, 800))
    assert torch.allclose(out, torch.full_like(out, float(np.log(np.finfo(np.float32).eps))))


def test_mel_banks_are_kaldi_triangles() -> None:
    banks = kaldi_mel_banks(23, 512, 16000, 20.0, 0.0)
    assert banks.shape == (23, 257)
    assert torch.all(banks[:, -1] == 0) and torch.all(banks >= 0) and torch.all(banks <= 1)
    # the first filter starts at 20 Hz: bins below it are zero
    assert torch.all(banks[:, 0] == 0)
    assert kaldi_mel_scale(700.0) == pytest.approx(1127.0 * np.log(2.0))


def test_errors_are_clear() -> None:
    with pytest.raises(EvarError, match="shorter than one 400-sample window"):
        KaldiFbank()(torch.zeros(1, 399))
    with pytest.raises(EvarError, match="unknown Kaldi window 'hann'"):
        KaldiFbank(window="hann")
    with pytest.raises(EvarError, match="low_freq < high_freq"):
        KaldiFbank(low_freq=9000.0)


def test_follows_module_device() -> None:
    fbank = KaldiFbank().to(torch.float64)  # buffers follow .to(); float64 input then computes in float64
    assert fbank.window.dtype == torch.float64
    out = fbank(torch.randn(1, 4000, dtype=torch.float64))
    assert out.dtype == torch.float64
    if torch.cuda.is_available():
        wav = torch.randn(2, 8000)
        np.testing.assert_allclose(KaldiFbank().cuda()(wav.cuda()).cpu().numpy(), KaldiFbank()(wav).numpy(), atol=1e-3)
