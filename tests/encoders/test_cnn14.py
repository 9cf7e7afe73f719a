"""PANNs CNN14: parity with PANNs and EVAR on deterministic official-format checkpoints, loading, fusion, devices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import evar
from evar.encoders.base import LayerFusion, mean_max_pool
from evar.encoders.cnn14 import Cnn14Encoder
from evar.errors import EvarError
from fixture_support import fixture_module, load_reference, save_like_2019

# Produced by tests/fixtures/cnn14_make_reference.py (see tests/fixtures/cnn14_README.md) from
# qiuqiangkong/audioset_tagging_cnn d2f4b8c (Cnn14 with torchlibrosa 0.1.0 / librosa 0.11.0 front end),
# nttcslab/eval-audio-repr 88ba772 (AR_Cnn14 with daisukelab/sound-clf-pytorch 85105ca cnn14_decoupled.py) and
# nttcslab/composing-general-audio-repr 41a0810 (AR_Cnn14_Fusion, cnn14_layers [3, 6]), with the checkpoints of
# cnn14_checkpoint.py (seed 0). Observed max |diff|: log-mel 6e-5 dB on values up to 50, embeddings 3e-5,
# fused embeddings 5e-4 on values up to 50 (torch.stft vs torchlibrosa's conv STFT, summation order).
RTOL, ATOL = 1e-4, 2e-3


RECIPE = fixture_module("cnn14_checkpoint")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return load_reference("cnn14_reference.npz")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, reference: dict) -> dict[str, Path]:
    """16 kHz: the official container as PANNs saved it in 2020 (legacy format, numpy sampler state);
    32 kHz: a plain ``model`` state_dict in torch's current format."""
    folder = tmp_path_factory.mktemp("cnn14")
    seed = int(reference["seed"])
    paths = {"cnn14": folder / "Cnn14_16k_mAP=0.438.pth", "cnn14_32k": folder / "Cnn14_mAP=0.431.pth"}
    state = RECIPE.make_official_state_dict("cnn14", reference["melW_cnn14"], seed)
    save_like_2019(RECIPE.official_container(state), paths["cnn14"])
    torch.save(RECIPE.make_official_state_dict("cnn14_32k", reference["melW_cnn14_32k"], seed), paths["cnn14_32k"])
    return paths


@pytest.fixture(scope="module")
def fused(files: dict[str, Path]) -> evar.encoders.Encoder:
    return evar.create_encoder("cnn14", weights=str(files["cnn14"]), layers=[2, 5])


def _wav(reference: dict, batch: str) -> torch.Tensor:
    return torch.from_numpy(reference[f"wav_{batch}"])


def _close(actual: torch.Tensor, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual.detach().cpu().numpy(), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("variant", ["cnn14", "cnn14_32k"])
def test_recipe_has_the_official_keys(reference: dict, variant: str) -> None:
    """PANNs' own Cnn14 has exactly these keys; the recipe's DFT kernels equal torchlibrosa's."""
    assert list(RECIPE.official_shapes(variant)) == list(reference[f"keys_{variant}"])
    assert float(reference[f"kernel_diff_{variant}"]) < 1e-6


def test_16k_matches_panns_and_evar(fused, reference: dict) -> None:
    encoder = fused.encoder
    assert encoder.sample_rate == 16000 and encoder.weights_sha256 is not None
    _close(encoder.features(_wav(reference, "b")), reference["logmel_b"])
    for batch in "ab":
        wav = _wav(reference, batch)
        embedding = encoder.embed(wav)
        _close(embedding, reference[f"panns_embed_{batch}"])  # PANNs' output_dict["embedding"]
        _close(embedding, reference[f"evar_embed_{batch}"])  # EVAR's AR_Cnn14.forward
        _close(encoder.audioset_probs(wav), reference[f"panns_clipwise_{batch}"])
    frames, timestamps = encoder.embed_frames(_wav(reference, "b"))
    _close(frames, reference["evar_frames_b"])  # EVAR's encode_frames (B, 2048, T') transposed
    np.testing.assert_allclose(timestamps.numpy(), [0.155, 0.475, 0.795], atol=1e-6)


def test_32k_plain_state_dict_matches_panns(files: dict[str, Path], reference: dict) -> None:
    encoder = evar.create_encoder("cnn14_32k", weights=str(files["cnn14_32k"]))
    wav = _wav(reference, "c")
    assert encoder.sample_rate == 32000 and encoder.config()["f_max"] == 14000
    _close(encoder.features(wav), reference["logmel_c"])
    frames, timestamps = encoder.embed_frames(wav)
    assert timestamps.shape == (frames.shape[1],) == (3,)
    with torch.no_grad():
        embedding = encoder.pool(frames)
    _close(embedding, reference["panns_embed_c"])
    _close(embedding, reference["evar_embed_c"])
    _close(encoder.audioset_probs(wav), reference["panns_clipwise_c"])


def test_fusion_3_6_matches_composing_gar(fused, reference: dict) -> None:
    """EUSIPCO 2022 CNN14-Fusion#3#6 = blocks 3 and 6 (1-indexed) = layers [2, 5]: 2048 + 4096 = 6144-d."""
    assert fused.layers == ("block3", "block6") and fused.embed_dim == 6144
    assert LayerFusion(fused.encoder, ["block3", "block6"]).embed_dim == 6144
    sub = int(reference["fusion_sub"])
    frames, timestamps = fused.embed_frames(_wav(reference, "b"))
    assert frames.shape == (1, 3, 6144)
    _close(frames[..., ::sub], reference["fusion_frames_b"])
    np.testing.assert_allclose(timestamps.numpy(), [0.155, 0.475, 0.795], atol=1e-6)
    for batch in "ab":
        frames, _ = fused.embed_frames(_wav(reference, batch))
        _close(mean_max_pool(frames), reference[f"fusion_embed_{batch}"])  # the original pools fused frames mean+max


def test_fused_clip_embedding_is_the_originals(fused, reference: dict) -> None:
    _close(fused.embed(_wav(reference, "b")), reference["fusion_embed_b"])


def test_block_sizes(fused) -> None:
    layers = fused.encoder.forward_layers(torch.zeros(2, 16000))
    assert [tuple(t.shape) for t in layers] == [(2, 3, 2048)] * 5 + [(2, 3, 4096)]


def test_clear_errors(tmp_path: Path, reference: dict) -> None:
    frontend = ("spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
                "logmel_extractor.melW")

    def save(variant: str, mel_scale: float = 1.0, extra: dict | None = None) -> Path:
        real, imag = RECIPE.frontend_kernels(RECIPE.N_FFT[variant])
        mel = torch.from_numpy(reference[f"melW_{variant}"] * mel_scale)
        path = tmp_path / f"{variant}_{mel_scale}.pth"
        torch.save({"model": dict(zip(frontend, (real, imag, mel))) | (extra or {})}, path)
        return path

    with pytest.raises(EvarError, match="front end.*use cnn14_32k"):
        evar.create_encoder("cnn14", weights=str(save("cnn14_32k")))
    with pytest.raises(EvarError, match="front end"):
        Cnn14Encoder("cnn14").load_checkpoint(save("cnn14", mel_scale=1.01))
    not_cnn14 = r"not a PANNs CNN14 \(cnn14\) checkpoint \(missing \['bn0.bias'.*unexpected \['x'\]"
    with pytest.raises(EvarError, match=not_cnn14):
        Cnn14Encoder("cnn14").load_checkpoint(save("cnn14", extra={"x": torch.zeros(1)}))
    with pytest.raises(EvarError, match="zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth"):
        evar.create_encoder("cnn14", allow_download=False)


def test_short_clip_is_padded_to_one_frame(fused) -> None:
    frames, timestamps = fused.encoder.embed_frames(torch.zeros(1, 3000))
    assert frames.shape == (1, 1, 2048) and timestamps.shape == (1,)


def test_to_device(fused, reference: dict) -> None:
    """Buffers and parameters follow ``.to``; CUDA (when present) matches the CPU within TF32 rounding."""
    wav = _wav(reference, "b")
    expected = fused.encoder.embed(wav).numpy()
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        encoder = fused.encoder.to(device)
        assert {t.device.type for t in [*encoder.parameters(), *encoder.buffers()]} == {device}
        np.testing.assert_allclose(encoder.embed(wav).cpu().numpy(), expected, rtol=1e-2, atol=2e-2)
    fused.encoder.to("cpu")
