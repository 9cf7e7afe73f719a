"""ATST-Frame: parity with audiossl's own embedding functions on a tiny Lightning checkpoint, strict loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import evar
from evar.errors import EvarError
from fixture_support import FIXTURES

# Produced by tests/fixtures/atst_frame_make_reference.py (see atst_frame_README.md) with audiossl ec3a14d.
# Observed: mel 1.0e-5, frames 9.0e-6 (values up to 3.4), scene 9.5e-7.
CHECKPOINT = FIXTURES / "atst_frame_tiny.ckpt"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "atst_frame_reference.npz"))


@pytest.mark.parametrize("clip", ["clip_a", "clip_b", "batch_first3s"])
def test_matches_the_original(clip: str, reference: dict) -> None:
    stacked = evar.load_encoder("atst_frame", weights=str(CHECKPOINT))
    wav = torch.from_numpy(reference[f"{clip}__wave"])
    with torch.no_grad():
        np.testing.assert_allclose(stacked.backbone.spectrogram(wav).numpy(), reference[f"{clip}__mel"][:, 0],
                                   atol=5e-5)
    frames, timestamps = stacked.embed_frames(wav)
    np.testing.assert_allclose(frames.numpy(), reference[f"{clip}__frames"], atol=5e-5)
    np.testing.assert_allclose(1000 * timestamps.numpy(), reference[f"{clip}__timestamps"][0], atol=1e-3)
    np.testing.assert_allclose(stacked.embed(wav).numpy(), reference[f"{clip}__scene"], atol=1e-5)
    last = evar.load_encoder("atst_frame_last", weights=str(CHECKPOINT))  # the last block's 64 of 3 × 64
    np.testing.assert_allclose(last.embed_frames(wav)[0].numpy(), reference[f"{clip}__frames"][..., -64:], atol=5e-5)


def test_layers_and_an_empty_last_chunk(reference: dict) -> None:
    encoder = evar.load_encoder("atst_frame", weights=str(CHECKPOINT))
    wav = torch.from_numpy(reference["clip_b__wave"])
    with torch.no_grad():
        layers = encoder.forward_layers(wav)
    assert encoder.layers == ("block1", "block2", "block3") and [x.shape for x in layers] == [(1, 312, 64)] * 3
    np.testing.assert_allclose(torch.cat(layers, dim=-1).numpy(), reference["clip_b__frames"], atol=5e-5)
    # 10.02 s: a second chunk of 2 frames has no patch; as the original, it adds a zero vector to the chunk mean
    clip = torch.from_numpy(reference["clip_b__wave"][:, :160 * 1002])
    first = encoder.embed(clip[:, :160 * 1000])
    with torch.no_grad():
        chunk = encoder.backbone.chunk_layers(encoder.backbone.spectrogram(clip)[..., :1001])
    np.testing.assert_allclose(encoder.embed(clip).numpy(), (torch.cat(chunk, -1).sum(1) / (250 + 1e-6) / 2).numpy(),
                               atol=1e-6)
    assert first.shape == (1, 192)


def test_strict_loading(tmp_path: Path) -> None:
    checkpoint = torch.load(CHECKPOINT, weights_only=True)
    del checkpoint["state_dict"]["model.teacher.encoder.norm_frame.bias"]
    torch.save(checkpoint, tmp_path / "broken.ckpt")
    with pytest.raises(EvarError, match=r"not a loadable ATST-Frame checkpoint \(missing \['norm_frame.bias'\]"):
        evar.load_encoder("atst_frame", weights=str(tmp_path / "broken.ckpt"))
    torch.save({"state_dict": {"model.student.encoder.pos_embed": torch.zeros(1, 251, 64)}}, tmp_path / "student.ckpt")
    with pytest.raises(EvarError, match="no ATST-Frame teacher encoder"):
        evar.load_encoder("atst_frame", weights=str(tmp_path / "student.ckpt"))
    full = torch.load(CHECKPOINT, weights_only=True)
    full["callbacks"] = {"ModelCheckpoint": {"best_model_score": np.float64(0.25), "kth": np.arange(2)}}
    torch.save(full, tmp_path / "with_numpy.ckpt")  # Lightning's callback state: numpy data is admitted, code is not
    assert evar.load_encoder("atst_frame", weights=str(tmp_path / "with_numpy.ckpt")).embed_dim == 192
