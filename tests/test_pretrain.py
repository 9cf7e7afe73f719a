"""COLA pre-training: segment pairs, atomic per-epoch checkpoints, exact resume, weights usable by the encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import evar
from evar.encoders import cola_pretrain as pretrain
from evar.audio import write_audio
from evar.errors import EvarError
from evar.encoders.cola_pretrain import ColaSettings, SegmentPairs, checkpoint_path, find_audio, pretrain_cola
from evar.synth.trees import synth_clip

FAST = {"backbone": "byola", "d": 64, "batch_size": 3, "steps_per_epoch": 2, "seed": 7}


def run_cola(audio_dir: Path, out: Path, resume: bool = True, **settings):
    """COLA pre-training without a progress bar, the settings given as keywords."""
    return pretrain_cola(audio_dir, out, ColaSettings(**settings), resume=resume, progress=False)


@pytest.fixture
def audio_dir(tmp_path: Path) -> Path:
    """Five generated clips in nested folders (44.1 kHz WAV/FLAC, one shorter than a 1-s segment) plus a non-audio file."""
    root = tmp_path / "audio"
    rng = np.random.default_rng(0)
    for i, (sub, seconds, suffix) in enumerate([("a", 1.5, "wav"), ("a", 2.0, "flac"), ("b/c", 1.2, "wav"),
                                                 ("b", 0.6, "wav"), ("", 1.8, "flac")]):
        write_audio(root / sub / f"clip{i}.{suffix}", synth_clip(i, rng, 44100, seconds), 44100)
    (root / "notes.txt").write_text("not audio")
    return root


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_segment_pairs_share_a_clip(tmp_path: Path) -> None:
    """Constant clips of different lengths: after L2 normalisation each clip has its own level."""
    for i, seconds in enumerate((1.2, 1.5, 2.0, 0.5)):
        write_audio(tmp_path / f"{i}.wav", np.full(int(16000 * seconds), 0.5, dtype=np.float32), 16000)
    anchors, positives = SegmentPairs(find_audio(tmp_path)).batch(4, torch.Generator().manual_seed(0))
    assert anchors.shape == positives.shape == (4, 16000)
    level = anchors.amax(dim=1)  # each clip's constant, 1/sqrt(samples) after L2 normalisation
    assert len(set(np.round(level.numpy(), 4))) == 4  # four distinct clips: the others are the negatives
    inside = anchors > 0  # the short clip is zero-padded on both sides
    positive_level = (positives * inside).sum(dim=1) / inside.sum(dim=1)
    torch.testing.assert_close(positive_level, level, atol=1e-4, rtol=0)  # the positive comes from the same clip
    assert abs(float((positives - anchors)[inside].std()) - 0.001) < 1e-4  # plus noise of std 0.001


def test_interrupted_then_resumed_equals_uninterrupted(audio_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    full = run_cola(audio_dir, tmp_path / "full" / "cola.safetensors", epochs=2, **FAST)
    assert len(full.losses) == 2 and all(np.isfinite(full.losses))

    out = tmp_path / "cut" / "cola.safetensors"
    calls, real_batch = [0], SegmentPairs.batch

    def crash_in_second_epoch(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 4:  # epoch 2, step 2
            raise KeyboardInterrupt
        return real_batch(self, *args, **kwargs)

    monkeypatch.setattr(SegmentPairs, "batch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_cola(audio_dir, out, epochs=2, **FAST)
    assert torch.load(checkpoint_path(out), weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["cola.safetensors", "cola.train.pt"]  # no partial files
    monkeypatch.setattr(SegmentPairs, "batch", real_batch)

    resumed = run_cola(audio_dir, out, epochs=2, resume=True, **FAST)
    assert resumed.losses == full.losses
    a, b = _weights(full.weights), _weights(resumed.weights)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    full_state = torch.load(full.checkpoint, weights_only=True)
    resumed_state = torch.load(resumed.checkpoint, weights_only=True)
    for key, value in full_state["model"].items():
        assert torch.equal(value, resumed_state["model"][key]), key

    encoder = evar.load_encoder("cola_byola", weights=str(resumed.weights))
    assert encoder.embed(torch.randn(1, 24000) * 0.1).shape == (1, 64)


def test_guards(audio_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.pt"
    run_cola(audio_dir, out, epochs=1, **FAST)
    assert evar.load_encoder("cola_byola", weights=str(out)).embed_dim == 64  # plain state_dict weights
    with pytest.raises(EvarError, match="exists: resume it"):
        run_cola(audio_dir, out, epochs=2, resume=False, **FAST)
    with pytest.raises(EvarError, match=r"other settings \(batch_size=3->2"):
        run_cola(audio_dir, out, epochs=2, **{**FAST, "batch_size": 2})
    with pytest.raises(EvarError, match="fewer than batch_size=8"):
        run_cola(audio_dir, tmp_path / "x.safetensors", **{**FAST, "batch_size": 8})
    with pytest.raises(EvarError, match="must end in .safetensors"):
        run_cola(audio_dir, tmp_path / "y.txt", epochs=1, **FAST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvarError, match="no audio files"):
        run_cola(tmp_path / "empty", tmp_path / "z.safetensors", epochs=1, **FAST)
    with pytest.raises(EvarError, match="unknown COLA backbone"):
        run_cola(audio_dir, tmp_path / "z.safetensors", **{**FAST, "backbone": "resnet"})


def test_efficientnet_one_step(audio_dir: Path, tmp_path: Path) -> None:
    result = run_cola(audio_dir, tmp_path / "cola.safetensors", backbone="efficientnet_b0", epochs=1,
                      batch_size=2, steps_per_epoch=1)
    assert np.isfinite(result.losses[0])
    encoder = evar.load_encoder("cola", weights=str(result.weights))
    assert encoder.embed(torch.randn(1, 15680) * 0.1).shape == (1, 1280)
    assert pretrain.checkpoint_path(result.weights) == tmp_path / "cola.train.pt"
