"""``resemblyzer``: the real Resemblyzer 0.1.4 weights against its own ``preprocess_wav`` + ``embed_utterance``.

The reference (tests/fixtures/resemblyzer_reference.npz, fixtures/resemblyzer_README.md) is what Resemblyzer
0.1.4 (librosa 0.11, webrtcvad-wheels 2.0.14) returned for three clips: S1 (3.2 s of voiced bursts and pauses,
trimmed by the VAD), S2 (1.1 s, quiet: raised to −30 dBFS, shorter than one window), S3 (2.5 s at 44.1 kHz).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soxr
import torch

import evar
from conftest import packaged_weights
from evar.encoders.resemblyzer import PACKAGED_SHA256, SpeakerNetwork, normalise_volume, partial_slices, trim_long_silences
from evar.errors import EvarError
from fixture_support import FIXTURES, probe_smoke_tree

#: measured: at most 2e-7 (float32 LSTM)
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "resemblyzer_reference.npz"))


def clip_16k(reference, name: str) -> np.ndarray:
    """The clip at 16 kHz, resampled as evar's loader (and librosa 0.11's soxr_hq) do."""
    wav, rate = reference[name], int(reference[f"{name}_sr"])
    return wav if rate == 16000 else soxr.resample(wav, rate, 16000, quality="HQ").astype(np.float32)


@pytest.fixture(scope="module")
def encoder():
    packaged_weights("resemblyzer")
    return evar.create_encoder("resemblyzer")


def test_utterance_embeddings_equal_resemblyzers(encoder, reference) -> None:
    pytest.importorskip("webrtcvad", reason="trimming silences needs webrtcvad-wheels (in the test extra)")
    assert encoder.weights_sha256 == PACKAGED_SHA256
    for name in ("S1", "S2", "S3"):
        wav = clip_16k(reference, name)
        trimmed = trim_long_silences(normalise_volume(wav))
        assert len(trimmed) == reference[f"{name}_preprocessed_len"]  # the VAD keeps the same windows
        partials, slices = encoder.partials(trimmed)
        np.testing.assert_allclose(partials.detach().numpy(), reference[f"{name}_partial_embeds"], atol=TOLERANCE)
        assert [a for a, _ in slices] == reference[f"{name}_mel_slice_start"].tolist()
        np.testing.assert_allclose(encoder.embed(wav)[0].numpy(), reference[f"{name}_embed"], atol=TOLERANCE)


def test_frames_are_the_partials_of_the_untrimmed_clip(encoder, reference) -> None:
    for name, key in (("S1", "S1_raw"), ("S3", "S3_resampledonly")):  # both louder than −30 dBFS: no gain
        frames, times = encoder.embed_frames(clip_16k(reference, name))
        np.testing.assert_allclose(frames[0].numpy(), reference[f"{key}_partial_embeds"], atol=TOLERANCE)
        np.testing.assert_allclose(encoder.pool(frames)[0].numpy(), reference[f"{key}_embed"], atol=TOLERANCE)
        np.testing.assert_allclose(times.numpy(), 0.8 + 0.77 * np.arange(frames.shape[1]), atol=1e-6)


def test_mel_partial_windows_and_volume(encoder, reference) -> None:
    pytest.importorskip("webrtcvad", reason="trimming silences needs webrtcvad-wheels (in the test extra)")
    utterance = trim_long_silences(normalise_volume(clip_16k(reference, "S1")))
    padded = np.pad(utterance, (0, 37920 - len(utterance)))  # to the last window's end
    mel = encoder.mel(torch.from_numpy(padded)[None])[0].T.numpy()  # librosa's mel power, not a log
    np.testing.assert_allclose(mel, reference["S1_mel"], rtol=1e-4, atol=1e-6 * reference["S1_mel"].max())
    # windows of 160 frames every 77; a last one covering < 75 % is dropped unless it is the only one
    assert partial_slices(35520) == [(0, 160), (77, 237)]
    assert partial_slices(17280) == [(0, 160)]
    assert partial_slices(30240) == [(0, 160)]  # the second would cover 70 %
    loud = np.full(1600, 0.5, np.float32)
    assert normalise_volume(loud) is loud  # never lowered
    quiet = np.full(16000, 1e-3, np.float32)
    np.testing.assert_allclose(20 * np.log10(np.sqrt(np.mean(normalise_volume(quiet) ** 2))), -30, atol=1e-4)


def test_checkpoint_format_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "pretrained.pt"
    torch.save({"step": 1, "model_state": {k: v for k, v in SpeakerNetwork().state_dict().items()
                                           if not k.startswith("linear")}}, path)
    with pytest.raises(EvarError, match=r"not a Resemblyzer checkpoint \(missing \['linear.bias', 'linear.weight'\]"):
        evar.create_encoder("resemblyzer", weights=str(path))
    torch.save(SpeakerNetwork().state_dict(), path)
    with pytest.raises(EvarError, match="no 'model_state'"):
        evar.create_encoder("resemblyzer", weights=str(path))


def test_probe_resemblyzer_with_its_real_weights(tmp_path: Path, evar_dirs: Path, capsys: pytest.CaptureFixture) -> None:
    packaged_weights("resemblyzer")
    pytest.importorskip("webrtcvad", reason="trimming silences needs webrtcvad-wheels (in the test extra)")
    row = probe_smoke_tree(tmp_path, evar_dirs / "results", "resemblyzer", "--max-epochs", "20", seconds=2.0)
    assert "resemblyzer on esc50: accuracy" in capsys.readouterr().out
    assert row["weights_sha256"] == PACKAGED_SHA256
