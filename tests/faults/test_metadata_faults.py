"""Cases 7-10: metadata faults found at prepare time, each reported naming the file or label."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

import evar
from evar.audio import write_audio
from evar.synth.trees import make_esc50_tree, synth_clip

from .helpers import FAST_PROBE, SECONDS, add_rows, cli, results_rows


def _prepare_custom(tree, mode: str = "fail"):
    root, csv = tree
    return cli("prepare", "custom", "--csv", csv, "--root", root, "--name", "meta", "--unit-sec", SECONDS,
               "--on-error", mode)


def _esc50(tmp_path: Path, edit) -> Path:
    root = make_esc50_tree(tmp_path / "esc", n_classes=2, clips_per_class_per_fold=1, sample_rate=16000, seconds=0.2)
    meta = pd.read_csv(root / "meta/esc50.csv")
    edit(meta)
    meta.to_csv(root / "meta/esc50.csv", index=False)
    return root


def test_7_missing_file_fail_names_the_row(tree, evar_dirs: Path) -> None:
    add_rows(tree[1], [("audio/test/ghost.wav", "dog", "test")])
    run = _prepare_custom(tree)
    assert run.rc == 2
    line = run.error_line()
    assert "audio/test/ghost.wav: file not found" in line and "--on-error skip" in line
    assert not (evar_dirs / "prepared" / "meta.csv").exists()  # nothing half-prepared


def test_7_missing_file_skip_is_recorded(tree, evar_dirs: Path) -> None:
    add_rows(tree[1], [("audio/test/ghost.wav", "dog", "test")])
    run = _prepare_custom(tree, "skip")
    assert run.rc == 0 and "skipped audio/test/ghost.wav: file not found" in run.err
    task = evar.load_task("meta")
    assert "audio/test/ghost.wav" not in set(task.meta["file"]) and len(task) == 16
    assert task.info["skipped"] == [{"file": "audio/test/ghost.wav", "reason": "file not found"}]


def test_7_missing_file_in_a_builtin_layout(tmp_path: Path) -> None:
    root = _esc50(tmp_path, lambda m: m.loc.__setitem__((3, "filename"), "gone.wav"))
    run = cli("prepare", "esc50", "--root", root)
    assert run.rc == 2 and "audio/gone.wav: file not found" in run.error_line()


def test_8_same_file_in_train_and_test_is_refused(tree, evar_dirs: Path) -> None:
    add_rows(tree[1], [("./audio/train/dog0.wav", "dog", "test")])  # the same file, spelled differently
    run = _prepare_custom(tree)
    assert run.rc == 2
    line = run.error_line()
    assert "audio/train/dog0.wav in test and train" in line and "leakage" in line
    assert "exactly one split" in line  # what to do
    assert not (evar_dirs / "prepared" / "meta.csv").exists()
    assert _prepare_custom(tree, "skip").rc == 2  # --on-error skip does not let leakage through


def test_8_same_file_in_two_folds_is_refused(tmp_path: Path) -> None:
    def duplicate(meta: pd.DataFrame) -> None:
        meta.loc[len(meta)] = {**meta.iloc[0].to_dict(), "fold": 4}

    run = cli("prepare", "esc50", "--root", _esc50(tmp_path, duplicate))
    assert run.rc == 2
    line = run.error_line()
    assert "fold 1 and fold 4" in line and "leakage" in line


def test_8_copy_of_a_clip_in_another_split_is_reported(tree) -> None:
    root, _ = tree
    clean = _prepare_custom(tree)  # train/dog0.wav and test/dog0.wav: same name, different audio
    assert clean.rc == 0 and "same audio" not in clean.err
    (root / "audio/test/dog0.wav").write_bytes((root / "audio/train/dog0.wav").read_bytes())
    run = _prepare_custom(tree)
    assert run.rc == 0
    (line,) = [line for line in run.err.splitlines() if "same audio" in line]
    assert "audio/train/dog0.wav and audio/test/dog0.wav" in line and "train and test" in line
    assert evar.load_task("meta").info["duplicate_audio"] == [
        {"files": ["audio/train/dog0.wav", "audio/test/dog0.wav"], "in": ["train", "test"]}]


def test_9_class_without_training_clips_is_reported(tree, evar_dirs: Path) -> None:
    root, csv = tree
    write_audio(root / "audio/test/bird0.wav", synth_clip(4, np.random.default_rng(0), 16000, SECONDS), 16000)
    add_rows(csv, [("audio/test/bird0.wav", "bird", "test")])
    run = _prepare_custom(tree)
    assert run.rc == 0
    warning = [line for line in run.err.splitlines() if "'bird'" in line]
    assert len(warning) == 1 and "no training clips" in warning[0] and "1 file(s) in test" in warning[0]
    task = evar.load_task("meta")
    assert task.info["unseen_classes"] == {"bird": {"test": 1}} and "bird" not in task.classes
    probed = cli("probe", "--task", "meta", *FAST_PROBE)
    assert probed.rc == 0 and "absent from training" in probed.err
    assert len(results_rows(evar_dirs / "results")) == 1


def test_9_class_in_one_fold_only_is_reported(tmp_path: Path) -> None:
    root = _esc50(tmp_path, lambda m: m.loc.__setitem__((0, "category"), "owl"))
    run = cli("prepare", "esc50", "--root", root)
    assert run.rc == 0
    assert any("'owl'" in line and "1 file(s) in fold 1" in line for line in run.err.splitlines()), run.err


def test_10_label_variants_reported_not_merged(tmp_path: Path) -> None:
    def variants(meta: pd.DataFrame) -> None:
        meta.loc[meta.index[meta["category"] == "dog"][:2], "category"] = ["Dog", "dog "]

    run = cli("prepare", "esc50", "--root", _esc50(tmp_path, variants))
    assert run.rc == 0
    warning = [line for line in run.err.splitlines() if "differ only in case or spaces" in line]
    assert len(warning) == 1, run.err
    assert "'Dog' (1 file(s))" in warning[0] and "'dog ' (1 file(s))" in warning[0] and "'dog' (3 file(s))" in warning[0]
    task = evar.load_task("esc50")
    assert {"Dog", "dog", "dog "} <= set(task.classes)  # kept apart
    assert json.dumps(task.info["label_variants"])


def _prepare_with_first_label(tree, label: str):
    """Prepare the custom task after changing the first row's label."""
    table = pd.read_csv(tree[1], dtype=str)
    table.loc[0, "label"] = label
    table.to_csv(tree[1], index=False)
    return _prepare_custom(tree)


def test_10_custom_csv_stray_spaces_are_reported(tree) -> None:
    run = _prepare_with_first_label(tree, " dog")
    assert run.rc == 0
    assert "' dog'" in run.err


def test_10_custom_csv_case_variants_are_reported(tree) -> None:
    run = _prepare_with_first_label(tree, "DOG")
    assert run.rc == 0 and "'DOG' (1 file(s))" in run.err and "'dog' (7 file(s))" in run.err
    assert {"DOG", "dog"} <= set(evar.load_task("meta").classes)
