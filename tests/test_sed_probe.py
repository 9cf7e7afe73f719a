"""SED probe: frame labels, median filter, decoding, post-processing choice, and generated tasks end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evar.cli import main
from evar.results.store import read_results
from evar.protocols.sed import (
    ClipFrames, PostProcessing, decode_class, frame_targets, median_filter, probe_sed, tune_postprocessing,
)
from evar.metrics.sed import Event
from evar.synth.sed import make_hear_event_task, make_sed_csv_tree
from evar.tasks.hear import prepare_hear
from evar.options import ModelChoice, RunOptions, SedSettings


def test_frame_targets_include_both_ends():
    times = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    y = frame_targets([Event(0.1, 0.3, "dog"), Event(0.35, 0.5, "cat"), Event(0.0, 0.1, "owl")], times, ["cat", "dog"])
    assert y.tolist() == [[0, 0], [0, 1], [0, 1], [0, 1], [1, 0]]  # onset <= t <= offset; owl is not a class


def test_median_filter_hand_and_scipy():
    x = np.array([0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0])[:, None]
    # width 3, mirrored ends: [0 | 0 1 0 0 1 1 1 0 | 0] -> medians 0 0 0 0 1 1 1 0
    assert median_filter(x, 3)[:, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 0]
    assert median_filter(x, 1) is x
    ndimage = pytest.importorskip("scipy.ndimage", reason="scipy is not installed (only the cross-check needs it)")
    rng = np.random.default_rng(0)
    for width in range(2, 9):  # even widths too: scipy takes the upper median of frames i - w//2 ..
        data = rng.uniform(size=(50, 3))
        np.testing.assert_array_equal(median_filter(data, width), ndimage.median_filter(data, size=(width, 1)))


def test_decode_runs_and_min_duration():
    times = np.round(np.arange(10) * 0.1, 3)
    probs = np.array([0.0, 0.9, 0.9, 0.9, 0.0, 0.0, 0.7, 0.0, 0.6, 0.6])
    events = decode_class(probs, times, "dog", PostProcessing(0.5, 0.0, 0.0))
    assert events == [Event(0.1, 0.3, "dog"), Event(0.6, 0.6, "dog"), Event(0.8, 0.9, "dog")]  # first..last frame
    events = decode_class(probs, times, "dog", PostProcessing(0.5, 0.0, 150.0))
    assert events == [Event(0.1, 0.3, "dog")]  # runs shorter than 150 ms dropped
    # 300 ms = 3 frames: frame 6 (0.7 between zeros) -> 0; frame 7 ([0.7, 0, 0.6]) -> 0.6: one run 0.7-0.9
    assert decode_class(probs, times, "dog", PostProcessing(0.5, 300.0, 0.0)) == [Event(0.1, 0.3, "dog"),
                                                                                  Event(0.7, 0.9, "dog")]


def test_postprocessing_is_chosen_per_class_on_validation():
    times = np.arange(100) * 0.05
    probs = np.zeros((100, 2))
    probs[20:40, 0] = 0.35  # "low" events only ever reach 0.35: a threshold below it is needed
    probs[60:70, 0] = 0.35
    clips = [ClipFrames("v.wav", np.zeros((100, 1)), times)]
    reference = {"v.wav": [Event(1.0, 2.0, "low"), Event(3.0, 3.5, "low")]}  # no "quiet" events to tune on
    post = tune_postprocessing(clips, [probs], reference, ["low", "quiet"])
    assert post["low"].threshold < 0.35
    assert post["quiet"] == PostProcessing()  # HEAR's setting stays when validation cannot tell


def _shuffle_timing(csv: Path, seed: int = 1) -> None:
    """Give every event another clip's timing (labels and clips kept): nothing left to learn about onsets."""
    table = pd.read_csv(csv)
    order = np.random.default_rng(seed).permutation(len(table))
    table[["onset", "offset"]] = table[["onset", "offset"]].to_numpy()[order]
    table.to_csv(csv, index=False)


def test_generated_csv_task_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture):
    csv = make_sed_csv_tree(tmp_path / "data")
    assert main(["prepare", "sed", "--csv", str(csv), "--root", str(tmp_path / "data"), "--name", "synth_sed"]) == 0
    assert main(["probe", "--task", "synth_sed", "--model", "melspec", "--max-epochs", "40", "--lr", "1e-3"]) == 0
    assert "event_onset_200ms_fms" in capsys.readouterr().out
    row = read_results().iloc[-1]
    assert (row["protocol"], row["model"], row["task"], row["metric"]) == ("sed", "melspec", "synth_sed",
                                                                           "event_onset_200ms_fms")
    settings = json.loads(row["settings"])
    details = settings["sed"][0]
    assert float(row["score"]) > 0.8  # tones at class pitches in noise: onsets found within 200 ms
    assert details["segment_1s"]["f_measure"] > 0.8 and details["segment_1s"]["error_rate"] < 0.4
    assert set(details["postprocessing"]) == {"beep", "chirp", "horn"} and settings["loss"] == "bce"

    # control: the same audio with every event's timing taken from another event -> far below the real labels
    control = tmp_path / "control.csv"
    control.write_text(csv.read_text())
    _shuffle_timing(control)
    assert main(["prepare", "sed", "--csv", str(control), "--root", str(tmp_path / "data"), "--name", "control"]) == 0
    shuffled = probe_sed("control", ModelChoice("melspec"), settings=SedSettings(max_epochs=40), run=RunOptions(progress=False), record=False)
    assert shuffled.mean < 0.5 < float(row["score"])


def test_hear_event_folder_with_focal_and_soft_f1_losses(tmp_path: Path):
    root = make_hear_event_task(tmp_path / "tiny_sed-v0.0.1-full", seed=3)
    prepare_hear(root, name="hear_sed")
    from evar.api import probe  # the Python API routes event tasks to the SED probe

    result = probe("hear_sed", "melspec", settings=SedSettings(max_epochs=30, lr=1e-3), run=RunOptions(progress=False), record=False)
    assert result.metric == "event_onset_200ms_fms" and result.mean > 0.5
    for loss in ("afl", "soft_f1"):
        other = probe_sed("hear_sed", ModelChoice("melspec"), settings=SedSettings(loss=loss, afl_gamma=1.0, max_epochs=30), run=RunOptions(progress=False), record=False)
        assert other.settings["loss"] == loss and 0.0 <= other.mean <= 1.0


def test_encoder_with_task_statistics(tmp_path: Path):
    """BYOL-A normalises with statistics of the training clips: measured on whole clips before the frames."""
    from encoder_checkpoints import write_checkpoint

    weights, _ = write_checkpoint("byola", tmp_path / "ckpt")
    prepare_hear(make_hear_event_task(tmp_path / "t", clips={"train": 4, "valid": 2, "test": 2}), name="sed_stats")
    result = probe_sed("sed_stats", ModelChoice("byola", weights=str(weights)), settings=SedSettings(max_epochs=10), run=RunOptions(progress=False), record=False)
    assert result.settings["encoder"]["class"] == "BYOLAEncoder" and 0.0 <= result.mean <= 1.0
