"""Sweeps on the local backend: a 2 x 2 grid, a rerun that does no work, failures, status."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import evar
import evar.sweep.backends as sweep
from evar.cli import main
from evar.errors import EvarError
from evar.results.store import read_results
from evar.sweep.backends import run_sweep
from evar.sweep.jobs import JobStore, effective_state, make_grid, parse_models
from evar.sweep.status import status_text
from evar.options import LinearSettings, ModelChoice, RunOptions
from sweep_support import comparable, grid, prepare_esc50, prepare_spcv2


def _no_work(*args, **kwargs):
    raise AssertionError("a rerun of a finished sweep must not embed or probe")


def test_grid_runs_once_and_rerun_does_no_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare_esc50(tmp_path)
    prepare_spcv2(tmp_path)
    jobs = grid(tmp_path)
    assert len(jobs) == 4 and len({j.id for j in jobs}) == 4
    report = run_sweep(jobs)
    assert report.ok and len(report.done) == 4 and not report.skipped
    rows = read_results()
    assert len(rows) == 4
    assert set(zip(rows["model"], rows["task"])) == {(m, t) for m in ("melspec", "byola") for t in ("esc50", "spcv2")}
    assert sorted(rows["n_folds"]) == [1, 1, 5, 5]
    assert all(json.loads(s) == [42, 43] for s in rows["seeds"])

    for name in ("embed_step", "probe_step", "finetune_step"):
        monkeypatch.setattr(sweep, name, _no_work)
    monkeypatch.setattr(evar.api, "embed_task", _no_work)
    again = run_sweep(grid(tmp_path))
    assert again.ok and not again.done and sorted(again.skipped) == sorted(j.id for j in jobs)
    assert len(read_results()) == 4
    assert again.sweep_id == report.sweep_id
    assert "4 done" in status_text()


def test_sweep_row_is_the_probe_row(tmp_path: Path) -> None:
    """A sweep's row equals the row `evar probe` writes for the same model, task and settings."""
    prepare_esc50(tmp_path)
    job = [j for j in grid(tmp_path) if j.model == "byola" and j.task == "esc50"][0]
    run_sweep([job])
    evar.api.probe("esc50", ModelChoice("byola", weights=job.weights), settings=LinearSettings(seeds=tuple([42, 43]), max_epochs=20, patience=5), run=RunOptions(progress=False))
    first, second = comparable(read_results()[:1]), comparable(read_results()[1:])
    assert first == second


def test_failed_job_is_recorded_does_not_stop_others_and_is_retried(tmp_path: Path) -> None:
    prepare_esc50(tmp_path)  # spcv2 is not prepared yet
    jobs = make_grid(["melspec"], ["spcv2", "esc50"], max_epochs=5)
    report = run_sweep(jobs)
    failed = [j for j in jobs if j.task == "spcv2"][0]
    assert not report.ok and list(report.failed) == [failed.id] and len(report.done) == 1
    assert "not prepared" in report.failed[failed.id]
    record = JobStore().read(failed.id)
    assert record["state"] == "failed" and record["attempts"] == 1 and "Traceback" in record["traceback"]
    table = status_text()
    assert "1 done, 1 failed" in table and "not prepared" in table

    prepare_spcv2(tmp_path)
    again = run_sweep(jobs)
    assert again.ok and again.done == [failed.id] and len(again.skipped) == 1
    assert JobStore().read(failed.id)["attempts"] == 2
    assert len(read_results()) == 2


def test_status_shows_dead_and_stale_jobs_and_formats(tmp_path: Path) -> None:
    store = JobStore()
    dead, stale, fresh = make_grid(["melspec"], ["esc50", "us8k", "spcv2"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store.save_sweep([dead, stale, fresh])
    store.update(dead, state="running", host=socket.gethostname(), pid=gone.pid, heartbeat=time.time())
    store.update(stale, state="running", host="elsewhere", pid=1, heartbeat=time.time() - 1000)
    store.update(fresh, state="running", host="elsewhere", pid=1, heartbeat=time.time())
    assert effective_state(store.read(dead.id))[0] == "died"
    assert effective_state(store.read(stale.id))[0] == "stale"
    assert effective_state(store.read(fresh.id))[0] == "running"
    data = json.loads(status_text(fmt="json"))
    assert {j["job"]: j["state"] for j in data["jobs"]} == {dead.id: "died", stale.id: "stale", fresh.id: "running"}
    assert status_text(fmt="csv").splitlines()[0].startswith("job,state,model,task")
    report = run_sweep([fresh], backend="local")  # running in another live process: left alone
    assert report.busy == [fresh.id] and not report.done


def test_grid_parsing_and_errors() -> None:
    assert parse_models("byola, cnn14+2,5,ast") == ["byola", "cnn14+2,5", "ast"]
    a = make_grid(["byola", "cnn14+2,5"], ["esc50"], seeds=(42, 43, 44))
    b = make_grid(["byola", "cnn14+2,5"], ["esc50"], seeds=(42, 43, 44))
    assert [j.id for j in a] == [j.id for j in b] and a[1].layers == ("2", "5") and a[1].label == "cnn14+2,5"
    assert make_grid(["byola"], ["esc50"], seeds=(42,))[0].id != a[0].id
    assert len(make_grid(["byola"], ["esc50", "us8k"], seeds=(1, 2), protocol="finetune")) == 4
    with pytest.raises(EvarError, match="--weights names cnn14"):
        make_grid(["byola"], ["esc50"], weights={"cnn14": "x.pth"})
    with pytest.raises(EvarError, match="unknown protocol"):
        make_grid(["byola"], ["esc50"], protocol="zero-shot")
    with pytest.raises(EvarError, match="no sweep recorded"):
        status_text()


def test_cli_sweep_and_status(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prepare_esc50(tmp_path)
    args = ["sweep", "--models", "melspec", "--tasks", "esc50,spcv2", "--seed-list", "42,7", "--max-epochs", "5"]
    assert main(args) == 1  # spcv2 is not prepared
    out = capsys.readouterr().out
    assert "1 done now, 0 already done, 1 failed" in out and "not prepared" in out
    prepare_spcv2(tmp_path)
    assert main(args) == 0
    assert "1 done now, 1 already done, 0 failed" in capsys.readouterr().out
    assert main(["status", "--format", "json"]) == 0
    jobs = json.loads(capsys.readouterr().out)["jobs"]
    assert [(j["task"], j["state"], j["seeds"], j["attempts"]) for j in jobs] == [
        ("esc50", "done", "42,7", 1), ("spcv2", "done", "42,7", 2)]
    assert main(["sweep", "--models", "melspec", "--tasks", "esc50", "--weights", "melspec"]) == 2
    assert "--weights expects MODEL=PATH" in capsys.readouterr().err
    assert main(["status", "--sweep", "nope"]) == 2
    assert "sweep 'nope' not found" in capsys.readouterr().err


def test_heartbeat_and_a_row_written_before_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = make_grid(["melspec"], ["esc50"])[0]
    store = JobStore()
    recorder = sweep.Recorder(store, "local")
    with sweep._Heartbeat(recorder, interval=0.05):
        recorder.started(job)
        first = store.read(job.id)["heartbeat"]
        time.sleep(0.3)
    assert store.read(job.id)["heartbeat"] > first and store.read(job.id)["pid"] == os.getpid()

    # the process died after appending the row and before marking the job done: the rerun finds the row
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    evar.results.store.append_result({"run_id": "abc123", "model": "melspec", "task": "esc50"})
    store.update(job, pid=gone.pid, run_id="abc123")
    monkeypatch.setattr(sweep, "embed_step", _no_work)
    report = run_sweep([job])
    assert report.skipped == [job.id] and store.read(job.id)["state"] == "done" and len(read_results()) == 1


def test_finetune_jobs_one_per_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare_esc50(tmp_path)
    jobs = make_grid(["melspec"], ["esc50"], seeds=(1, 2), protocol="finetune", epochs=1, batch_size=8)
    assert run_sweep(jobs).ok
    rows = read_results()
    assert list(rows["protocol"]) == ["finetune"] * 2 and [json.loads(s) for s in rows["seeds"]] == [[1], [2]]
    assert [JobStore().read(j.id)["run_id"] for j in jobs] == list(rows["run_id"])
    monkeypatch.setattr(sweep, "finetune_step", _no_work)
    assert len(run_sweep(jobs).skipped) == 2 and len(read_results()) == 2


def test_ray_backend_without_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(EvarError, match=r"pip install evar-bench\[ray\]"):
        run_sweep(make_grid(["melspec"], ["esc50"]), backend="ray")
    assert JobStore().read(make_grid(["melspec"], ["esc50"])[0].id)["state"] == "pending"


def test_a_sweep_refuses_autocast_it_could_not_tell_apart(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "sweeps")
    with pytest.raises(EvarError, match="evar sweep does not take --autocast yet"):
        run_sweep(make_grid(["melspec"], ["esc50"]), "local", RunOptions(autocast="bfloat16"), store=store)
    assert not (tmp_path / "sweeps").exists()  # refused before any record is written


def test_encoders_of_one_rate_share_one_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three 16-kHz encoders (one measuring statistics) decode each clip once, and score as when run alone."""
    import evar.embeddings.datasets as datasets
    from encoder_checkpoints import write_checkpoint

    prepare_esc50(tmp_path)
    weights = {name: str(write_checkpoint(name, tmp_path / "weights")[0]) for name in ("byola", "cola")}
    jobs = make_grid(["melspec", "byola", "cola"], ["esc50"], seeds=(42,), weights=weights, max_epochs=5)
    decoded: list[str] = []
    real_load = datasets.load_audio
    monkeypatch.setattr(datasets, "load_audio", lambda path, rate: decoded.append(Path(path).name) or real_load(path, rate))
    assert run_sweep(jobs).ok
    n_files = len(evar.load_task("esc50"))
    assert len(decoded) == n_files and len(set(decoded)) == n_files
    assert not list((tmp_path / "embeddings" / "decoding").glob("*.f32"))  # the shared clips are removed
    shared_rows = comparable(read_results())

    monkeypatch.setenv("EVAR_EMBEDDINGS_DIR", str(tmp_path / "alone" / "embeddings"))
    monkeypatch.setenv("EVAR_RESULTS_DIR", str(tmp_path / "alone" / "results"))
    decoded.clear()
    for job in jobs:  # one model per sweep: nothing shared
        assert run_sweep([job]).ok
    assert len(decoded) > 2 * n_files
    assert comparable(read_results()) == shared_rows
