"""Cases 11, 14, 20: the embedding cache under SIGKILL, truncation and a full disk.

Every run embeds the same 16 clips with melspec in chunks of 4 rows (``CHUNK_ROWS``), so a run
writes several chunk files; the reference is an uninterrupted run in another embeddings folder.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import evar
import evar.embeddings.cache
from evar.encoders.byola import AudioNTT2020
from evar.encoders.melspec import MelSpecEncoder
from evar.options import ModelChoice, RunOptions

from .helpers import (
    SECONDS, DiskBudget, assert_no_half_files, cli, cli_subprocess, data_files,
)

CHUNK = 4
EMBED = ["embed", "--task", "c", "--model", "melspec", "--batch-size", str(CHUNK)]
#: Runs in the process that gets killed: small chunks, and each batch slowed so the kill lands mid-run
SLOW_SMALL_CHUNKS = f"""
import time
import evar.embeddings.cache
from evar.encoders.byola import AudioNTT2020
from evar.encoders.melspec import MelSpecEncoder
from evar.options import ModelChoice, RunOptions
evar.embeddings.cache.CHUNK_ROWS = {CHUNK}
_forward = MelSpecEncoder.forward
def _slow(self, wav):
    time.sleep(0.3)
    return _forward(self, wav)
MelSpecEncoder.forward = _slow
"""


def count_clips(monkeypatch, module_class: type) -> dict:
    """``{"clips": n}``: clips (batch rows) passed through ``module_class.forward`` from now on."""
    counter = {"clips": 0}
    forward = module_class.forward

    def counting(self, x):
        counter["clips"] += len(x)
        return forward(self, x)

    monkeypatch.setattr(module_class, "forward", counting)
    return counter


@pytest.fixture
def prepared(tree, evar_dirs: Path, monkeypatch) -> dict:
    """Task ``c`` prepared, small chunks, a counter of clips the encoder embeds, the reference embeddings."""
    root, csv = tree
    assert cli("prepare", "custom", "--csv", csv, "--root", root, "--name", "c", "--unit-sec", SECONDS).rc == 0
    monkeypatch.setattr(evar.embeddings.cache, "CHUNK_ROWS", CHUNK)
    counter = count_clips(monkeypatch, MelSpecEncoder)
    monkeypatch.setenv("EVAR_EMBEDDINGS_DIR", str(evar_dirs / "reference"))
    counter["reference"] = np.array(evar.embed("melspec", task="c", run=RunOptions(batch_size=CHUNK, progress=False)))
    counter["reference_files"] = data_files(evar_dirs / "reference")
    monkeypatch.setenv("EVAR_EMBEDDINGS_DIR", str(evar_dirs / "embeddings"))
    counter["clips"] = 0
    return counter


def _cached(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix == ".npy" and "parts" not in p.parts]


def _bits(x: np.ndarray) -> bytes:
    return np.ascontiguousarray(x).tobytes()


@pytest.mark.parametrize("model", ["melspec", "byola"])  # byola: normalisation statistics measured first
def test_11_sigkill_mid_embed_resumes_bit_identical(tree, evar_dirs: Path, monkeypatch, model: str) -> None:
    root, csv = tree
    assert cli("prepare", "custom", "--csv", csv, "--root", root, "--name", "c", "--unit-sec", SECONDS).rc == 0
    monkeypatch.setattr(evar.embeddings.cache, "CHUNK_ROWS", CHUNK)
    args = [*EMBED[:4], model, *EMBED[5:]]
    net, weights = (MelSpecEncoder, None) if model == "melspec" else (AudioNTT2020, evar_dirs / "byola.pth")
    if weights is not None:
        torch.manual_seed(0)
        torch.save(AudioNTT2020(d=512).state_dict(), weights)
        args += ["--weights", str(weights)]
    monkeypatch.setenv("EVAR_EMBEDDINGS_DIR", str(evar_dirs / "reference"))
    assert cli(*args).rc == 0
    reference = data_files(evar_dirs / "reference")
    monkeypatch.setenv("EVAR_EMBEDDINGS_DIR", str(evar_dirs / "embeddings"))

    cache = evar_dirs / "embeddings" / "c"
    proc = cli_subprocess(*args, prelude=SLOW_SMALL_CHUNKS.replace("MelSpecEncoder", net.__name__).replace(
        "evar.encoders.melspec", net.__module__))
    deadline = time.monotonic() + 60
    while not list(cache.rglob("parts/*.npy")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    done = list(cache.rglob("parts/*.npy"))
    assert 1 <= len(done) < 4 and not _cached(cache)  # killed mid-run

    counted = count_clips(monkeypatch, net)
    run = cli(*args)
    assert run.rc == 0, run.err
    assert counted["clips"] == 16 - CHUNK * len(done)  # only the missing chunks were computed
    arrays = {k: v for k, v in data_files(evar_dirs / "embeddings").items() if k.endswith(".npy")}
    assert arrays and arrays == {k: v for k, v in reference.items() if k.endswith(".npy")}  # bit for bit
    if model == "byola":  # the resumed run normalised with the statistics the reference measured
        resumed = data_files(evar_dirs / "embeddings")
        (manifest,) = [k for k in reference if k.endswith("manifest.json")]
        assert json.loads(resumed[manifest])["stats"] == json.loads(reference[manifest])["stats"]
    assert_no_half_files(evar_dirs / "embeddings")


def test_14_truncated_final_cache_file_is_recomputed(prepared: dict, evar_dirs: Path) -> None:
    assert cli(*EMBED).rc == 0
    prepared["clips"] = 0
    (final,) = _cached(evar_dirs / "embeddings")
    final.write_bytes(final.read_bytes()[: final.stat().st_size // 2])
    run = cli(*EMBED)
    assert run.rc == 0, run.err
    assert final.name in run.err  # says which file it recomputes
    assert prepared["clips"] > 0
    assert _bits(evar.embed("melspec", task="c", run=RunOptions(batch_size=CHUNK, progress=False))) == _bits(prepared["reference"])
    assert_no_half_files(evar_dirs / "embeddings")


def test_14_overwritten_final_cache_file_fails_its_checksum(prepared: dict, evar_dirs: Path) -> None:
    """Same size, other bytes (a bad disk, a stray write): the recorded sha256 catches it."""
    assert cli(*EMBED).rc == 0
    prepared["clips"] = 0
    (final,) = _cached(evar_dirs / "embeddings")
    data = bytearray(final.read_bytes())
    data[-8:] = b"\x7f" * 8
    final.write_bytes(bytes(data))
    run = cli(*EMBED)
    assert run.rc == 0, run.err
    assert final.name in run.err and "checksum" in run.err
    assert prepared["clips"] > 0
    assert _bits(evar.embed("melspec", task="c", run=RunOptions(batch_size=CHUNK, progress=False))) == _bits(prepared["reference"])


def test_14_truncated_chunk_of_an_interrupted_run_is_recomputed(prepared: dict, evar_dirs: Path, monkeypatch) -> None:
    forward = MelSpecEncoder.forward

    def interrupt_after_two_chunks(self, wav):
        if prepared["clips"] >= 2 * CHUNK:
            raise KeyboardInterrupt
        return forward(self, wav)

    monkeypatch.setattr(MelSpecEncoder, "forward", interrupt_after_two_chunks)
    assert cli(*EMBED).rc == 130
    monkeypatch.setattr(MelSpecEncoder, "forward", forward)
    parts = sorted((evar_dirs / "embeddings").rglob("parts/*.npy"))
    assert len(parts) == 2
    parts[1].write_bytes(parts[1].read_bytes()[:-100])
    prepared["clips"] = 0
    run = cli(*EMBED)
    assert run.rc == 0, run.err
    assert parts[1].name in run.err
    assert prepared["clips"] == 16 - CHUNK  # the damaged chunk and the two never written
    assert _bits(evar.embed("melspec", task="c", run=RunOptions(batch_size=CHUNK, progress=False))) == _bits(prepared["reference"])


def test_20_disk_full_while_writing_embeddings(prepared: dict, evar_dirs: Path, monkeypatch) -> None:
    folder = evar_dirs / "embeddings"
    assert cli(*EMBED).rc == 0  # a finished cache that must survive
    before = data_files(folder)
    other = [*EMBED, "--model-options", json.dumps({"n_mels": 32})]
    with monkeypatch.context() as patch:  # how much a complete second cache writes
        monkeypatch.setenv("EVAR_EMBEDDINGS_DIR", str(evar_dirs / "measure"))
        disk = DiskBudget(evar_dirs / "measure", None).install(patch)
        assert cli(*other).rc == 0
        reference = np.array(evar.embed(ModelChoice("melspec", options={"n_mels": 32}), task="c", run=RunOptions(batch_size=CHUNK, progress=False)))
    monkeypatch.setenv("EVAR_EMBEDDINGS_DIR", str(folder))
    with monkeypatch.context() as patch:
        DiskBudget(folder, disk.used // 2).install(patch)  # the disk fills half-way through the second cache
        run = cli(*other)
    assert run.rc == 2
    line = run.error_line()
    assert ("disk full" in line or "No space left on device" in line) and str(folder) in line
    assert_no_half_files(folder)
    assert {k: v for k, v in data_files(folder).items() if k in before} == before  # the first cache is intact
    assert cli(*other).rc == 0  # with space again, the run completes from what was kept
    X = evar.embed(ModelChoice("melspec", options={"n_mels": 32}), task="c", run=RunOptions(batch_size=CHUNK, progress=False))
    assert _bits(X) == _bits(reference)
