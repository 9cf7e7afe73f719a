"""``m2d``: the re-implementation against EVAR's AR_M2D over nttcslab/m2d's runtime on the same checkpoint.

The reference (tests/fixtures/m2d_reference.npz, fixtures/m2d_README.md) is what EVAR 88ba772's ``AR_M2D`` (m2d
f0c4128's ``RuntimeM2D``, timm 0.4.5, nnAudio 0.3.4) computed from ``m2d_tiny/…/checkpoint-300.pth``: a tiny random
checkpoint in the released layout (``{"model", "optimizer", "epoch", "scaler", "args"}`` with the decoder and the
target network; width 64, 2 blocks, 4 heads) on a 2-s clip and a 7.5-s clip (two chunks, the second short).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import evar
from evar.errors import EvarError
from evar.io import file_sha256
from fixture_support import FIXTURES, probe_smoke_tree

CHECKPOINT = FIXTURES / "m2d_tiny" / "m2d_vit_base-80x608p16x16-221006-mr7" / "checkpoint-300.pth"
#: measured: 3.2e-6 on frames (values up to 4), 2e-5 on the normalised log-mel
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "m2d_reference.npz"))


@pytest.fixture(scope="module")
def encoder():
    return evar.create_encoder("m2d", weights=str(CHECKPOINT), num_heads=4)  # 4 heads: not in the weights


@pytest.mark.parametrize("clip", ["clip2s", "clip7p5s"])
def test_frames_layers_and_clip_embedding_equal_evars_ar_m2d(encoder, reference, clip: str) -> None:
    wav = torch.from_numpy(reference[f"{clip}.audio"])[None]
    frames, times = encoder.embed_frames(wav)
    np.testing.assert_allclose(frames.numpy(), reference[f"{clip}.frames"].transpose(0, 2, 1), atol=TOLERANCE)
    np.testing.assert_allclose(encoder.embed(wav).numpy(), reference[f"{clip}.emb"], atol=TOLERANCE)
    with torch.no_grad():
        layers = encoder.forward_layers(wav)
        lms = (encoder.logmel(wav) - encoder.norm_stats[0]) / encoder.norm_stats[1]
    for layer, expected in zip(layers, reference[f"{clip}.layer_frames"]):
        np.testing.assert_allclose(layer.numpy(), expected.transpose(0, 2, 1), atol=TOLERANCE)
    np.testing.assert_allclose(lms.numpy(), reference[f"{clip}.lms"][:, 0], atol=TOLERANCE)
    np.testing.assert_allclose(times.numpy(), (16 * np.arange(frames.shape[1]) + 7.5) * 0.01, atol=1e-6)
    assert encoder.embed_dim == 320 and encoder.layers == ("block1", "block2")
    assert encoder.norm_stats.tolist() == pytest.approx([-7.1, 4.2])  # the 2022 files carry none: the default


def test_the_online_encoder_is_loaded_strictly(tmp_path: Path) -> None:
    import argparse

    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = torch.load(CHECKPOINT, weights_only=True)
    model = {k: v for k, v in checkpoint["model"].items() if k != "blocks.1.mlp.fc2.bias"}
    torch.save({**checkpoint, "model": model}, tmp_path / "broken.pth")
    with pytest.raises(EvarError, match=r"not a loadable M2D checkpoint \(missing \['blocks.1.mlp.fc2.bias'\]"):
        evar.create_encoder("m2d", weights=str(tmp_path / "broken.pth"), num_heads=4)
    torch.save({"model": {"decoder_embed.weight": torch.zeros(2, 2)}}, tmp_path / "decoder_only.pth")
    with pytest.raises(EvarError, match="not an M2D checkpoint"):
        evar.create_encoder("m2d", weights=str(tmp_path / "decoder_only.pth"))
    with pytest.raises(EvarError, match="are not in"):
        evar.create_encoder("m2d")  # the release is not fetched: pass the file or put it in the cache


def test_probe_m2d_on_the_smoke_tree(tmp_path: Path, evar_dirs: Path, capsys: pytest.CaptureFixture) -> None:
    row = probe_smoke_tree(tmp_path, evar_dirs / "results", "m2d", "--weights", str(CHECKPOINT),
                           "--model-options", json.dumps({"num_heads": 4}))
    assert "m2d on esc50: accuracy" in capsys.readouterr().out
    assert row["weights_sha256"] == file_sha256(CHECKPOINT)
