"""HEAR API: the validator (hear-validator's checks + evar's), the ``hear:<module>`` adapter, ``evar.hear.module``."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evar import EvarError, create_encoder
from evar.hear.validator import ACCEPTABLE_SAMPLE_RATES, validate_module

#: A small HEAR module: 25 ms frames through a fixed random projection. ``BROKEN`` switches on one defect.
TINY_MODULE = '''
import torch
from torch import nn

BROKEN = {broken!r}
HOP = 400  # 25 ms at 16 kHz


class TinyModel(nn.Module):
    sample_rate = 8000 if "sample_rate" in BROKEN else 16000
    scene_embedding_size = 8

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(HOP, 8)
        if "no_timestamp_size" not in BROKEN:
            self.timestamp_embedding_size = 8


def load_model(model_file_path=""):
    torch.manual_seed(0)
    model = TinyModel()
    if model_file_path:
        model.load_state_dict(torch.load(model_file_path, weights_only=True))
    return "not a module" if "not_module" in BROKEN else model


def get_timestamp_embeddings(audio, model):
    frames = audio.unfold(1, HOP, HOP)
    if "batch_dependent" in BROKEN:
        frames = frames - frames.mean(0, keepdim=True)
    emb = torch.tanh(10 * model.proj(frames))
    ms = torch.arange(emb.shape[1], dtype=torch.float32, device=audio.device) * 25.0 + 12.5
    if "seconds" in BROKEN:
        ms = ms / 1000
    if "irregular" in BROKEN:
        ms[-1] += 10
    if "flat" in BROKEN:
        emb = emb.flatten(1)
    return emb, ms.expand(audio.shape[0], -1)


def get_scene_embeddings(audio, model):
    scene = get_timestamp_embeddings(audio, model)[0].mean(1)
    if "wrong_shape" in BROKEN:
        scene = scene[:, :7]
    if "float64" in BROKEN:
        scene = scene.double()
    if "nan" in BROKEN:
        scene = scene / 0 * 0
    return scene
'''


@pytest.fixture
def tiny_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write ``tinyhear_<tag>`` with the given defects on sys.path; returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(*broken: str, extra: str = "") -> str:
        tag = "_".join(broken) or "ok"
        name = f"tinyhear_{tag}_{hashlib.md5(extra.encode()).hexdigest()[:8]}" if extra else f"tinyhear_{tag}"
        (tmp_path / f"{name}.py").write_text(TINY_MODULE.format(broken=set(broken)) + extra)
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name

    return make


def test_tiny_module_passes(tiny_module):
    report = validate_module(tiny_module())
    assert report.ok, report.format()
    names = {c.name for c in report.checks if c.status == "pass"}
    assert {"sample_rate", "timestamps.regular", "timestamps.unit", "scene_embeddings.size",
            "scene_embeddings.batch_independent", "timestamp_embeddings.deterministic"} <= names
    # hear-validator's warning: timestamps end 32.5 ms before the end of 1.07 s (its hop is 25 ms)
    assert any(c.name == "timestamps.end" for c in report.warnings())
    assert "INVALID" not in report.format() and "valid:" in report.format()


@pytest.mark.parametrize("broken, check", [
    ("wrong_shape", "scene_embeddings.size"),
    ("flat", "timestamp_embeddings.ndim"),
    ("float64", "scene_embeddings.dtype"),
    ("no_timestamp_size", "timestamp_embedding_size"),
    ("sample_rate", "sample_rate"),
    ("not_module", "model.type"),
    ("irregular", "timestamps.regular"),
    ("seconds", "timestamps.unit"),
    ("batch_dependent", "scene_embeddings.batch_independent"),
    ("nan", "scene_embeddings.finite"),
])
def test_broken_module_fails_the_specific_check(tiny_module, broken: str, check: str):
    report = validate_module(tiny_module(broken))
    assert not report.ok
    assert report.failed(check), report.format()
    assert check in report.format()


def test_seconds_timestamps_only_warn_in_hear_validator(tiny_module):
    """hear-validator itself only warns for second-valued timestamps; evar's unit check fails them."""
    name = tiny_module("seconds")
    assert validate_module(name, extra_checks=False).ok
    assert validate_module(name).failed("timestamps.unit")


def test_missing_function_and_import_errors(tiny_module):
    report = validate_module(tiny_module(extra="del get_scene_embeddings\n"))
    assert report.failed("get_scene_embeddings") and not report.failed("timestamps.regular")
    report = validate_module(tiny_module(extra="del load_model\n"))
    assert report.failed("load_model") and len(report.checks) == 2  # import, load_model: nothing else can run
    report = validate_module("no_such_module_for_evar_tests")
    assert report.failed("import") and "no_such_module_for_evar_tests" in report.format()


def test_validator_passes_the_model_file(tiny_module, tmp_path: Path):
    torch.manual_seed(1)
    weights = tmp_path / "tiny.pt"
    torch.save({"proj.weight": torch.randn(8, 400), "proj.bias": torch.zeros(8)}, weights)
    assert validate_module(tiny_module(), model_file=str(weights)).ok
    report = validate_module(tiny_module(), model_file=str(tmp_path / "missing.pt"))
    assert report.failed("load_model")


def test_adapter_matches_the_module(tiny_module, tmp_path: Path):
    name = tiny_module()
    torch.manual_seed(1)
    weights = tmp_path / "tiny.pt"
    torch.save({"proj.weight": torch.randn(8, 400), "proj.bias": torch.randn(8)}, weights)
    module = __import__(name)
    model = module.load_model(str(weights))
    audio = torch.rand(3, 16000, generator=torch.Generator().manual_seed(0)) * 2 - 1

    encoder = create_encoder(f"hear:{name}", weights=str(weights))
    assert encoder.sample_rate == 16000 and encoder.embed_dim == 8
    assert torch.equal(encoder.embed(audio), module.get_scene_embeddings(audio, model))
    frames, seconds = encoder.embed_frames(audio)
    direct, ms = module.get_timestamp_embeddings(audio, model)
    assert torch.equal(frames, direct)
    assert torch.allclose(seconds, ms[0] / 1000) and seconds[0] == pytest.approx(0.0125)
    assert encoder.frame_hop_sec == pytest.approx(0.025)
    config = encoder.config()
    assert config["hear_module"] == name and len(config["module_sha256"]) == 64 and len(config["weights_sha256"]) == 64
    # other weights give other embeddings and another cache key
    plain = create_encoder(f"hear:{name}")
    assert not torch.equal(plain.embed(audio), encoder.embed(audio))
    assert plain.config() != config


def test_adapter_errors(tiny_module, tmp_path: Path):
    with pytest.raises(EvarError, match="cannot import module 'no_such_hear_module'"):
        create_encoder("hear:no_such_hear_module")
    with pytest.raises(EvarError, match="lacks get_scene_embeddings"):
        create_encoder(f"hear:{tiny_module(extra='del get_scene_embeddings' + chr(10))}")
    with pytest.raises(EvarError, match="torch.nn.Module"):
        create_encoder(f"hear:{tiny_module('not_module')}")
    with pytest.raises(EvarError, match="weights file not found"):
        create_encoder(f"hear:{tiny_module()}", weights=str(tmp_path / "nope.pt"))


def test_evar_encoders_as_a_hear_module(monkeypatch: pytest.MonkeyPatch):
    import evar.hear.module as hear

    monkeypatch.setenv("EVAR_HEAR_MODEL", "melspec")
    model = hear.load_model()
    assert model.sample_rate in ACCEPTABLE_SAMPLE_RATES
    assert (model.scene_embedding_size, model.timestamp_embedding_size) == (128, 64)
    audio = torch.rand(2, 20000, generator=torch.Generator().manual_seed(0)) - 0.5
    reference = create_encoder("melspec")
    assert torch.equal(hear.get_scene_embeddings(audio, model), reference.embed(audio))
    frames, ms = hear.get_timestamp_embeddings(audio, model)
    ref_frames, seconds = reference.embed_frames(audio)
    assert torch.equal(frames, ref_frames) and ms.shape == frames.shape[:2]
    assert torch.allclose(ms, 1000 * seconds.expand(2, -1))
    # and back through the adapter: hear:evar.hear.module is melspec again
    wrapped = create_encoder("hear:evar.hear.module", model_name="melspec")
    assert torch.equal(wrapped.embed(audio), reference.embed(audio))
    with pytest.raises(EvarError, match="no normalisation statistics"):
        hear.load_model(model_name="melspec", norm_stats=[0.0, 1.0])


def test_melspec_passes_the_validator():
    report = validate_module("evar.hear.module", model_options={"model_name": "melspec"})
    assert report.ok, report.format()


def test_byola_passes_the_validator(byola512_weights: Path):
    report = validate_module("evar.hear.module", model_file=str(byola512_weights), model_options={"model_name": "byola"})
    assert report.ok, report.format()


def test_byola_statistics_in_the_hear_module(byola512_weights: Path):
    import evar.hear.module as hear

    audio = torch.rand(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.2 - 0.1
    reference = create_encoder("byola", weights=str(byola512_weights))
    fixed = hear.load_model(str(byola512_weights), model_name="byola", norm_stats=[-5.0, 4.0])
    reference.set_stats(-5.0, 4.0)
    assert torch.equal(hear.get_scene_embeddings(audio, fixed), reference.embed(audio))
    per_clip = hear.load_model(str(byola512_weights), model_name="byola")  # norm_stats="clip"
    scene = hear.get_scene_embeddings(audio, per_clip)
    for i in range(2):
        feats = reference.features(audio[i:i + 1])
        reference.set_stats(float(feats.mean()), float(feats.std(unbiased=False)))
        np.testing.assert_allclose(scene[i].numpy(), reference.embed(audio[i:i + 1])[0].numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(EvarError, match="norm_stats must be"):
        hear.load_model(str(byola512_weights), model_name="byola", norm_stats="task")


@pytest.mark.parametrize("model_name", ["byola", "msm_mae"])
def test_deterministic_checkpoints_pass_the_validator(model_name: str, tmp_path: Path):
    """The HEAR export of a CNN (BYOL-A) and a transformer (MSM-MAE ViT-B) on official-format seeded checkpoints
    (tests/encoder_checkpoints.py), so the check runs without the released weights."""
    from encoder_checkpoints import write_checkpoint

    weights, kwargs = write_checkpoint(model_name, tmp_path)
    report = validate_module("evar.hear.module", model_file=str(weights), model_options={"model_name": model_name, **kwargs})
    assert report.ok, report.format()
    assert {"timestamps.unit", "timestamp_embeddings.batch_independent", "scene_embeddings.size"} <= {
        c.name for c in report.checks if c.status == "pass"}
