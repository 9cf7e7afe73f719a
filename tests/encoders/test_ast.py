"""AST: a deterministic checkpoint in the official key format against the original code (fixture),
the Hugging Face formats against transformers' own ASTModel, fusion layers, errors and devices.

The fixture tests/fixtures/ast_reference.npz was produced by tests/fixtures/ast_make_reference.py with
YuanGongND/ast 31088be (+ EVAR's external/ast_models.patch), nttcslab/eval-audio-repr 88ba772
(evar/ar_ast.py, config/ast.yaml), nttcslab/composing-general-audio-repr 41a0810 (ar_ast_ext.py),
timm 0.4.5 and torchaudio 2.11.0's compliance/kaldi.py; see tests/fixtures/ast_README.md. The checkpoint
(full-size DeiT-B/384 distilled, seed 0) is regenerated here with the same recipe.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evar import create_encoder, list_encoders
from evar.encoders.ast import AUDIOSET_STATS, ASTEncoder, convert_state_dict
from evar.encoders.base import LayerFusion
from evar.errors import EvarError
from evar.io import file_sha256
from fixture_support import fixture_module, load_reference

# Observed max |diff| vs the original (float32, values up to ~4): embed 9e-6, frames 1.4e-5, layers 1e-5.
ATOL = 1e-4


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return load_reference("ast_reference.npz")


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ast") / "audioset_10_10_0.4593.pth"
    torch.save(fixture_module("ast_make_reference").ast_checkpoint(0), path)
    return path


@pytest.fixture(scope="module")
def fused(official: Path, ref: dict) -> LayerFusion:
    """The EUSIPCO AST-Fusion#5#12 encoder built through the registry; ``.encoder`` is the plain AST."""
    fused = create_encoder("ast", weights=str(official), layers=list(ref["fusion_layers"]))
    fused.set_stats(*ref["stats"])
    return fused


def test_registered() -> None:
    spec = {s.name: s for s in list_encoders()}["ast"]
    assert (spec.sample_rate, spec.embed_dim, spec.weights.filename) == (16000, 768, "audioset_10_10_0.4593.pth")


def test_official_checkpoint_loads_every_key(official: Path, fused: LayerFusion) -> None:
    encoder = fused.encoder
    assert isinstance(encoder, ASTEncoder) and encoder.checkpoint_format == "ast"
    assert encoder.weights_sha256 == file_sha256(official)
    recipe = torch.load(official, weights_only=True, mmap=True)
    mapped, fmt, unused = convert_state_dict(recipe)
    assert fmt == "ast"
    assert sorted(unused) == sorted(["mlp_head.0.weight", "mlp_head.0.bias", "mlp_head.1.weight", "mlp_head.1.bias",
                                     "head.weight", "head.bias", "head_dist.weight", "head_dist.bias"])
    state = encoder.backbone.state_dict()
    assert set(mapped) == set(state)
    for key in ("pos_embed", "dist_token", "blocks.11.attn.qkv.weight", "norm.bias"):
        assert torch.equal(state[key], recipe[f"module.v.{key}"])
    assert encoder.backbone.grid == (12, 101) and len(encoder.layers) == 12


def test_matches_original_evar_pipeline(fused: LayerFusion, ref: dict) -> None:
    encoder = fused.encoder
    for batch in ("a", "b"):
        wav = torch.from_numpy(ref[f"wav_{batch}"])
        fbank = encoder.features(wav).numpy()
        if batch == "a":
            fbank = fbank[:, :: int(ref["fbank_a_step"])]
        # log fbank: float32 rounding near the eps floor reaches 4e-3 (see tests/test_kaldi.py)
        np.testing.assert_allclose(fbank, ref[f"fbank_{batch}"], rtol=0, atol=1e-2)
        with torch.no_grad():
            layers = torch.cat(encoder.forward_layers(wav), dim=1)
        np.testing.assert_allclose(layers.numpy(), ref[f"layers_{batch}"], rtol=0, atol=ATOL)
        # the last block's token mean is EVAR's embedding
        np.testing.assert_allclose(layers[:, -1].numpy(), ref[f"embed_{batch}"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(encoder.embed(torch.from_numpy(ref["wav_b"])).numpy(), ref["embed_b"], rtol=0, atol=ATOL)


def test_frames_and_timestamps(fused: LayerFusion, ref: dict) -> None:
    encoder = fused.encoder
    wav = torch.from_numpy(ref["wav_b"])
    # EVAR's encode_frames: the clip embedding as a single frame, at the middle of the patch span
    frames, timestamps = encoder.embed_frames(wav)
    assert frames.shape == (1, 1, 768)
    np.testing.assert_allclose(frames[:, 0].numpy(), ref["embed_b"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(timestamps.numpy(), [0.0875 + 0.1 * 4], atol=1e-6)
    # patch-column frames
    patches = ASTEncoder(pooling="mean").eval()
    patches.backbone.load_state_dict(encoder.backbone.state_dict())
    patches.set_stats(*ref["stats"])
    frames, timestamps = patches.embed_frames(wav)
    assert frames.shape == (1, 9, 768)  # 98 fbank frames -> (98 - 16) // 10 + 1 columns
    np.testing.assert_allclose(frames.numpy(), ref["frames_b"], rtol=0, atol=ATOL)
    # column t spans fbank frames 10t..10t+15, i.e. samples 1600t .. 1600t + 2800
    np.testing.assert_allclose(timestamps.numpy(), 0.0875 + 0.1 * np.arange(9), atol=1e-6)
    np.testing.assert_allclose(patches.embed(wav).numpy(), frames.mean(1).numpy(), atol=1e-6)
    # fine-tuning path: features -> forward_from_features gives the same frames
    with torch.no_grad():
        again, _ = patches.forward_from_features(patches.features(wav))
    np.testing.assert_allclose(again.numpy(), frames.numpy(), atol=1e-6)
    assert patches.feature_axes == (-1, -2)  # (B, time, frequency)


def test_fusion_5_12(fused: LayerFusion, ref: dict) -> None:
    assert fused.layers == ("block5", "block12") and fused.embed_dim == 1536
    out = fused.embed(torch.from_numpy(ref["wav_a"]))
    np.testing.assert_allclose(out.numpy(), ref["fusion_a"], rtol=0, atol=ATOL)
    assert fused.config()["fusion_layers"] == ["block5", "block12"]


def test_position_embedding_interpolated_like_ast(fused: LayerFusion, ref: dict) -> None:
    t_dim = (int(ref["pos_tdim"]) - 16) // 10 + 1
    rows = fused.encoder.backbone.pos_embed_for(12, t_dim)[0, ref["pos_rows"]]
    np.testing.assert_allclose(rows.detach().numpy(), ref["pos_embed_rows"], rtol=0, atol=1e-6)


def test_ast_preprocess_matches_original(fused: LayerFusion, ref: dict) -> None:
    """AST's own inference: fbank zero-padded to target_length (512 here, AST's ESC-50 recipe), AudioSet statistics."""
    assert ASTEncoder(preprocess="ast").target_length == 1024  # the AudioSet default
    encoder = ASTEncoder(preprocess="ast", target_length=int(ref["astmode_tdim"])).eval()
    encoder.backbone.load_state_dict(fused.encoder.backbone.state_dict())
    assert not encoder.needs_stats
    out = encoder.embed(torch.from_numpy(ref["wav_a"][:1]))
    np.testing.assert_allclose(out.numpy(), ref["embed_astmode_a0"], rtol=0, atol=ATOL)
    with pytest.raises(EvarError, match="AudioSet statistics"):
        encoder.set_stats(0.0, 1.0)


def _hf_model(tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(3)
    config = transformers.ASTConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                                    max_length=200, num_labels=5, layer_norm_eps=1e-6)
    model = transformers.ASTForAudioClassification(config).eval()
    with torch.no_grad():  # non-trivial tokens and norms (the defaults are zeros and ones)
        for name, p in model.named_parameters():
            if "token" in name or "position" in name or "layernorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "hf")
    return transformers, model


@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")  # HF's extractor, 128 Kaldi bins
def test_hugging_face_formats_match_transformers(tmp_path: Path, ref: dict) -> None:
    transformers, model = _hf_model(tmp_path)
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert saved["model_type"] == "audio-spectrogram-transformer"
    # the directory (legacy key names, as on the Hub), heads and strides read from config.json
    encoder = create_encoder("ast", weights=str(tmp_path / "hf"), preprocess="ast", target_length=200)
    assert encoder.checkpoint_format == "hf" and encoder.backbone.blocks[0].attn.num_heads == 4
    wav = torch.from_numpy(ref["wav_a"])
    features = encoder.features(wav)  # 198 frames, zero-padded to 200 and normalised with AudioSet stats
    spec = (torch.nn.functional.pad(features, (0, 0, 0, 2)) - AUDIOSET_STATS[0]) / (2 * AUDIOSET_STATS[1])
    with torch.no_grad():
        out = model.audio_spectrogram_transformer(spec, output_hidden_states=True)
        normed = [model.audio_spectrogram_transformer.layernorm(h) for h in out.hidden_states[1:]]
    np.testing.assert_allclose(encoder.embed(wav).numpy(), out.pooler_output.numpy(), rtol=0, atol=1e-5)
    with torch.no_grad():
        layers = encoder.forward_layers(wav)
    for mine, theirs in zip(layers, normed):
        np.testing.assert_allclose(mine[:, 0].numpy(), ((theirs[:, 0] + theirs[:, 1]) / 2).numpy(), atol=1e-5)
    # transformers >= 5 in-memory names (layers.N.attention.q_proj ...), no config.json: heads given
    torch.save(model.state_dict(), tmp_path / "t5.pth")
    other = ASTEncoder.from_checkpoint(tmp_path / "t5.pth", num_heads=4, preprocess="ast", target_length=200).eval()
    np.testing.assert_allclose(other.embed(wav).numpy(), out.pooler_output.numpy(), rtol=0, atol=1e-5)
    # the Hugging Face feature extractor (an independent Kaldi fbank) agrees with preprocess="ast"
    extractor = transformers.ASTFeatureExtractor(max_length=200)
    values = extractor(list(ref["wav_a"]), sampling_rate=16000, return_tensors="pt")["input_values"]
    np.testing.assert_allclose(values.numpy(), spec.numpy(), rtol=0, atol=5e-3)


def _small_plain(path: Path, **kw) -> ASTEncoder:
    torch.manual_seed(0)
    encoder = ASTEncoder(embed_dim=64, depth=2, num_heads=1, **kw)
    torch.save(encoder.backbone.state_dict(), path)
    return encoder


def test_plain_state_dict_and_device(tmp_path: Path) -> None:
    _small_plain(tmp_path / "plain.pth")
    encoder = ASTEncoder.from_checkpoint(tmp_path / "plain.pth").eval()
    assert encoder.checkpoint_format == "plain" and encoder.embed_dim == 64 and encoder.layers == ("block1", "block2")
    wav = torch.randn(2, 12000)
    cpu = encoder.embed(wav)
    assert encoder.to("cpu").device == torch.device("cpu")
    if torch.cuda.is_available():
        encoder.to("cuda")
        assert encoder.device.type == "cuda" and encoder.stats.device.type == "cuda"
        np.testing.assert_allclose(encoder.embed(wav).cpu().numpy(), cpu.numpy(), atol=1e-3)
        frames, timestamps = encoder.embed_frames(wav)
        assert frames.device.type == "cuda" and timestamps.shape == (frames.shape[1],)


def test_pooling_options(tmp_path: Path) -> None:
    _small_plain(tmp_path / "plain.pth")
    wav = torch.randn(2, 8000)
    mean = ASTEncoder.from_checkpoint(tmp_path / "plain.pth", pooling="mean").eval()
    frames, _ = mean.embed_frames(wav)
    assert frames.shape == (2, 4, 64)
    np.testing.assert_allclose(mean.embed(wav).numpy(), frames.mean(1).numpy(), atol=1e-6)
    mean_max = ASTEncoder.from_checkpoint(tmp_path / "plain.pth", pooling="mean_max").eval()
    np.testing.assert_allclose(mean_max.embed(wav).numpy(), (frames.mean(1) + frames.max(1).values).numpy(), atol=1e-6)
    with torch.no_grad():
        assert mean_max.forward_layers(wav)[0].shape == frames.shape
    fused = LayerFusion(mean_max, [0, 1])  # layers pool like the clip embedding
    np.testing.assert_allclose(fused.embed(wav)[:, 64:].numpy(), mean_max.embed(wav).numpy(), atol=1e-6)
    assert mean.config()["pooling"] == "mean" and mean.config()["preprocess"] == "evar"


def test_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EvarError, match="dropbox.*audioset_10_10_0.4593.pth"):
        create_encoder("ast", allow_download=False)
    with pytest.raises(EvarError, match="weights file not found"):
        create_encoder("ast", weights=str(tmp_path / "missing.pth"))
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(EvarError, match="other.pth: not an AST checkpoint"):
        ASTEncoder.from_checkpoint(tmp_path / "other.pth")
    state = _small_plain(tmp_path / "plain.pth").backbone.state_dict()
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(EvarError, match="unexpected.*extra.weight"):
        ASTEncoder.from_checkpoint(tmp_path / "extra.pth")
    del state["blocks.1.mlp.fc2.bias"]
    torch.save(state, tmp_path / "missing_key.pth")
    with pytest.raises(EvarError, match="missing.*blocks.1.mlp.fc2.bias"):
        ASTEncoder.from_checkpoint(tmp_path / "missing_key.pth")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(EvarError, match="no model.safetensors or pytorch_model.bin"):
        create_encoder("ast", weights=str(tmp_path / "empty_dir"))
    with pytest.raises(EvarError, match="unknown AST preprocess"):
        ASTEncoder(preprocess="hf")
    with pytest.raises(EvarError, match="at least 16 fbank frames"):
        ASTEncoder(embed_dim=64, depth=1, num_heads=1).embed(torch.zeros(1, 2000))
