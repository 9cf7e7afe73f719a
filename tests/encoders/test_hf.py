"""The ``hf:`` encoder: tiny random transformers models written with ``save_pretrained`` (offline), compared with
transformers' own feature extractor and model on the same audio, as EVAR's wrappers call them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import evar
from evar.cli import main
from evar.errors import EvarError
from evar.synth.trees import make_esc50_tree

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16),
            conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
WAVE_MODELS = ("wav2vec2", "hubert", "wavlm", "data2vec")
#: the largest difference allowed between evar's output and transformers' own on the same input (float32 rounding)
TOLERANCE = 1e-5


def _save_wave_model(kind: str, folder: Path, ctc: bool = False) -> Path:
    from transformers import (
        Data2VecAudioConfig, Data2VecAudioModel, HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC, Wav2Vec2Model, WavLMConfig, WavLMModel,
    )

    config_cls, model_cls = {"wav2vec2": (Wav2Vec2Config, Wav2Vec2ForCTC if ctc else Wav2Vec2Model),
                             "hubert": (HubertConfig, HubertModel), "wavlm": (WavLMConfig, WavLMModel),
                             "data2vec": (Data2VecAudioConfig, Data2VecAudioModel)}[kind]
    torch.manual_seed(0)
    model_cls(config_cls(**TINY, **({"vocab_size": 12} if ctc else {}))).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(folder)
    return folder


def _save_whisper(folder: Path) -> Path:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    config = WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                           max_source_positions=1500, max_target_positions=32, vocab_size=100, pad_token_id=1,
                           bos_token_id=2, eos_token_id=3, decoder_start_token_id=2)
    WhisperModel(config).eval().save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    made = {kind: _save_wave_model(kind, root / kind) for kind in WAVE_MODELS}
    made["wav2vec2_ctc"] = _save_wave_model("wav2vec2", root / "ctc", ctc=True)
    made["whisper"] = _save_whisper(root / "whisper")
    return made


def _audio(n: int, seed: int, clips: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, (clips, n)).astype(np.float32)


@pytest.mark.parametrize("kind", WAVE_MODELS)
def test_wave_models_equal_transformers_on_the_feature_extractors_input(folders, kind: str) -> None:
    """EVAR's call: processor(batch) → model(..., output_hidden_states=True).hidden_states[-1], mean over time."""
    from transformers import AutoFeatureExtractor, AutoModel

    wav = _audio(16000, 1)
    extractor = AutoFeatureExtractor.from_pretrained(folders[kind])
    model = AutoModel.from_pretrained(folders[kind]).eval()
    with torch.no_grad():
        inputs = extractor(list(wav), sampling_rate=16000, return_tensors="pt").input_values
        states = model(inputs, output_hidden_states=True).hidden_states
    encoder = evar.create_encoder(f"hf:{folders[kind]}")
    frames, times = encoder.embed_frames(wav)
    assert torch.allclose(frames, states[-1], atol=TOLERANCE, rtol=0)
    assert torch.allclose(encoder.embed(wav), states[-1].mean(dim=1), atol=TOLERANCE, rtol=0)
    # stride 5*4 = 20 samples, receptive field 10 + (8-1)*5 = 45 samples: centres at (20 j + 22.5) / 16 kHz
    assert times[:2].tolist() == pytest.approx([22.5 / 16000, 42.5 / 16000])
    assert encoder.layers == ("embed", "layer1", "layer2") and len(encoder.forward_layers(torch.from_numpy(wav))) == 3
    assert encoder.config()["model_type"] == model.config.model_type and len(encoder.weights_sha256) == 64


def test_feature_and_logit_outputs_and_layer_fusion(folders) -> None:
    from transformers import Wav2Vec2ForCTC

    wav = _audio(8000, 2)
    model = Wav2Vec2ForCTC.from_pretrained(folders["wav2vec2_ctc"]).eval()
    inputs = torch.from_numpy((wav - wav.mean(1, keepdims=True)) / np.sqrt(wav.var(1, keepdims=True) + 1e-7))
    with torch.no_grad():
        logits = model(inputs).logits
        conv = model.wav2vec2.feature_extractor(inputs).transpose(1, 2)
    logit_encoder = evar.create_encoder(f"hf:{folders['wav2vec2_ctc']}", output="logits")
    assert logit_encoder.embed_dim == 12
    assert torch.allclose(logit_encoder.embed_frames(wav)[0], logits, atol=TOLERANCE, rtol=0)
    feature = evar.create_encoder(f"hf:{folders['wav2vec2_ctc']}", output="feature", pooling="mean_max")
    assert feature.embed_dim == 16
    assert torch.allclose(feature.embed(wav), conv.mean(1) + conv.max(1).values, atol=TOLERANCE, rtol=0)
    stacked = evar.create_encoder(f"hf:{folders['wavlm']}", output_layers=[0, -1])
    assert stacked.embed(wav).shape == (2, 64)
    fused = evar.create_encoder(f"hf:{folders['hubert']}", layers=["embed", "layer2"])
    assert fused.embed(wav).shape == (2, 64)


@pytest.mark.parametrize("kind", ["wav2vec2", "whisper"])
def test_a_clip_embeds_alike_alone_and_in_a_batch(folders, kind: str) -> None:
    encoder = evar.create_encoder(f"hf:{folders[kind]}")
    wav = _audio(12000, 3, clips=3)
    together = encoder.embed(wav)
    for i in range(3):
        assert torch.allclose(encoder.embed(wav[i:i + 1]), together[i:i + 1], atol=TOLERANCE, rtol=0)


def test_whisper_windows_of_30_s_cut_to_their_audio(folders) -> None:
    """EVAR's AR_Whisper: log-mel of each 30-s window (padded to 30 s), encoder frames cut to ceil(samples / 320)."""
    from transformers import WhisperFeatureExtractor, WhisperModel

    encoder = evar.create_encoder(f"hf:{folders['whisper']}")
    wav = _audio(16000 * 31, 4, clips=1)
    frames, times = encoder.embed_frames(wav)
    assert frames.shape == (1, 1500 + math.ceil(16000 / 320), 32)
    assert times[1] - times[0] == pytest.approx(0.02) and times[0] == pytest.approx(0.01)
    model = WhisperModel.from_pretrained(folders["whisper"]).eval()
    extractor = WhisperFeatureExtractor.from_pretrained(folders["whisper"])
    with torch.no_grad():
        first = model.encoder(extractor([wav[0, :480000]], sampling_rate=16000, return_tensors="pt").input_features)
        second = model.encoder(extractor([wav[0, 480000:]], sampling_rate=16000, return_tensors="pt").input_features)
    expected = torch.cat([first.last_hidden_state, second.last_hidden_state[:, :50]], dim=1)
    assert torch.allclose(frames, expected, atol=TOLERANCE, rtol=0)


def test_unknown_model_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(EvarError, match=r"hf:.*nowhere.*save_pretrained"):
        evar.create_encoder(f"hf:{tmp_path / 'nowhere'}")
    with pytest.raises(EvarError, match="output must be one of"):
        evar.create_encoder(f"hf:{tmp_path}", output="pooler")


def test_probe_on_the_smoke_tree_records_the_model(folders, tmp_path: Path, evar_dirs: Path) -> None:
    root = make_esc50_tree(tmp_path / "ESC-50-master", n_classes=2, clips_per_class_per_fold=2, sample_rate=16000,
                           seconds=1.0)
    assert main(["prepare", "esc50", "--root", str(root)]) == 0
    assert main(["probe", "--task", "esc50", "--model", f"hf:{folders['hubert']}", "--max-epochs", "5"]) == 0
    row = pd.read_csv(evar_dirs / "results" / "scores.csv").iloc[-1]
    encoder = json.loads(row["settings"])["encoder"]
    assert row["model"] == f"hf:{folders['hubert']}" and 0 <= row["score"] <= 1
    assert encoder["model_type"] == "hubert" and encoder["model_id"] == str(folders["hubert"].resolve())
    assert len(encoder["weights_sha256"]) == 64


def test_named_encoders_take_evars_settings(folders, tmp_path: Path) -> None:
    """EVAR's config/*.yaml: mean pooling of the last layer, Wav2Vec2-F's conv features with mean+max, and
    HuBERT/WavLM preprocessed by wav2vec2-base-960h's extractor whatever their folder holds."""
    from transformers import Wav2Vec2FeatureExtractor

    hubert = tmp_path / "hubert"
    _save_wave_model("hubert", hubert)
    Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(hubert)  # not what EVAR uses
    encoder = evar.create_encoder("hubert", weights=str(hubert))
    assert encoder.feature_extractor.do_normalize and encoder.pooling == "mean" and encoder.output_layers == (-1,)
    generic = evar.create_encoder(f"hf:{hubert}")
    wav = _audio(8000, 5)
    assert not torch.allclose(encoder.embed(wav), generic.embed(wav))  # the extractor swap changes the input
    feature = evar.create_encoder("wav2vec2_feature", weights=str(folders["wav2vec2_ctc"]))
    assert (feature.output, feature.pooling) == ("feature", "mean_max")
    logit = evar.create_encoder("wav2vec2_logit", weights=str(folders["wav2vec2_ctc"]))
    assert logit.embed(wav).shape == (2, 12)
    with pytest.raises(EvarError, match="facebook/wav2vec2-base-960h is fetched from the Hugging Face hub"):
        evar.create_encoder("wav2vec2", allow_download=False)


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
#: evar's named encoder -> the tiny folder EVAR's wrapper ran on (tests/fixtures/hf_make_reference.py)
EVAR_CASES = {"wav2vec2_context": "wav2vec2_ctc", "wav2vec2_feature": "wav2vec2_ctc", "wav2vec2_logit": "wav2vec2_ctc",
              "hubert": "hubert", "wavlm": "wavlm", "whisper": "whisper"}


@pytest.mark.parametrize("name", sorted(EVAR_CASES))
def test_named_encoders_equal_evars_own_wrappers(name: str) -> None:
    """EVAR 88ba772's AR_Wav2Vec2Context/Feature/Logit, AR_Hubert, AR_WavLM and AR_Whisper, run by
    tests/fixtures/hf_make_reference.py on the stored tiny models: frames and embeddings within 1e-5."""
    reference = np.load(FIXTURES / "hf_reference.npz")
    encoder = evar.create_encoder(name, weights=str(FIXTURES / "hf_tiny" / EVAR_CASES[name]))
    frames, _ = encoder.embed_frames(reference["wav"])
    np.testing.assert_allclose(frames.numpy(), reference[f"{name}_frames"], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(encoder.embed(reference["wav"]).numpy(), reference[f"{name}_embed"], atol=TOLERANCE,
                               rtol=0)
    if name == "whisper":
        rng = np.random.default_rng(0)
        rng.normal(0, 0.1, (2, 16000))  # the fixture's first draw, ``wav``
        long_wav = rng.normal(0, 0.1, (1, 16000 * 31)).astype(np.float32)
        np.testing.assert_allclose(encoder.embed_frames(long_wav)[0].numpy(), reference["whisper_long_frames"],
                                   atol=TOLERANCE, rtol=0)
