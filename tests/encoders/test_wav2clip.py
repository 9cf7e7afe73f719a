"""Wav2CLIP: parity with the original package on a deterministic official-format checkpoint, loading, layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import evar
from evar.encoders.wav2clip import Wav2CLIPEncoder
from evar.errors import EvarError
from evar.encoders.base import mean_max_pool
from fixture_support import FIXTURES, fixture_module

# Produced by tests/fixtures/wav2clip_make_reference.py from descriptinc/lyrebird-wav2clip 1864b39 (wav2clip 0.1.0,
# torchaudio 2.11 pure-Python Spectrogram, librosa 0.9.2 framing) with the checkpoint of wav2clip_checkpoint.py.
# Observed max |diff| 1.7e-5 on values up to ~150 (summation order only).
RTOL, ATOL = 1e-5, 5e-4


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "wav2clip_reference.npz"))


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / "Wav2CLIP.pt"
    torch.save(fixture_module("wav2clip_checkpoint").make_official_state_dict(seed=0), path)
    return path


def _close(actual: torch.Tensor, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual.numpy(), expected, rtol=RTOL, atol=ATOL)


def _close_power(log_spec: torch.Tensor, expected_log: np.ndarray) -> None:
    """Compare log(power + 1e-7) where it is well conditioned: as power spectra, with an absolute tolerance
    scaled to the peak power (in bins of almost no energy the log turns float32 rounding into 1e-3 errors)."""
    power = np.exp(log_spec.double().numpy()) - 1e-7
    expected = np.exp(expected_log.astype(np.float64)) - 1e-7
    np.testing.assert_allclose(power, expected, rtol=1e-4, atol=1e-5 * expected.max())  # observed 4.8e-7 x peak


def test_matches_original(official: Path, reference: dict) -> None:
    wav_a, wav_b = torch.from_numpy(reference["wav_a"]), torch.from_numpy(reference["wav_b"])
    per_clip = evar.load_encoder("wav2clip", weights=str(official), frame_hop=4000)
    _close_power(per_clip.encoder.log_spectrogram(wav_a), reference["logspec_a"])
    _close(per_clip.embed(wav_a), reference["proj_single_a"])
    _close(per_clip.embed(wav_b), reference["proj_single_b"])
    frames, timestamps = per_clip.embed_frames(wav_b)
    _close(frames, reference["frames_single_b"])
    np.testing.assert_allclose(timestamps.numpy(), [0.5, 0.75, 1.0])

    batched = evar.load_encoder("wav2clip", weights=str(official), norm="batch", frame_hop=4000)
    _close(batched.embed(wav_a), reference["proj_batch_a"])
    _close(batched.embed_frames(wav_a)[0], reference["frames_batch_a"])

    encoder_out = evar.load_encoder("wav2clip_encoder", weights=str(official))
    _close(encoder_out.embed(wav_a), reference["enc_single_a"])
    batched_encoder = evar.load_encoder("wav2clip_encoder", weights=str(official), norm="batch")
    _close(batched_encoder.embed(wav_a), reference["enc_batch_a"])


def test_clip_norm_is_batch_independent(official: Path, reference: dict) -> None:
    encoder = evar.load_encoder("wav2clip", weights=str(official))
    wav_a = torch.from_numpy(reference["wav_a"])
    torch.testing.assert_close(encoder.embed(wav_a)[1:], encoder.embed(wav_a[1:]), rtol=1e-5, atol=1e-4)
    # the original's batch statistics change the result a lot: the two modes must really differ
    assert np.abs(reference["proj_batch_a"] - reference["proj_single_a"]).max() > 1.0


def test_official_keys_and_plain_state_dict(official: Path, reference: dict, tmp_path: Path) -> None:
    state = torch.load(official, weights_only=True)
    assert sorted(state) == list(reference["official_keys"])
    encoder = Wav2CLIPEncoder()
    encoder.load_checkpoint(official)  # raises on any missing/unexpected audio_* key
    assert len(encoder.weights_sha256) == 64
    # the state_dict of the original get_model() module: encoder.* / transform.* keys
    plain = {k.replace("audio_encoder.", "encoder.").replace("audio_transform.", "transform."): v
             for k, v in state.items() if k.startswith("audio_")}
    torch.save(plain, tmp_path / "plain.pt")
    other = Wav2CLIPEncoder()
    other.load_checkpoint(tmp_path / "plain.pt")
    wav = torch.from_numpy(reference["wav_b"])
    torch.testing.assert_close(other.embed(wav), encoder.embed(wav))


def test_bad_checkpoints(official: Path, tmp_path: Path) -> None:
    state = torch.load(official, weights_only=True)
    del state["audio_transform.sequential.3.bias"]
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(EvarError, match="not a Wav2CLIP checkpoint.*sequential.3.bias"):
        Wav2CLIPEncoder().load_checkpoint(tmp_path / "cut.pt")
    torch.save(Wav2CLIPEncoder(), tmp_path / "module.pt")  # a pickled module is never unpickled
    with pytest.raises(EvarError, match="cannot load as a safe checkpoint"):
        Wav2CLIPEncoder().load_checkpoint(tmp_path / "module.pt")


def test_missing_weights_say_where_to_get_them() -> None:
    with pytest.raises(EvarError, match="releases/download/v0.1.0-alpha/Wav2CLIP.pt"):
        evar.load_encoder("wav2clip", allow_download=False)
    with pytest.raises(EvarError, match="unknown Wav2CLIP normalisation"):
        Wav2CLIPEncoder(norm="global")


def test_layers_fusion_and_short_clips(official: Path) -> None:
    encoder = evar.load_encoder("wav2clip", weights=str(official))
    wav = torch.randn(2, 8000) * 0.1
    layers = encoder.forward_layers(wav)
    assert [t.shape[-1] for t in layers] == [64, 128, 256, 512, 512, 512]
    torch.testing.assert_close(layers[-1][:, 0], encoder.embed(wav), rtol=1e-5, atol=1e-4)
    fused = evar.load_encoder("wav2clip", weights=str(official), layers=["layer4", "embedding"])
    assert fused.embed_dim == 1024
    expected = torch.cat([mean_max_pool(layers[3]), mean_max_pool(layers[4])], dim=1)  # fusion pools mean+max
    torch.testing.assert_close(fused.embed(wav), expected, rtol=1e-5, atol=1e-4)
    frames, timestamps = encoder.embed_frames(wav)  # 0.5 s < one 1-s window: zero-padded to it
    assert frames.shape == (2, 1, 512) and timestamps.tolist() == [0.5]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda(official: Path, reference: dict) -> None:
    encoder = evar.load_encoder("wav2clip", weights=str(official), device="cuda")
    _close(encoder.embed(torch.from_numpy(reference["wav_a"])).cpu(), reference["proj_single_a"])


def tiny_clip_text_folder(folder: Path) -> Path:
    """A CLIP text tower (random weights, 512-d projection) and a character-level CLIP tokenizer, saved as
    transformers saves ``openai/clip-vit-base-patch32``."""
    import json
    import string

    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    vocab = {}
    for char in [*string.ascii_lowercase, *string.digits, "'", ","]:
        vocab[char], vocab[char + "</w>"] = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=77, projection_dim=512,
                            bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                            pad_token_id=vocab["<|endoftext|>"])
    CLIPTextModelWithProjection(config).eval().save_pretrained(folder)
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    return folder


def test_text_tower_is_clips(official: Path, tmp_path: Path) -> None:
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    folder = tiny_clip_text_folder(tmp_path / "clip")
    encoder = evar.load_encoder("wav2clip", weights=str(official), text_weights=str(folder))
    texts = ["dog can be heard", "rain"]
    text = encoder.embed_text(texts)
    tokens = CLIPTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = CLIPTextModelWithProjection.from_pretrained(folder)(**tokens).text_embeds
    torch.testing.assert_close(text, expected / expected.norm(dim=-1, keepdim=True), rtol=0, atol=1e-6)
    alone = encoder.embed_text(["rain"])  # padding in a batch changes nothing (attention mask, EOS pooling)
    torch.testing.assert_close(alone[0], text[1], rtol=0, atol=1e-5)
    assert text.shape == (2, 512) and encoder.embed(torch.zeros(1, 16000)).shape == (1, 512)
    with pytest.raises(EvarError, match="not in CLIP's space"):
        evar.load_encoder("wav2clip_encoder", weights=str(official), text_weights=str(folder)).embed_text(texts)
    with pytest.raises(EvarError, match="no such folder"):
        evar.load_encoder("wav2clip", weights=str(official), text_weights=str(tmp_path / "nowhere")).embed_text(texts)
