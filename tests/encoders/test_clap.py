"""``clap``: LAION-CLAP through ClapModel against the original laion_clap on the same audio and weights.

The reference (tests/fixtures/clap_reference.npz, how it was made in fixtures/clap_README.md) is what laion_clap
1.1.7's ``CLAP_Module.get_audio_embedding_from_data(x, use_tensor=True)`` — the call of EVAR's AR_LAIONCLAP —
returned for a tiny random HTSAT/RoBERTa checkpoint in laion's format, converted to ``clap_tiny/`` with
transformers' official conversion script.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import evar
from evar.errors import EvarError
from fixture_support import FIXTURES, probe_smoke_tree

TINY = FIXTURES / "clap_tiny"
#: measured: at most 1.4e-7 between laion_clap and evar on the audio embeddings (float32 rounding)
AUDIO_TOLERANCE = 1e-6
#: the converted text tower keeps transformers' LayerNorm eps 1e-12 where laion's RoBERTa has 1e-5 (the official
#: conversion does so for the hub checkpoint too): measured 1.1e-5
TEXT_TOLERANCE = 3e-5


def reference_audio() -> dict[str, np.ndarray]:
    """The fixture's clips: 3, 7.5 and 10 s at 48 kHz (four sines, a slow envelope, a little noise)."""
    rng, rate = np.random.default_rng(0), 48000
    clips = {}
    for index, seconds in enumerate([3.0, 7.5, 10.0]):
        t = np.arange(int(round(seconds * rate))) / rate
        x = np.zeros(len(t))
        for _ in range(4):
            f = rng.uniform(80, 12000)
            x += rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        x *= 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 1.5) * t)
        x += 0.05 * rng.standard_normal(len(t))
        clips[f"clip{index}"] = (0.85 * x / np.abs(x).max()).astype(np.float32)
    return clips


@pytest.fixture(scope="module")
def encoder():
    return evar.create_encoder("clap", weights=str(TINY))


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "clap_reference.npz"))


def test_audio_embeddings_equal_laion_clap(encoder, reference) -> None:
    for name, clip in reference_audio().items():  # repeat-padded (3 s), zero-padded (7.5 s), exact (10 s)
        np.testing.assert_allclose(encoder.embed(clip).numpy(), reference[f"{name}_embed"], atol=AUDIO_TOLERANCE)
    assert encoder.embed_dim == 32 and encoder.sample_rate == 48000
    assert encoder.weights_sha256 == "b8d717e4737275bd355b53c6783f0cdf833bf7077bf81e9a25f0f4f422cc903c"


def test_text_embeddings_equal_laion_clap(encoder, reference) -> None:
    ours = encoder.embed_tokens(torch.from_numpy(reference["text_input_ids"]),
                                torch.from_numpy(reference["text_attention_mask"])).numpy()
    np.testing.assert_allclose(ours, reference["text_embed"], atol=TEXT_TOLERANCE)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-6)
    with pytest.raises(EvarError, match="no tokenizer"):
        encoder.embed_text(["a dog barks"])


def test_long_clips_average_their_windows_and_batches_are_independent(encoder) -> None:
    clips = reference_audio()
    long = np.concatenate([clips["clip2"], clips["clip0"][:96000]])  # 12 s: a 10-s window and a 2-s one
    frames, times = encoder.embed_frames(long)
    assert frames.shape == (1, 2, 32)
    np.testing.assert_allclose(times.numpy(), [5.0, 11.0])
    np.testing.assert_allclose(frames[0, 0].numpy(), encoder.embed(clips["clip2"])[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(frames[0, 1].numpy(), encoder.embed(long[480000:])[0].numpy(), atol=1e-6)
    mean = frames[0].mean(0)
    np.testing.assert_allclose(encoder.embed(long)[0].numpy(), (mean / mean.norm()).numpy(), atol=1e-6)
    pair = np.stack([clips["clip0"], clips["clip1"][:144000]])
    batched = encoder.embed(pair).numpy()
    for row, clip in enumerate(pair):
        np.testing.assert_allclose(batched[row], encoder.embed(clip)[0].numpy(), atol=1e-6)


def test_a_wrong_mel_range_or_folder_is_refused(tmp_path: Path) -> None:
    from transformers import ClapFeatureExtractor, ClapModel

    folder = tmp_path / "clap"
    ClapModel.from_pretrained(TINY).save_pretrained(folder)
    ClapFeatureExtractor.from_pretrained(TINY, frequency_min=0).save_pretrained(folder)
    with pytest.raises(EvarError, match="mel range is 0-14000 Hz"):
        evar.create_encoder("clap", weights=str(folder))
    with pytest.raises(EvarError, match="no such folder"):
        evar.create_encoder("clap", weights=str(tmp_path / "missing"))


def test_probe_clap_on_the_smoke_tree(tmp_path: Path, evar_dirs: Path, capsys: pytest.CaptureFixture) -> None:
    row = probe_smoke_tree(tmp_path, evar_dirs / "results", "clap", "--weights", str(TINY), sample_rate=44100)
    assert "clap on esc50: accuracy" in capsys.readouterr().out
    settings = json.loads(row["settings"])
    assert settings["encoder"]["model_type"] == "clap" and settings["encoder"]["model_id"] == str(TINY.resolve())
    assert row["weights_sha256"] == "b8d717e4737275bd355b53c6783f0cdf833bf7077bf81e9a25f0f4f422cc903c"
