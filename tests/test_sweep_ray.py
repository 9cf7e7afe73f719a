"""Sweeps on a local Ray instance: the same rows as the local backend, a rerun that does no work,
a worker killed mid-job whose task is retried, a user error that is reported and not retried."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import evar.sweep.steps as steps
from evar.cli import main
from evar.results.store import read_results
from evar.sweep.backends import RayBackend, run_sweep
from evar.sweep.jobs import JobStore, make_grid
from sweep_support import comparable, grid, prepare_esc50, prepare_spcv2

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _backend(**steps) -> RayBackend:
    """A RayBackend whose steps are replaced (functions defined in a test are shipped to the workers by value)."""
    return type("TestRayBackend", (RayBackend,), {k: staticmethod(f) for k, f in steps.items()})(num_cpus=1)


def test_ray_rows_equal_local_rows_and_rerun_does_no_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    prepare_esc50(tmp_path)
    prepare_spcv2(tmp_path)
    jobs = grid(tmp_path)
    assert run_sweep(jobs, backend="local").ok
    local = comparable(read_results())
    monkeypatch.setenv("EVAR_RESULTS_DIR", str(tmp_path / "ray-results"))
    monkeypatch.setenv("EVAR_EMBEDDINGS_DIR", str(tmp_path / "ray-embeddings"))  # Ray computes them again
    report = run_sweep(jobs, backend=RayBackend(num_cpus=1))
    assert report.ok and len(report.done) == 4
    assert comparable(read_results()) == local
    assert {JobStore().read(j.id)["backend"] for j in jobs} == {"ray"}

    def no_work(*args, **kwargs):
        raise AssertionError("a rerun of a finished sweep must not embed or probe")

    again = run_sweep(jobs, backend=_backend(embed_step=no_work, probe_step=no_work, finetune_step=no_work))
    assert again.ok and not again.done and len(again.skipped) == 4
    byola = [j for j in jobs if j.model == "byola"][0]
    assert main(["sweep", "--models", "melspec,byola", "--tasks", "esc50,spcv2", "--seed-list", "42,43",
                 "--weights", f"byola={byola.weights}", "--max-epochs", "20", "--patience", "5",
                 "--backend", "ray"]) == 0  # the same grid from the command line: the same job ids
    assert "0 done now, 4 already done, 0 failed" in capsys.readouterr().out
    assert len(read_results()) == 4


def test_killed_worker_is_retried_and_user_error_is_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare_esc50(tmp_path)
    calls = tmp_path / "calls"
    calls.mkdir()

    def embed_kill_once(job_spec: dict, run, env):
        """Log the call; the first melspec call kills its worker process (a crash mid-job)."""
        model = job_spec["model"]
        with open(calls / model, "a") as f:
            f.write("call\n")
        if model == "melspec" and len((calls / model).read_text().splitlines()) == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return steps.embed_step(job_spec, run, env)

    jobs = make_grid(["melspec", "byola"], ["esc50"], weights={"byola": str(tmp_path / "missing.pth")},
                     max_epochs=20, patience=5)
    report = run_sweep(jobs, backend=_backend(embed_step=embed_kill_once))
    melspec, byola = jobs
    assert report.done == [melspec.id] and list(report.failed) == [byola.id]
    assert "missing.pth" in report.failed[byola.id]
    assert len((calls / "melspec").read_text().splitlines()) == 2  # killed, then retried by Ray
    assert len((calls / "byola").read_text().splitlines()) == 1  # an exception is not retried
    rows = read_results()
    assert list(rows["model"]) == ["melspec"]

    monkeypatch.setenv("EVAR_RESULTS_DIR", str(tmp_path / "local"))
    assert run_sweep([melspec], backend="local").ok
    assert comparable(read_results()) == comparable(rows)
