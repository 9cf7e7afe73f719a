"""Cases 1-6: bad audio under --on-error fail (stops, no result row) and skip (run completes, skipped
files listed in the results row's settings.skipped_files and in results/skipped/<run_id>.log); 6-channel and 8 kHz audio is mixed and
resampled, all-silent audio is valid audio (accepted in both modes, finite embedding)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import evar
from evar.audio import load_audio, write_audio
from evar.synth.trees import synth_clip
from evar.options import RunOptions

from .helpers import FAST_PROBE, RATE, SECONDS, add_rows, cli, results_rows

BAD = "audio/test/bad.wav"


def _write_fault(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    if kind == "unreadable":
        path.write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    elif kind == "zero-length":
        path.write_bytes(b"")
    elif kind in ("nan", "inf"):  # a float WAV whose header is fine and whose samples are not
        wav = synth_clip(0, rng, RATE, SECONDS)
        wav[100:110] = np.nan if kind == "nan" else np.inf
        sf.write(str(path), wav, RATE, subtype="FLOAT")
    else:
        raise ValueError(kind)


def _prepare(tree, mode: str):
    root, csv = tree
    return cli("prepare", "custom", "--csv", csv, "--root", root, "--name", "faulty", "--unit-sec", SECONDS,
               "--on-error", mode)


def _probe(mode: str):
    return cli("probe", "--task", "faulty", *FAST_PROBE, "--on-error", mode)


@pytest.mark.parametrize("kind", ["unreadable", "zero-length", "nan", "inf", "unreadable-after-prepare"])
def test_fail_stops_before_a_result(tree, evar_dirs: Path, kind: str) -> None:
    root, csv = tree
    add_rows(csv, [(BAD, "dog", "test")])
    late = kind == "unreadable-after-prepare"
    if late:  # a file that broke after prepare (disk error, overwritten): found when embedding
        write_audio(root / BAD, synth_clip(0, np.random.default_rng(1), RATE, SECONDS), RATE)
    else:
        _write_fault(root / BAD, kind)
    prepared = _prepare(tree, "fail")
    if kind in ("unreadable", "zero-length"):  # caught by prepare's header check
        assert prepared.rc == 2
        line = prepared.error_line()
    else:
        assert prepared.rc == 0, prepared.err
        if late:
            _write_fault(root / BAD, "unreadable")
        probed = _probe("fail")
        assert probed.rc == 2
        line = probed.error_line()
    assert BAD in line or str(root / BAD) in line
    assert "--on-error skip" in line  # what to do
    assert results_rows(evar_dirs / "results").empty


@pytest.mark.parametrize("kind", ["unreadable", "zero-length", "nan", "inf"])
def test_skip_completes_and_lists_the_file(tree, evar_dirs: Path, kind: str) -> None:
    root, csv = tree
    add_rows(csv, [(BAD, "dog", "test")])
    _write_fault(root / BAD, kind)
    prepared = _prepare(tree, "skip")
    assert prepared.rc == 0, prepared.err
    probed = _probe("skip")
    assert probed.rc == 0, probed.err
    assert "bad.wav" in prepared.err + probed.err  # reported as it happens
    rows = results_rows(evar_dirs / "results")
    assert len(rows) == 1 and rows["task"][0] == "faulty"
    assert json.loads(rows["settings"][0])["skipped_files"] == [BAD]
    log = evar_dirs / "results" / "skipped" / f"{rows['run_id'][0]}.log"
    assert log.read_text().startswith(f"{BAD}\t") and str(log) in probed.err


@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_silent_clip_is_valid_audio(tree, evar_dirs: Path, mode: str) -> None:
    """Decision: all-silent audio is accepted as is (a dataset may hold silent clips; dropping them would
    change the protocol's test set). Its embedding is finite and nothing is listed as skipped."""
    root, csv = tree
    add_rows(csv, [(BAD, "dog", "test")])
    write_audio(root / BAD, np.zeros(int(RATE * SECONDS), dtype=np.float32), RATE)
    assert _prepare(tree, mode).rc == 0
    probed = _probe(mode)
    assert probed.rc == 0, probed.err
    assert "bad.wav" not in probed.err
    X = evar.embed("melspec", task="faulty", run=RunOptions(progress=False))
    row = list(evar.load_task("faulty").meta["file"]).index(BAD)
    assert np.isfinite(X[row]).all()
    rows = results_rows(evar_dirs / "results")
    assert len(rows) == 1 and json.loads(rows["settings"][0])["skipped_files"] == []


@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_six_channels_and_8khz_are_mixed_and_resampled(tree, evar_dirs: Path, mode: str) -> None:
    root, csv = tree
    rng = np.random.default_rng(3)
    mono = synth_clip(1, rng, RATE, SECONDS)
    gains = np.array([1.5, 0.5, 1.2, 0.8, 1.0, 1.0])  # mean 1: the mono mix is exactly ``mono``
    sf.write(str(root / "audio/test/six.wav"), mono[:, None] * gains[None, :], RATE, subtype="FLOAT")
    sf.write(str(root / "audio/test/mono.wav"), mono, RATE, subtype="FLOAT")
    t = np.arange(int(8000 * SECONDS)) / 8000
    sf.write(str(root / "audio/test/low.wav"), 0.3 * np.sin(2 * np.pi * 440 * t), 8000, subtype="FLOAT")
    add_rows(csv, [("audio/test/six.wav", "cat", "test"), ("audio/test/mono.wav", "cat", "test"),
                   ("audio/test/low.wav", "dog", "test")])
    assert _prepare(tree, mode).rc == 0
    probed = _probe(mode)
    assert probed.rc == 0, probed.err
    assert "skipped" not in probed.err
    low = load_audio(root / "audio/test/low.wav", RATE)
    assert len(low) == int(RATE * SECONDS)
    expected = 0.3 * np.sin(2 * np.pi * 440 * np.arange(len(low)) / RATE)
    assert np.corrcoef(low[200:-200], expected[200:-200])[0, 1] > 0.999  # a 440 Hz tone at 16 kHz
    X = evar.embed("melspec", task="faulty", run=RunOptions(progress=False))
    files = list(evar.load_task("faulty").meta["file"])
    six, ref = X[files.index("audio/test/six.wav")], X[files.index("audio/test/mono.wav")]
    np.testing.assert_allclose(six, ref, rtol=0, atol=1e-4)  # float32 channel mean vs the mono file
    assert np.isfinite(X[files.index("audio/test/low.wav")]).all()
    assert len(results_rows(evar_dirs / "results")) == 1
