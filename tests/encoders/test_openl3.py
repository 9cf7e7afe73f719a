"""``openl3_env`` / ``openl3_music``: the re-implementation against torchopenl3 as EVAR's ``AR_OpenL3`` calls it.

The reference (tests/fixtures/openl3_reference.npz, fixtures/openl3_README.md) is what torchopenl3 3cf5485's
``get_audio_embedding(x, 48000, model=...)`` returned, with EVAR 88ba772's mean + max pooling, for two random
checkpoints in torchopenl3's format; ``openl3_checkpoint.py`` rebuilds those checkpoints bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import evar
from evar.errors import EvarError
from evar.io import file_sha256
from fixture_support import fixture_module, probe_smoke_tree

RECIPE = fixture_module("openl3_checkpoint")

#: measured: 1.3e-5 on frames (values up to 17: float32 conv sums of 4,608 terms), 2e-6 on the dB mel
TOLERANCE = 5e-5


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return RECIPE.write_reference_checkpoints(tmp_path_factory.mktemp("openl3"))


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(RECIPE.REFERENCE))


@pytest.mark.parametrize("content, clips", [("env", ("clip_1p0s", "extra_clip_1p37s", "extra_clip_0p3s")),
                                            ("music", ("clip_1p0s",))])
def test_frames_and_clip_embeddings_equal_torchopenl3(content, clips, checkpoints, reference) -> None:
    encoder = evar.create_encoder(f"openl3_{content}", weights=str(checkpoints[content]))
    for clip in clips:  # 6 windows; 10 windows with a right pad; one window padded to 1 s
        wav = torch.from_numpy(reference[f"audio/{clip}"])
        frames, times = encoder.embed_frames(wav)
        np.testing.assert_allclose(frames.numpy(), reference[f"{content}/{clip}/frame_embeddings"], atol=TOLERANCE)
        np.testing.assert_allclose(times.numpy(), reference[f"{content}/{clip}/timestamps"][0], atol=1e-6)
        np.testing.assert_allclose(encoder.pool(frames).numpy(), reference[f"{content}/{clip}/evar_clip_embedding"],
                                   atol=2 * TOLERANCE)
    assert encoder.weights_sha256 == file_sha256(checkpoints[content])


def test_front_end_equals_kapre_emulation(checkpoints, reference) -> None:
    from evar.encoders.openl3 import audio_windows

    encoder = evar.create_encoder("openl3_env", weights=str(checkpoints["env"]))
    windows = audio_windows(torch.from_numpy(reference["audio/clip_1p0s"])[None])[0]
    with torch.no_grad():
        melgram = encoder.network.melgram(windows[:1])[:, 0]
    np.testing.assert_allclose(melgram.numpy(), reference["env/clip_1p0s/frontend_db_mel_window0"], atol=1e-4)
    assert melgram.max() == 0 and melgram.min() == -80  # per-window max subtracted, 80-dB floor


def test_hop_option_and_bad_values(checkpoints, reference) -> None:
    encoder = evar.create_encoder("openl3_env", weights=str(checkpoints["env"]), hop_sec=0.5)
    frames, times = encoder.embed_frames(torch.from_numpy(reference["audio/clip_1p0s"]))
    # windows centred on 0 and 0.5 s are windows 0 and 5 of the 0.1-s hop
    np.testing.assert_allclose(frames[0].numpy(), reference["env/clip_1p0s/frame_embeddings"][0, [0, 5]],
                               atol=TOLERANCE)
    np.testing.assert_allclose(times.numpy(), [0.0, 0.5])
    with pytest.raises(EvarError, match=r"hop_sec must be in \(0, 1\]"):
        evar.create_encoder("openl3_env", weights=str(checkpoints["env"]), hop_sec=0)


def test_the_checkpoint_is_loaded_strictly(checkpoints, tmp_path: Path) -> None:
    state = torch.load(checkpoints["env"], weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "speclayer.mel_basis"}, tmp_path / "broken.pt")
    with pytest.raises(EvarError, match=r"missing \['speclayer.mel_basis'\]"):
        evar.create_encoder("openl3_env", weights=str(tmp_path / "broken.pt"))
    torch.save({"cfg": {}, "model": {"patch_embedding.weight": torch.zeros(1)}}, tmp_path / "beats.pt")
    with pytest.raises(EvarError, match="not a torchopenl3 checkpoint"):
        evar.create_encoder("openl3_env", weights=str(tmp_path / "beats.pt"))


def test_probe_openl3_on_the_smoke_tree(checkpoints, tmp_path: Path, evar_dirs: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    row = probe_smoke_tree(tmp_path, evar_dirs / "results", "openl3_music", "--weights", str(checkpoints["music"]),
                           "--model-options", '{"hop_sec": 1.0}')
    assert "openl3_music on esc50: accuracy" in capsys.readouterr().out
    assert row["weights_sha256"] == file_sha256(checkpoints["music"])
