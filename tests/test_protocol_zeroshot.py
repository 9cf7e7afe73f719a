"""Zero-shot classification: EVAR's captions, the text tower of the tiny converted CLAP with a small tokenizer,
and the score recomputed by hand from the cached audio embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import evar
from evar.cli import main
from evar.options import ModelChoice
from evar.protocols.zeroshot import class_captions
from evar.synth.trees import make_esc50_tree
from evar.tasks import load_task
from fixture_support import clap_with_char_tokenizer


def test_captions_follow_evars_rules() -> None:
    assert class_captions("esc50", ["dog", "crackling_fire"]) == ["dog can be heard", "crackling fire can be heard"]
    assert class_captions("gtzan", ["blues"]) == ["blues music can be heard"]
    assert class_captions("nsynth", ["mallet"]) == ["the musical instrument sound of mallet can be heard"]
    assert class_captions("cremad", ["ANG", "NEU"]) == ["angry person talking can be heard",
                                                         "someone talking calmly can be heard"]
    assert class_captions("esc50", ["dog"], "a sound of {}") == ["a sound of dog"]


@pytest.fixture
def clap_with_tokenizer(tmp_path: Path) -> Path:
    return clap_with_char_tokenizer(tmp_path)


def test_zeroshot_probe_equals_the_similarity_argmax(clap_with_tokenizer: Path, tmp_path: Path, evar_dirs: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    root = make_esc50_tree(tmp_path / "ESC-50-master", n_classes=3, clips_per_class_per_fold=1, sample_rate=48000,
                           seconds=1.0)
    assert main(["prepare", "esc50", "--root", str(root)]) == 0
    assert main(["probe", "--task", "esc50", "--model", "clap", "--weights", str(clap_with_tokenizer),
                 "--protocol", "zeroshot"]) == 0
    assert "clap on esc50: accuracy" in capsys.readouterr().out
    row = pd.read_csv(evar_dirs / "results" / "scores.csv").iloc[0]
    settings = json.loads(row["settings"])
    task = load_task("esc50")
    assert row["protocol"] == "zeroshot" and settings["captions"] == class_captions("esc50", task.classes)
    encoder = evar.create_encoder("clap", weights=str(clap_with_tokenizer))
    X = evar.api.embed(ModelChoice("clap", weights=str(clap_with_tokenizer)), task="esc50")  # the cache
    text = encoder.embed_text(settings["captions"]).numpy()
    y = task.labels()
    expected = [np.mean((X[s.test] @ text.T).argmax(1) == y[s.test]) for s in task.splits()]
    np.testing.assert_allclose(json.loads(row["fold_scores"]), np.array(expected)[:, None], atol=1e-12)
    assert main(["probe", "--task", "esc50", "--model", "melspec", "--protocol", "zeroshot"]) == 2
    assert "zero-shot needs an encoder with a text tower" in capsys.readouterr().err


def test_zeroshot_with_wav2clip_uses_clips_text_tower(tmp_path: Path, evar_dirs: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    import torch

    from encoders.test_wav2clip import tiny_clip_text_folder
    from fixture_support import fixture_module

    weights = tmp_path / "Wav2CLIP.pt"
    torch.save(fixture_module("wav2clip_checkpoint").make_official_state_dict(seed=0), weights)
    text_folder = tiny_clip_text_folder(tmp_path / "clip")
    root = make_esc50_tree(tmp_path / "ESC-50-master", n_classes=3, clips_per_class_per_fold=1, seconds=1.0)
    assert main(["prepare", "esc50", "--root", str(root)]) == 0
    options = json.dumps({"text_weights": str(text_folder)})
    assert main(["probe", "--task", "esc50", "--model", "wav2clip", "--weights", str(weights), "--model-options",
                 options, "--protocol", "zeroshot"]) == 0
    row = pd.read_csv(evar_dirs / "results" / "scores.csv").iloc[0]
    task = load_task("esc50")
    choice = ModelChoice("wav2clip", weights=str(weights), options={"text_weights": str(text_folder)})
    X = evar.api.embed(choice, task="esc50")
    text = choice.build().embed_text(class_captions("esc50", task.classes)).numpy()
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    y = task.labels()
    expected = [np.mean((X[s.test] @ text.T).argmax(1) == y[s.test]) for s in task.splits()]
    np.testing.assert_allclose(json.loads(row["fold_scores"]), np.array(expected)[:, None], atol=1e-12)
