"""Fault cases 21-48 (reliability, round two): stale caches, concurrent runs, read-only results, ad-hoc files,
the bad-audio policy across runs, argument mistakes, seed-poor runs hiding better ones, misleading messages.

Each test names the case of the README's "What happens when things go wrong" table it checks.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import evar
import evar.embeddings.cache
import evar.embeddings.files
import evar.results.leaderboard
from evar.audio import load_audio, write_audio
from evar.encoders.melspec import MelSpecEncoder
from evar.results.store import append_result, read_results
from evar.synth.trees import synth_clip
from evar.options import ModelChoice, RunOptions

from .helpers import FAST_PROBE, RATE, SECONDS, add_rows, cli, cli_subprocess, results_rows


def _prepare(root: Path, csv: Path, name: str = "c", *extra: str):
    return cli("prepare", "custom", "--csv", csv, "--root", root, "--name", name, "--unit-sec", SECONDS, *extra)


def _replace_audio_same_size(root: Path, seed: int) -> None:
    """Every clip rewritten with other audio of the same length (same file sizes)."""
    rng = np.random.default_rng(seed)
    for path in sorted(root.rglob("*.wav")):
        size = path.stat().st_size
        write_audio(path, (0.5 * rng.standard_normal(int(RATE * SECONDS))).astype(np.float32).clip(-1, 1), RATE)
        assert path.stat().st_size == size


@pytest.fixture
def task(tree, evar_dirs: Path) -> tuple[Path, Path]:
    root, csv = tree
    assert _prepare(root, csv).rc == 0
    return root, csv


def _unwritable(folder: Path) -> Path:
    """A folder nothing can be written into, even by root: its parent is a plain file."""
    folder.parent.parent.mkdir(parents=True, exist_ok=True)
    folder.parent.write_text("a file, not a folder")
    return folder


# 21: same names and sizes, other content -> embedded again (the key covers content, not only sizes)
def test_21_same_size_content_change_is_embedded_again(task) -> None:
    root, csv = task
    before = np.array(evar.embed("melspec", task="c", run=RunOptions(progress=False)))
    _replace_audio_same_size(root, seed=1)
    assert _prepare(root, csv).rc == 0
    after = np.array(evar.embed("melspec", task="c", run=RunOptions(progress=False)))
    assert not np.allclose(before, after)
    fresh = evar.embeddings.files.embed_files(MelSpecEncoder(), [root / f for f in pd.read_csv(csv)["file"]], SECONDS, run=RunOptions(progress=False))[0]
    np.testing.assert_allclose(after, fresh, rtol=1e-5, atol=1e-5)  # the true embeddings of the new audio


# 22: the task re-pointed at another copy with the same names and sizes -> its own embeddings
def test_22_task_repointed_at_another_copy_gets_its_own_cache(task, tmp_path: Path) -> None:
    root, csv = task
    before = np.array(evar.embed("melspec", task="c", run=RunOptions(progress=False)))
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    _replace_audio_same_size(copy, seed=2)
    assert _prepare(copy, csv).rc == 0
    after = np.array(evar.embed("melspec", task="c", run=RunOptions(progress=False)))
    assert not np.allclose(before, after)


# 23: a file changed without re-preparing is noticed too (mtime changed -> digest recomputed)
def test_23_changed_file_without_prepare_is_noticed(task, evar_dirs: Path) -> None:
    root, _ = task
    before = np.array(evar.embed("melspec", task="c", run=RunOptions(progress=False)))
    _replace_audio_same_size(root, seed=3)
    after = np.array(evar.embed("melspec", task="c", run=RunOptions(progress=False)))
    assert not np.allclose(before, after)
    assert len(list((evar_dirs / "embeddings" / "c").glob("melspec-*"))) == 2


# 24: two uncached runs of the same (model, task) at once: both finish, the second reuses the first's work
def test_24_two_concurrent_probes_of_one_cache(task, evar_dirs: Path) -> None:
    prelude = ("import evar.embeddings.cache, evar.encoders.melspec as m, time\nevar.embeddings.cache.CHUNK_ROWS = 4\n"
               "f = m.MelSpecEncoder.forward_frames\n"
               "def slow(self, wav):\n    time.sleep(0.2)\n    return f(self, wav)\n"
               "m.MelSpecEncoder.forward_frames = slow\n")
    runs = [cli_subprocess("probe", "--task", "c", *FAST_PROBE, prelude=prelude) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0, err
        assert "accuracy" in out
    assert len(results_rows(evar_dirs / "results")) == 2
    folders = list((evar_dirs / "embeddings" / "c").glob("melspec-*"))
    assert len(folders) == 1 and (folders[0] / "embeddings.npy").is_file() and not (folders[0] / "parts").exists()


# 25: a results folder that cannot be written stops the probe before any work, in one line
def test_25_unwritable_results_folder_fails_before_work(task, evar_dirs: Path, monkeypatch) -> None:
    monkeypatch.setenv("EVAR_RESULTS_DIR", str(_unwritable(evar_dirs / "blocked" / "results")))
    run = cli("probe", "--task", "c", *FAST_PROBE)
    assert run.rc == 2 and "not writable" in run.error_line() and "EVAR_RESULTS_DIR" in run.error_line()
    assert not (evar_dirs / "embeddings").exists()
    sweep = cli("sweep", "--models", "melspec", "--tasks", "c", "--max-epochs", "3")
    assert sweep.rc == 2 and "not writable" in sweep.error_line()


# 26: the results file cannot be written at the end: the error line still carries the score
def test_26_unwritable_at_the_end_keeps_the_score(task, monkeypatch) -> None:
    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("evar.results.store._append_bytes", refuse)
    run = cli("probe", "--task", "c", *FAST_PROBE)
    line = run.error_line()
    assert run.rc == 2 and "the score of this run: melspec on c: accuracy" in line


# 27: leaderboard --out and plot bars into a folder that cannot be written: one line, no traceback
def test_27_leaderboard_and_plot_into_unwritable_folder(task, tmp_path: Path) -> None:
    assert cli("probe", "--task", "c", *FAST_PROBE).rc == 0
    locked = _unwritable(tmp_path / "blocked" / "out")
    for args in (("leaderboard", "--out", locked / "board.md"), ("plot", "bars", "--out", locked / "bars.png")):
        run = cli(*args)
        assert run.rc == 1 and "cannot access" in run.error_line() and "Not a directory" in run.error_line()


# 28: ad-hoc files keep the user's order, repeats included, and their list is written beside the rows
def test_28_adhoc_embed_keeps_order_and_writes_the_file_list(tree, tmp_path: Path) -> None:
    root, _ = tree
    files = [root / "audio/train/dog1.wav", root / "audio/test/cat0.wav", root / "audio/train/dog1.wav"]
    out = tmp_path / "x.npy"
    run = cli("embed", "--model", "melspec", *files, "--out", out)
    assert run.rc == 0, run.err
    rows = np.load(out)
    listing = pd.read_csv(tmp_path / "x.files.csv")
    assert list(listing["file"]) == [str(f) for f in files] and set(listing["status"]) == {"ok"}
    single = [np.asarray(evar.embed("melspec", files=[f], run=RunOptions(progress=False)))[0] for f in files]
    np.testing.assert_allclose(rows, np.stack(single), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(rows[0], rows[2])


# 29: with --on-error skip, a bad ad-hoc file is named, its row is NaN and the list says why
def test_29_adhoc_skip_names_the_bad_file(tree, tmp_path: Path) -> None:
    root, _ = tree
    bad = root / "broken.wav"
    bad.write_bytes(b"RIFF not really")
    out = tmp_path / "x.npy"
    run = cli("embed", "--model", "melspec", root / "audio/train/dog0.wav", bad, "--out", out, "--on-error", "skip")
    assert run.rc == 0 and "broken.wav" in run.err
    rows = np.load(out)
    assert np.isfinite(rows[0]).all() and np.isnan(rows[1]).all()
    status = pd.read_csv(tmp_path / "x.files.csv")["status"]
    assert status[0] == "ok" and "broken.wav" in status[1]


# 30: clips shorter than an analysis window (one sample, 10 ms) are padded with a warning, not a crash
@pytest.mark.parametrize("model", ["melspec", "byola"])
def test_30_tiny_clips_are_padded(tmp_path: Path, model: str, byola512_weights: Path) -> None:
    files = []
    for n in (1, 160):
        path = tmp_path / f"tiny{n}.wav"
        write_audio(path, np.full(n, 0.1, dtype=np.float32), RATE)
        files.append(path)
    weights = ["--weights", byola512_weights, "--stats", "-5.49,5.04"] if model == "byola" else []
    run = cli("embed", "--model", model, *weights, *files, "--out", tmp_path / "t.npy")
    assert run.rc == 0, run.err
    assert np.isfinite(np.load(tmp_path / "t.npy")).all() and "padded with silence" in run.err


# 31: a default (fail) run does not quietly reuse embeddings that a skip run computed without some files
def test_31_fail_run_refuses_a_cache_with_skipped_files(tree, evar_dirs: Path) -> None:
    root, csv = tree
    assert _prepare(root, csv).rc == 0
    (root / "audio/train/dog2.wav").write_bytes(b"\0" * 64)  # broken after prepare
    assert cli("probe", "--task", "c", *FAST_PROBE, "--on-error", "skip").rc == 0
    run = cli("probe", "--task", "c", *FAST_PROBE)
    line = run.error_line()
    assert run.rc == 2 and "dog2.wav" in line and "--on-error skip" in line
    assert len(results_rows(evar_dirs / "results")) == 1


# 32: a WAV cut short mid-file is reported (prepare and embed), not read as a shorter clip
def test_32_truncated_wav_is_reported(tree, tmp_path: Path) -> None:
    root, csv = tree
    path = root / "audio/train/cat1.wav"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    run = _prepare(root, csv)
    assert run.rc == 2 and "truncated" in run.error_line() and "cat1.wav" in run.error_line()
    with pytest.raises(evar.errors.AudioError, match="truncated"):
        load_audio(path, RATE)


# 33: --stats 0,0 (a zero std would make every embedding NaN) is refused by the parser
def test_33_zero_std_statistics_are_refused(tree, tmp_path: Path) -> None:
    root, _ = tree
    run = cli("embed", "--model", "melspec", root / "audio/train/dog0.wav", "--out", tmp_path / "x.npy",
              "--stats", "0,0")
    assert run.rc == 2 and "STD a positive number" in run.err


# 34: one long outlier does not set a custom task's unit; prepare prints the unit
def test_34_outlier_does_not_set_the_unit(tree) -> None:
    root, csv = tree
    write_audio(root / "audio/train/long.wav", synth_clip(0, np.random.default_rng(0), RATE, 30.0), RATE)
    add_rows(csv, [("audio/train/long.wav", "dog", "train")])
    run = cli("prepare", "custom", "--csv", csv, "--root", root, "--name", "c")
    assert run.rc == 0, run.err
    assert f"unit {SECONDS:g} s" in run.out and "long.wav" in run.err
    assert evar.tasks.load_task("c").spec.unit_sec == SECONDS


# 35: the same file twice in one split is refused, naming it
def test_35_repeated_row_in_one_split_is_refused(tree) -> None:
    root, csv = tree
    add_rows(csv, [("audio/train/dog0.wav", "dog", "train")])
    run = _prepare(root, csv)
    assert run.rc == 2 and "dog0.wav (2 rows)" in run.error_line() and "more than once" in run.error_line()


BAD_ARGUMENTS = {
    "36 --seeds abc": (["probe", "--task", "c", "--model", "melspec", "--seeds", "abc"], "comma-separated integers"),
    "37 --seeds ''": (["probe", "--task", "c", "--model", "melspec", "--seeds", ""], "comma-separated integers"),
    "38 --seeds 42,42": (["probe", "--task", "c", "--model", "melspec", "--seeds", "42,42"], "repeated"),
    "39 --device cuda (CPU build)": (["probe", "--task", "c", "--model", "melspec", "--device", "cuda"], "CUDA"),
    "40 --device foo": (["probe", "--task", "c", "--model", "melspec", "--device", "foo"], "expected cpu, cuda"),
    "41 --max-epochs 0": (["probe", "--task", "c", "--model", "melspec", "--max-epochs", "0"], "at least 1"),
    "42 --lr -1": (["probe", "--task", "c", "--model", "melspec", "--lr", "-1"], "above 0"),
    "43 --batch-size 0": (["probe", "--task", "c", "--model", "melspec", "--batch-size", "0"], "at least 1"),
    "44 --num-workers -1": (["probe", "--task", "c", "--model", "melspec", "--num-workers", "-1"], "at least 0"),
    "45 --patience -1": (["probe", "--task", "c", "--model", "melspec", "--patience", "-1"], "at least 0"),
    "46 --unit-sec 0": (["prepare", "custom", "--root", ".", "--csv", "x", "--name", "x", "--unit-sec", "0"], "above 0"),
    "47 --model-options nosuch": (["probe", "--task", "c", "--model", "melspec", "--model-options", '{"nosuch": 1}'],
                                  "takes no option 'nosuch'"),
    "48 hear --model-options notjson": (["hear", "validate", "m", "--model-options", "notjson"], "not JSON"),
}


# 36-48: a user's mistake in an argument is one line and exit code 2, never a traceback
@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_36_to_48_argument_mistakes_are_one_line(task, case: str) -> None:
    args, expected = BAD_ARGUMENTS[case]
    if "CUDA" in expected:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    run = cli(*args)
    rc, err = run.rc, run.err
    lines = [line for line in err.splitlines() if "error" in line]
    assert rc == 2 and len(lines) == 1 and expected in lines[0] and "Traceback" not in err, err


# 49: the --help example with a negative mean parses; unknown names suggest the closest
def test_49_negative_mean_and_did_you_mean(tree, tmp_path: Path) -> None:
    root, _ = tree
    run = cli("embed", "--model", "byol", root / "audio/train/dog0.wav", "--out", tmp_path / "x.npy",
              "--stats", "-5.49,5.04")
    assert run.rc == 2 and "did you mean 'byola'" in run.error_line()
    run = cli("prob")
    assert run.rc == 2 and "did you mean 'probe'" in run.err


# 50: a later one-seed run does not hide an earlier three-seed average; the table says how many seeds
def test_50_more_seeds_win_over_a_later_run(evar_dirs: Path) -> None:
    base = {"protocol": "linear", "model": "m", "layers": "", "task": "esc50", "metric": "accuracy", "std": 0.01,
            "n_folds": 5, "weights": "", "weights_sha256": "", "settings": {"lr": 0.0003}}
    append_result({**base, "score": 0.765, "seeds": [42, 43, 44], "date": "2026-01-01T00:00:00+00:00"})
    append_result({**base, "score": 0.735, "seeds": [1], "date": "2026-01-02T00:00:00+00:00"})
    board = evar.results.leaderboard.build_leaderboard(read_results())
    assert round(float(board.mean.iloc[0, 0]), 1) == 76.5
    assert any("3 seed(s)" in note for note in board.notes)
    from evar.results.plots import _final_score

    assert _final_score(read_results(), "linear", "m", "esc50") == (pytest.approx(76.5), 3)


# 51: a failed dataset download advises the dataset's own remedy and keeps no empty .part
def test_51_failed_download_message_and_no_empty_part(tmp_path: Path) -> None:
    from evar.tasks.download import RemoteFile, fetch_file

    dest = tmp_path / "x.zip"
    with pytest.raises(evar.errors.EvarError) as caught:
        fetch_file(RemoteFile("http://127.0.0.1:9/x.zip", "x.zip"), dest, progress=False)
    assert "--weights" not in str(caught.value) and "yourself into" in str(caught.value)
    assert not dest.with_name("x.zip.part").exists()


# 52: a valid file whose name is not UTF-8 is read, not called unreadable
def test_52_non_utf8_file_name_is_read(tmp_path: Path) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.wav")
    write_audio(tmp_path / "plain.wav", np.full(1600, 0.1, dtype=np.float32), RATE)
    os.replace(tmp_path / "plain.wav", raw)
    assert len(load_audio(os.fsdecode(raw), RATE)) == 1600


# 53: the interrupt message promises only what the command does
@pytest.mark.parametrize("command, promise", [("probe", "no result row"), ("finetune", "--resume"),
                                              ("embed", "resumes")])
def test_53_interrupt_message_fits_the_command(monkeypatch, command: str, promise: str) -> None:
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(evar.cli.COMMANDS, command, interrupted)
    args = {"probe": ["probe", "--task", "c", "--model", "m"], "finetune": ["finetune", "--task", "c", "--model", "m"],
            "embed": ["embed", "--task", "c", "--model", "m"]}[command]
    run = cli(*args)
    assert run.rc == 130 and promise in run.err


# 54: runs from a checkout of evar do not append to its shipped results/ (default: the user's cache)
def test_54_results_default_to_the_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EVAR_RESULTS_DIR")
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    assert evar.paths.results_dir() == evar.paths.cache_dir() / "results"


# 55: a clip far longer than the window is embedded in windows: bounded input, the same embedding
def test_55_long_clip_is_embedded_in_windows(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(evar.embeddings.files, "WINDOW_SEC", 2.0)
    path = tmp_path / "long.wav"
    write_audio(path, synth_clip(1, np.random.default_rng(0), RATE, 9.0), RATE)
    longest = []
    original = MelSpecEncoder.forward_frames

    def watched(self, wav):
        longest.append(wav.shape[-1])
        return original(self, wav)

    monkeypatch.setattr(MelSpecEncoder, "forward_frames", watched)
    windowed = np.asarray(evar.embed("melspec", files=[path], run=RunOptions(progress=False)))
    assert max(longest) <= 2 * RATE
    whole = MelSpecEncoder().embed(load_audio(path, RATE)).numpy()
    np.testing.assert_allclose(windowed, whole, rtol=0.05, atol=0.05)  # only the window edges' frames differ


# 56: the layers plot's last point and its dashed final-embedding line are one number for one seed: the
# layer-wise probe of BYOL-A's last layer uses the same statistics, row order and stream as the plain probe
def test_56_last_layer_equals_the_final_embedding(tmp_path: Path, byola512_weights: Path) -> None:
    from evar.synth.trees import make_esc50_tree

    root = make_esc50_tree(tmp_path / "esc", n_classes=3, clips_per_class_per_fold=2, sample_rate=16000,
                           seconds=1.0, seed=2, noise=0.5)
    evar.prepare_task("esc50", root)
    final = evar.probe("esc50", ModelChoice("byola", weights=str(byola512_weights)), run=RunOptions(progress=False))
    last = evar.probe_layers("esc50", ModelChoice("byola", weights=str(byola512_weights)), run=RunOptions(progress=False))[-1]
    assert last.scores == final.scores


# 57: output piped into a reader that has gone (`evar list models | head -1`) ends quietly, not as an error
def test_57_closed_pipe_is_not_an_error() -> None:
    import subprocess
    import sys

    run = subprocess.Popen([sys.executable, "-m", "evar.cli", "list", "models"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    run.stdout.close()  # the reader leaves before evar writes its first line
    err = run.stderr.read()
    assert run.wait(timeout=120) == 141 and "error" not in err and "Traceback" not in err, err
