"""VGGish: parity with torchvggish and EVAR on deterministic official-format files, loading, fusion, devices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import evar
from evar.encoders import get_encoder_spec
from evar.encoders.base import LayerFusion, mean_max_pool
from evar.encoders.vggish import VGGishEncoder
from evar.errors import EvarError
from fixture_support import fixture_module, load_reference, save_like_2019

# Produced by tests/fixtures/vggish_make_reference.py (see tests/fixtures/vggish_README.md) from
# harritaylor/torchvggish f3f9096 (VGGish + vggish_input + Postprocessor), nttcslab/eval-audio-repr 88ba772
# (AR_VGGish, AR_VGGish_4K on tcvrick/audioset-vggish-tensorflow-to-pytorch a9c6319) and
# nttcslab/composing-general-audio-repr 41a0810 (AR_VGGish_Fusion, vggish_layers [9, 14]), with the files of
# vggish_checkpoint.py (seed 0). Observed max |diff|: log-mel 2e-6, frames/embeddings 8e-5 on values up to 57
# (float32 vs the originals' float64 front end); quantised PCA output identical.
RTOL, ATOL = 1e-4, 1e-3


RECIPE = fixture_module("vggish_checkpoint")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return load_reference("vggish_reference.npz")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, reference: dict) -> dict[str, Path]:
    """The two official files as torchvggish publishes them (2019 serialisation, numpy PCA arrays)."""
    folder = tmp_path_factory.mktemp("vggish")
    seed = int(reference["seed"])
    paths = {"vggish": folder / "vggish-10086976.pth", "pca": folder / "vggish_pca_params-970ea276.pth"}
    save_like_2019(RECIPE.make_official_state_dict(seed), paths["vggish"])
    save_like_2019(RECIPE.make_pca_params(seed), paths["pca"])
    return paths


@pytest.fixture(scope="module")
def fused(files: dict[str, Path]) -> evar.encoders.Encoder:
    return evar.create_encoder("vggish", weights=str(files["vggish"]), layers=[9, 14])


def _wav(reference: dict, batch: str) -> torch.Tensor:
    return torch.from_numpy(reference[f"wav_{batch}"])


def _close(actual: torch.Tensor, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual.detach().cpu().numpy(), expected, rtol=RTOL, atol=ATOL)


def test_recipe_has_the_official_keys(reference: dict) -> None:
    """The keys the originals' own modules have (torchvggish: embeddings.*, tcvrick/EVAR: fc.*)."""
    assert list(RECIPE.official_shapes()) == list(reference["keys_torchvggish"])
    assert list(RECIPE.official_shapes("fc")) == list(reference["keys_tcvrick"])


def test_embedding_matches_originals(fused, reference: dict) -> None:
    encoder = fused.encoder
    assert encoder.config()["weights_sha256"] == encoder.weights_sha256 is not None
    _close(encoder.features(_wav(reference, "b")), reference["examples_b"])
    for batch in "ab":
        wav = _wav(reference, batch)
        frames, timestamps = encoder.embed_frames(wav)
        _close(frames, reference[f"embedding_{batch}"])  # torchvggish, postprocess=False
        _close(frames, reference[f"evar_frames_{batch}"])  # EVAR's AR_VGGish.encode_frames
        _close(encoder.embed(wav), reference[f"evar_embed_{batch}"])  # EVAR mean_max
        n = reference[f"embedding_{batch}"].shape[1]
        np.testing.assert_allclose(timestamps.numpy(), 0.4875 + 0.96 * np.arange(n), atol=1e-6)


def test_pca_and_4k_match_originals(files: dict[str, Path], fused, reference: dict) -> None:
    pca = evar.create_encoder("vggish_pca", weights=str(files["vggish"]), pca_weights=str(files["pca"]))
    fourk = VGGishEncoder("fc1")  # what create_encoder("vggish_4k") builds, here without re-reading the file
    fourk.net.load_state_dict(fused.encoder.net.state_dict())
    assert (pca.embed_dim, fourk.embed_dim, get_encoder_spec("vggish_4k").embed_dim) == (128, 4096, 4096)
    for batch in "ab":
        wav = _wav(reference, batch)
        quantised = pca.embed_frames(wav)[0].numpy()
        diff = np.abs(quantised - reference[f"pca_{batch}"].astype(np.float32))
        assert diff.max() <= 1 and (diff > 0).mean() <= 0.01  # a rounding step may flip on another platform
        assert quantised.min() >= 0 and quantised.max() == 255  # some values clip at +2
        _close(fourk.embed(wav), reference[f"evar4k_embed_{batch}"])
    assert pca.config()["pca_sha256"] is not None


def test_fusion_10_15_matches_composing_gar(fused, reference: dict) -> None:
    """EUSIPCO 2022 VGGish-Fusion#10#15 = layers [9, 14]: relu3_2 + relu4_2, 6 frames per example, 8192-d."""
    assert fused.layers == ("relu3_2", "relu4_2") and fused.embed_dim == 8192
    sub = int(reference["fusion_sub"])
    frames, timestamps = fused.embed_frames(_wav(reference, "b"))
    assert frames.shape == (1, 6, 8192)
    _close(frames[..., ::sub], reference["fusion_frames_b"])
    np.testing.assert_allclose(fused.encoder.layer_timestamps(6).numpy(), 0.0875 + 0.16 * np.arange(6), atol=1e-6)
    for batch in "ab":
        frames, _ = fused.embed_frames(_wav(reference, batch))
        _close(mean_max_pool(frames), reference[f"fusion_embed_{batch}"])  # the original pools fused frames mean+max
    assert LayerFusion(fused.encoder, ["relu3_2", "relu4_2"]).embed_dim == 8192  # names work as well as indices


def test_fused_clip_embedding_is_the_originals(fused, reference: dict) -> None:
    _close(fused.embed(_wav(reference, "b")), reference["fusion_embed_b"])


def test_layer_names_and_sizes(fused) -> None:
    names = fused.encoder.layers
    assert len(names) == 22 and names[9] == "relu3_2" and names[14] == "relu4_2" and names[21] == "relu_fc2"
    dims = [t.shape[-1] for t in fused.encoder.forward_layers(torch.zeros(1, 16000))]
    assert dims[:16] == [4096, 4096, 2048, 4096, 4096, 2048, 4096, 4096, 4096, 4096, 2048, 4096, 4096, 4096, 4096, 2048]
    assert dims[16:] == [4096, 4096, 4096, 4096, 128, 128]


def test_tcvrick_naming_and_plain_save_load(tmp_path: Path, fused, reference: dict) -> None:
    """EVAR's pytorch_vggish.pth (fc.*) in torch's current zip format gives the same encoder."""
    state = {k.replace("embeddings.", "fc.", 1): v for k, v in fused.encoder.net.state_dict().items()}
    path = tmp_path / "pytorch_vggish.pth"
    torch.save(state, path)
    encoder = evar.create_encoder("vggish", weights=str(path))
    wav = _wav(reference, "b")
    torch.testing.assert_close(encoder.embed(wav), fused.encoder.embed(wav))


def test_clear_errors(tmp_path: Path, files: dict[str, Path]) -> None:
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(64, 1, 3, 3)}, wrong)
    with pytest.raises(EvarError, match="not a VGGish checkpoint"):
        evar.create_encoder("vggish", weights=str(wrong))
    with pytest.raises(EvarError, match="not a VGGish PCA file"):
        evar.create_encoder("vggish_pca", weights=str(files["vggish"]), pca_weights=str(wrong))
    with pytest.raises(EvarError, match="vggish-10086976.pth.*github.com/harritaylor/torchvggish"):
        evar.create_encoder("vggish", allow_download=False)
    with pytest.raises(EvarError, match="only to vggish_pca"):
        evar.create_encoder("vggish", weights=str(files["vggish"]), pca_weights=str(files["pca"]))


def test_short_clip_gives_one_example(fused) -> None:
    frames, timestamps = fused.encoder.embed_frames(torch.zeros(2, 8000))
    assert frames.shape == (2, 1, 128) and timestamps.shape == (1,)


def test_to_device(fused, reference: dict) -> None:
    """Buffers and parameters follow ``.to``; CUDA (when present) matches the CPU within TF32 rounding."""
    wav = _wav(reference, "b")
    expected = fused.encoder.embed(wav).numpy()
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        encoder = fused.encoder.to(device)
        assert {t.device.type for t in [*encoder.parameters(), *encoder.buffers()]} == {device}
        np.testing.assert_allclose(encoder.embed(wav).cpu().numpy(), expected, rtol=1e-2, atol=2e-2)
    fused.encoder.to("cpu")
