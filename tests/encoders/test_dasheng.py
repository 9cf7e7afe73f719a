"""``dasheng``: the re-implementation against the ``dasheng`` package's own model on the same checkpoint.

The reference (tests/fixtures/dasheng_reference.npz, fixtures/dasheng_README.md) is what ``dasheng`` 0.0.9's
``Dasheng.from_pretrained(dasheng_tiny.pt)`` returned (model code = RicherMans/Dasheng db73093; torchaudio 2.8.0's
pure-Python MelSpectrogram / AmplitudeToDB): a tiny random checkpoint in the released ``{"model", "config"}`` layout
(64-d, 2 blocks, 4 heads), a 3-s clip and a 12.5-s clip (two chunks of patches, exact silences under the dB floor).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import evar
from evar.errors import EvarError
from evar.io import file_sha256
from fixture_support import FIXTURES, probe_smoke_tree

CHECKPOINT = FIXTURES / "dasheng_tiny.pt"
#: measured: 1.4e-6 on frames (values up to 4.3), 4.8e-7 on the normalised spectrogram
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "dasheng_reference.npz"))


@pytest.fixture(scope="module")
def encoder():
    return evar.create_encoder("dasheng", weights=str(CHECKPOINT))


def test_frames_equal_the_packages_model(encoder, reference) -> None:
    for clip in ("a3", "b12"):  # one chunk; two chunks (252 + 60 patches)
        wav = torch.from_numpy(reference[f"{clip}.wave"])
        frames, times = encoder.embed_frames(wav)
        np.testing.assert_allclose(frames.numpy(), reference[f"{clip}.frames"], atol=TOLERANCE)
        np.testing.assert_allclose(encoder.embed(wav).numpy(), reference[f"{clip}.frames"].mean(axis=1), atol=TOLERANCE)
        np.testing.assert_allclose(times.numpy(), 0.015 + 0.04 * np.arange(frames.shape[1]), atol=1e-6)
    wav = torch.from_numpy(reference["a3.wave"])
    with torch.no_grad():
        spectrogram = encoder.backbone.spectrogram(wav)
        first_block = encoder.forward_layers(wav)[0]
    np.testing.assert_allclose(spectrogram.numpy(), reference["a3.spec_bn"][:, 0], atol=TOLERANCE)
    np.testing.assert_allclose(first_block.numpy(), reference["a3.layer0"], atol=TOLERANCE)
    assert encoder.embed_dim == 64 and encoder.layers == ("block1", "block2")
    assert encoder.weights_sha256 == file_sha256(CHECKPOINT)


def test_the_db_floor_is_per_clip_so_batches_are_independent(encoder, reference) -> None:
    batch = torch.from_numpy(reference["batch3.wave"])  # a loud 3-s clip beside the 12.5-s clip's quieter start
    frames = encoder.embed_frames(batch)[0]
    # row 0 sets the package's batch-wide maximum too: equal to the package; row 1 is the clip as embedded alone
    np.testing.assert_allclose(frames[0].numpy(), reference["batch3.frames"][0], atol=TOLERANCE)
    np.testing.assert_allclose(frames[1].numpy(), encoder.embed_frames(batch[1:])[0][0].numpy(), atol=1e-6)
    assert np.abs(frames[1].numpy() - reference["batch3.frames"][1]).max() > 0.01  # the package's batch-wide floor


def test_the_checkpoint_is_loaded_strictly(tmp_path: Path) -> None:
    checkpoint = torch.load(CHECKPOINT, weights_only=True)
    model = {k: v for k, v in checkpoint["model"].items() if k != "front_end.0.mel_scale.fb"}
    torch.save({**checkpoint, "model": model}, tmp_path / "broken.pt")
    with pytest.raises(EvarError, match=r"not a loadable Dasheng checkpoint \(missing \['front_end.0.mel_scale.fb'\]"):
        evar.create_encoder("dasheng", weights=str(tmp_path / "broken.pt"))
    torch.save(checkpoint["model"], tmp_path / "flat.pt")
    with pytest.raises(EvarError, match="expected a dict with 'model' and 'config'"):
        evar.create_encoder("dasheng", weights=str(tmp_path / "flat.pt"))


def test_probe_dasheng_on_the_smoke_tree(tmp_path: Path, evar_dirs: Path, capsys: pytest.CaptureFixture) -> None:
    row = probe_smoke_tree(tmp_path, evar_dirs / "results", "dasheng", "--weights", str(CHECKPOINT))
    assert "dasheng on esc50: accuracy" in capsys.readouterr().out
    assert row["weights_sha256"] == file_sha256(CHECKPOINT)
