"""MSM-MAE: a deterministic ViT-B checkpoint in the released format against the original runtime and its
EVAR wrapper (fixture), key loading, chunking edge cases, fusion, errors and devices.

The fixture tests/fixtures/msm_mae_reference.npz was produced by tests/fixtures/msm_mae_make_reference.py
with nttcslab/msm-mae f0c442f (msm_mae/runtime.py, to_evar/ar_msm_mae.py, to_evar/msm_mae.yaml; MAE files
of facebookresearch/mae 6a2ba40 patched per its README), nttcslab/eval-audio-repr 88ba772 (evar/ar_base.py),
timm 0.5.4 and nnAudio 0.3.4; see tests/fixtures/msm_mae_README.md. The checkpoint (seed 0) is regenerated
here with the same recipe.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from evar import create_encoder, list_encoders
from evar.encoders.msm_mae import MSMMAEEncoder
from evar.errors import EvarError
from evar.io import file_sha256
from fixture_support import fixture_module, load_reference

# torch.stft + transformers' Slaney mel bank vs nnAudio's conv STFT: observed log-mel max |diff| 2.4e-5
# (values to ~14); frames, embeddings and layer means (values to ~4) 1.0e-5.
ATOL_LOGMEL, ATOL = 5e-4, 1e-4


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return load_reference("msm_mae_reference.npz")


@pytest.fixture(scope="module")
def checkpoint() -> dict:
    return fixture_module("msm_mae_make_reference").msm_mae_checkpoint(0)


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory, checkpoint: dict) -> Path:
    path = tmp_path_factory.mktemp("msm") / "80x208p16x16_0422" / "checkpoint-100.pth"
    path.parent.mkdir()
    # as MAE's save_model writes it: the training arguments travel as an argparse.Namespace
    torch.save({**checkpoint, "args": argparse.Namespace(input_size="80x208", model="mae_vit_base_patch16x16")}, path)
    return path


@pytest.fixture(scope="module")
def encoder(released: Path, ref: dict) -> MSMMAEEncoder:
    encoder = create_encoder("msm_mae", weights=str(released))
    encoder.set_stats(*ref["stats"])
    return encoder


def test_registered() -> None:
    specs = {s.name: s for s in list_encoders()}
    assert {"msm_mae", "msm_mae_512", "msm_mae_paper"} <= set(specs)
    assert (specs["msm_mae"].sample_rate, specs["msm_mae"].embed_dim) == (16000, 3840)


def test_released_checkpoint_loads_every_encoder_key(encoder: MSMMAEEncoder, released: Path, checkpoint: dict) -> None:
    assert isinstance(encoder, MSMMAEEncoder) and encoder.weights_sha256 == file_sha256(released)
    state = encoder.backbone.state_dict()
    model = checkpoint["model"]
    encoder_keys = {k for k in model if not k.startswith(("decoder_", "mask_token"))}
    assert set(state) == encoder_keys and len(encoder_keys) == 4 + 12 * 13 + 2
    for key in ("cls_token", "pos_embed", "blocks.3.attn.q_bias", "blocks.11.attn.qkv.weight"):
        assert torch.equal(state[key], model[key])
    assert (encoder.unit_frames, encoder.backbone.grid, encoder.embed_dim) == (208, (5, 13), 3840)
    assert encoder.layers == tuple(f"block{i}" for i in range(1, 13))


def test_plain_state_dict_loads(tmp_path: Path, checkpoint: dict, encoder: MSMMAEEncoder) -> None:
    torch.save(checkpoint["model"], tmp_path / "plain.pth")
    plain = MSMMAEEncoder.from_checkpoint(tmp_path / "plain.pth")
    assert torch.equal(plain.backbone.blocks[5].mlp.fc1.weight, encoder.backbone.blocks[5].mlp.fc1.weight)


def test_matches_original_evar_wrapper(encoder: MSMMAEEncoder, ref: dict) -> None:
    step = int(ref["frame_dims_step"])
    wav_b = torch.from_numpy(ref["wav_b"])
    np.testing.assert_allclose(encoder.features(wav_b).numpy(), ref["logmel_b"], rtol=0, atol=ATOL_LOGMEL)
    # a: 2 x 1 s; b: 0.6 s; c: exactly one 208-frame chunk (the runtime pads a whole extra chunk, then
    # cuts it); d: 2.2 s, two chunks with the tail cut
    for key, n_frames in (("a", 7), ("b", 4), ("c", 13), ("d", 14)):
        wav = torch.from_numpy(ref[f"wav_{key}"])
        frames, timestamps = encoder.embed_frames(wav)
        assert frames.shape == (len(wav), n_frames, 3840)
        np.testing.assert_allclose(frames[..., ::step].numpy(), ref[f"frames_{key}"], rtol=0, atol=ATOL)
        np.testing.assert_allclose(encoder.pool(frames).numpy(), ref[f"embed_{key}"], rtol=0, atol=ATOL)
        # column t covers STFT frames 16t..16t+15 (centred STFT: frame k at 10k ms)
        np.testing.assert_allclose(timestamps.numpy(), 0.075 + 0.16 * np.arange(n_frames), atol=1e-6)
    np.testing.assert_allclose(encoder.embed(torch.from_numpy(ref["wav_a"])).numpy(), ref["embed_a"], rtol=0, atol=ATOL)


def test_layers_and_fusion(encoder: MSMMAEEncoder, released: Path, ref: dict) -> None:
    step = int(ref["layer_dims_step"])
    wav = torch.from_numpy(ref["wav_b"])
    with torch.no_grad():
        layers = encoder.forward_layers(wav)
    means = torch.stack([h.mean(1) for h in layers], 1)[..., ::step]
    np.testing.assert_allclose(means.numpy(), ref["layer_means_b"], rtol=0, atol=ATOL)
    fused = create_encoder("msm_mae", weights=str(released), layers=[4, 11])
    fused.set_stats(*ref["stats"])
    assert fused.layers == ("block5", "block12") and fused.embed_dim == 7680
    out = fused.embed(wav)
    np.testing.assert_allclose(out[:, :3840:step].numpy(), ref["layer_means_b"][:, 4], rtol=0, atol=ATOL)
    np.testing.assert_allclose(out[:, 3840::step].numpy(), ref["layer_means_b"][:, 11], rtol=0, atol=ATOL)


def test_batch_normalisation_matches_runtime_encode(released: Path, ref: dict) -> None:
    batch = MSMMAEEncoder.from_checkpoint(released, norm="batch")
    assert not batch.needs_stats
    out = batch.embed(torch.from_numpy(ref["wav_a"]))
    np.testing.assert_allclose(out.numpy(), ref["embed_batchnorm_a"], rtol=0, atol=ATOL)
    with pytest.raises(EvarError, match="takes no task statistics"):
        batch.set_stats(0.0, 1.0)


def test_fine_tuning_path_and_mean_max(encoder: MSMMAEEncoder, released: Path, ref: dict) -> None:
    wav = torch.from_numpy(ref["wav_d"])
    frames, _ = encoder.embed_frames(wav)
    with torch.no_grad():
        again, _ = encoder.forward_from_features(encoder.features(wav))
    np.testing.assert_allclose(again.numpy(), frames.numpy(), atol=1e-6)
    mean_max = MSMMAEEncoder.from_checkpoint(released, pooling="mean_max")
    mean_max.set_stats(*ref["stats"])
    np.testing.assert_allclose(mean_max.embed(wav).numpy(), (frames.mean(1) + frames.max(1).values).numpy(), atol=1e-5)


def _small(path: Path, grid: tuple[int, int], cls_token: bool) -> MSMMAEEncoder:
    torch.manual_seed(0)
    small = MSMMAEEncoder(embed_dim=64, depth=2, num_heads=1, grid=grid, cls_token=cls_token, mlp_hidden=128)
    torch.save({"model": small.backbone.state_dict()}, path)
    return small


def test_geometry_from_weights_and_device(tmp_path: Path) -> None:
    _small(tmp_path / "512.pth", (5, 32), cls_token=False)  # an 80x512 run without [CLS]
    small = MSMMAEEncoder.from_checkpoint(tmp_path / "512.pth")
    assert small.unit_frames == 512 and not small.backbone.use_cls_token and small.embed_dim == 320
    wav = torch.randn(2, 16000 * 6)  # 601 frames: two 512-frame chunks, tail cut
    frames, timestamps = small.embed_frames(wav)
    # 601 frames padded by 423 to two 512-frame chunks of 32 columns; int(32 * 423 / 512) = 26 cut
    assert frames.shape == (2, 38, 320) and timestamps.shape == (38,)
    cpu = small.embed(wav)
    assert small.to("cpu").device == torch.device("cpu")
    if torch.cuda.is_available():
        small.to("cuda")
        assert small.stats.device.type == "cuda"
        np.testing.assert_allclose(small.embed(wav).cpu().numpy(), cpu.numpy(), atol=1e-3)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(EvarError, match="msm_mae.*not in.*--weights PATH.*nttcslab/msm-mae/releases"):
        create_encoder("msm_mae")
    with pytest.raises(EvarError, match="weights file not found"):
        create_encoder("msm_mae", weights=str(tmp_path / "missing.pth"))
    torch.save({"model": {"features.0.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(EvarError, match="other.pth: not an MSM-MAE checkpoint"):
        MSMMAEEncoder.from_checkpoint(tmp_path / "other.pth")
    state = _small(tmp_path / "ok.pth", (5, 13), cls_token=True).backbone.state_dict()
    torch.save({**state, "pos_embed": torch.zeros(1, 64, 64)}, tmp_path / "bad_grid.pth")
    with pytest.raises(EvarError, match="does not fit 80 mel bins"):
        MSMMAEEncoder.from_checkpoint(tmp_path / "bad_grid.pth")
    torch.save({**state, "head.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(EvarError, match="unexpected.*head.weight"):
        MSMMAEEncoder.from_checkpoint(tmp_path / "extra.pth")
    with pytest.raises(EvarError, match="unknown MSM-MAE norm"):
        MSMMAEEncoder(norm="task")
