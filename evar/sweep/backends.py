"""Running a sweep: jobs in this process (local) or as Ray tasks, recorded as they start, finish or fail."""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from evar.embeddings.datasets import SharedDecoding
from evar.errors import EvarError
from evar.log import log
from evar.options import RunOptions
from evar.results.store import append_result, read_results
from evar.sweep.jobs import HEARTBEAT_SEC, Job, JobStore, effective_state, now_iso
from evar.sweep.steps import (
    embed_step, finetune_step, job_provenance, linear_row, n_rounds, probe_step, shared_decoding, worker_env,
)


def describe_error(exc: BaseException) -> str:
    """One line for a job's failure: the message of a user error, type and message otherwise."""
    cause = getattr(exc, "cause", None) or exc  # a Ray task error carries the original exception
    if isinstance(cause, EvarError):
        return str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}".rstrip(": ")


class Recorder:
    """What backends report to: marks jobs running, done (appending their rows) or failed."""

    def __init__(self, store: JobStore, backend: str) -> None:
        self.store, self.backend = store, backend
        self.done: list[str] = []
        self.failed: dict[str, str] = {}
        self.running: set[str] = set()

    def started(self, job: Job) -> None:
        record = self.store.read(job.id) or {}
        now = time.time()
        self.store.update(job, state="running", reason="", attempts=record.get("attempts", 0) + 1,
                          host=socket.gethostname(), pid=os.getpid(), started=now_iso(), finished=None,
                          heartbeat=now, start_time=now, backend=self.backend, run_id=None, traceback=None)
        self.running.add(job.id)

    def finished(self, job: Job, row: dict[str, Any] | None = None, run_id: str | None = None,
                 provenance: dict[str, Any] | None = None) -> None:
        """A linear job hands its row and its record's provenance (appended here, under a run id recorded
        first); fine-tuning its run id."""
        if row is not None:
            run_id = uuid.uuid4().hex[:12]
            self.store.update(job, run_id=run_id)
            append_result({**row, "run_id": run_id}, provenance=provenance)
        start = (self.store.read(job.id) or {}).get("start_time", time.time())
        self.store.update(job, state="done", run_id=run_id, finished=now_iso(), seconds=round(time.time() - start, 3))
        self.running.discard(job.id)
        self.done.append(job.id)

    def failed_with(self, job: Job, exc: BaseException) -> None:
        reason = describe_error(exc)
        start = (self.store.read(job.id) or {}).get("start_time", time.time())
        self.store.update(job, state="failed", reason=reason, finished=now_iso(), seconds=round(time.time() - start, 3),
                          traceback="".join(traceback.format_exception(exc))[-4000:])
        self.running.discard(job.id)
        self.failed[job.id] = reason
        log.warning(f"job {job.id} ({job.label} on {job.task}) failed: {reason}")


class _Heartbeat:
    """A daemon thread refreshing the heartbeat of the recorder's running jobs."""

    def __init__(self, recorder: Recorder, interval: float = HEARTBEAT_SEC) -> None:
        self.recorder, self.interval = recorder, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.recorder.store.beat(list(self.recorder.running))

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _groups(jobs: Sequence[Job]) -> dict[str, list[Job]]:
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.embed_key(), []).append(job)
    return groups


class LocalBackend:
    """Runs the jobs one after the other in this process."""

    name = "local"

    def run(self, jobs: Sequence[Job], recorder: Recorder, run: RunOptions) -> None:
        env: dict[str, str] = {}  # the steps run here, with this process's folders
        for job in (j for j in jobs if j.protocol == "finetune"):
            recorder.started(job)
            try:
                recorder.finished(job, run_id=finetune_step(job.spec(), run, env))
            except Exception as exc:  # one failing job must not stop the others
                recorder.failed_with(job, exc)
        groups = _groups([j for j in jobs if j.protocol == "linear"]).values()
        for task in dict.fromkeys(group[0].task for group in groups):
            self._run_task([g for g in groups if g[0].task == task], recorder, run, env)

    def _run_task(self, groups: list[list[Job]], recorder: Recorder, run: RunOptions, env: dict[str, str]) -> None:
        """One task's linear jobs, an embedding step per model; models sharing a sample rate share the
        decoding of the task's clips (:class:`SharedDecoding`)."""
        decoded = shared_decoding([g[0] for g in groups], run)
        try:
            for group in groups:
                self._run_group(group, recorder, run, env, decoded)
        finally:
            if decoded is not None:
                decoded.close()

    def _run_group(self, group: list[Job], recorder: Recorder, run: RunOptions, env: dict[str, str],
                   decoded: SharedDecoding | None) -> None:
        for job in group:
            recorder.started(job)
        try:
            X, info = embed_step(group[0].spec(), run, env, decoded)
        except Exception as exc:
            for job in group:
                recorder.failed_with(job, exc)
            return
        for job in group:
            try:
                rounds, scores, confusion, seconds = probe_step(X, job.spec(), None, run, env, info)  # all, once
                recorder.finished(job, linear_row(job, rounds, scores, info, run, [confusion]),
                                  provenance=job_provenance(info, run, [seconds]))
            except Exception as exc:
                recorder.failed_with(job, exc)


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise EvarError("the Ray backend needs Ray: pip install evar-bench[ray]") from exc
    return ray


class RayBackend:
    """Runs the jobs as Ray tasks: per (model, task) an embedding task, per round a probe task.

    Each task requests ``num_cpus``/``num_gpus``; a task whose worker dies is retried up to
    ``max_retries`` times, an exception raised by the job is not retried (the job fails with it).
    Connects to ``address`` (e.g. ``ray://head:10001``), or starts a local instance, unless Ray is
    already initialised. Workers must see the prepared tasks and audio under the same paths.
    """

    name = "ray"
    embed_step = staticmethod(embed_step)
    probe_step = staticmethod(probe_step)
    finetune_step = staticmethod(finetune_step)

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 max_retries: int = 3) -> None:
        self.address, self.num_cpus, self.num_gpus, self.max_retries = address, num_cpus, num_gpus, max_retries

    def _remote(self, ray, fn: Callable, **options: Any):
        return ray.remote(fn).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries,
                                      retry_exceptions=False, **options)

    def run(self, jobs: Sequence[Job], recorder: Recorder, run: RunOptions) -> None:
        ray = import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address)
        try:
            self._run(ray, jobs, recorder, run)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, ray, jobs: Sequence[Job], recorder: Recorder, run: RunOptions) -> None:
        env = worker_env()
        embed = self._remote(ray, self.embed_step, num_returns=2)
        probe = self._remote(ray, self.probe_step)
        tune = self._remote(ray, self.finetune_step)
        waiting: dict[str, tuple[Job, list]] = {}  # job id -> (job, refs)
        for job in (j for j in jobs if j.protocol == "finetune"):
            recorder.started(job)
            waiting[job.id] = (job, [tune.remote(job.spec(), run, env)])
        for group in _groups([j for j in jobs if j.protocol == "linear"]).values():
            X_ref, info_ref = embed.remote(group[0].spec(), run, env)
            for job in group:
                recorder.started(job)
                try:
                    rounds = n_rounds(job.task)
                except Exception as exc:
                    recorder.failed_with(job, exc)
                    continue
                waiting[job.id] = (job, [info_ref, *(probe.remote(X_ref, job.spec(), r, run, env, info_ref)
                                                     for r in range(rounds))])
        owner = {ref: job_id for job_id, (_, refs) in waiting.items() for ref in refs}
        pending = list(owner)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            job_id = owner[ready[0]]
            if job_id not in waiting or any(ref in pending for ref in waiting[job_id][1]):
                continue
            job, refs = waiting.pop(job_id)
            try:
                values = ray.get(refs)
                if job.protocol == "finetune":
                    recorder.finished(job, run_id=values[0])
                else:
                    info, results = values[0], values[1:]
                    recorder.finished(job, linear_row(job, [r[0] for r, _, _, _ in results],
                                                      [s[0] for _, s, _, _ in results], info, run,
                                                      [c for _, _, c, _ in results]),
                                      provenance=job_provenance(info, run, [t for _, _, _, t in results]))
            except ray.exceptions.WorkerCrashedError as exc:
                recorder.failed_with(job, EvarError(f"its worker died {self.max_retries + 1} times (killed, out of "
                                                    f"memory or crashed; see the Ray worker logs): {exc}"))
            except Exception as exc:
                recorder.failed_with(job, exc)


@dataclass
class SweepReport:
    """What a sweep run did: jobs run now, skipped as done, busy in another process, failed (with reasons)."""

    sweep_id: str
    done: list[str]
    skipped: list[str]
    busy: list[str]
    failed: dict[str, str]

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        text = (f"sweep {self.sweep_id}: {len(self.done)} done now, {len(self.skipped)} already done, "
                f"{len(self.failed)} failed")
        return text + (f", {len(self.busy)} running in another process" if self.busy else "")


def _recorded(run_id: str) -> bool:
    results = read_results()
    return bool(len(results)) and run_id in set(results["run_id"].astype(str))


def run_sweep(jobs: Sequence[Job], backend: str | LocalBackend | RayBackend = "local", run: RunOptions | None = None,
              store: JobStore | None = None) -> SweepReport:
    """Run the jobs not yet done (failed and died ones again); one failing job does not stop the others."""
    if not jobs:
        raise EvarError("a sweep needs at least one job")
    if isinstance(backend, str):
        if backend not in ("local", "ray"):
            raise EvarError(f"unknown backend {backend!r}; expected local or ray")
        backend = LocalBackend() if backend == "local" else RayBackend()
    from evar.results.store import check_writable

    check_writable()
    run, store = run or RunOptions(), store or JobStore()
    if run.autocast:  # a job's identity is what it computes; autocast would change it without changing the id
        raise EvarError("evar sweep does not take --autocast yet (its job records would not tell autocast runs from "
                        "float32 ones); run evar embed / evar probe with --autocast instead")
    jobs = list({j.id: j for j in jobs}.values())
    ident = store.save_sweep(jobs)
    todo, skipped, busy = [], [], []
    for job in jobs:
        record = store.read(job.id)
        state = effective_state(record)[0] if record else "pending"
        if state == "done":
            skipped.append(job.id)
        elif state == "running":
            busy.append(job.id)
        elif record and record.get("run_id") and _recorded(record["run_id"]):
            store.update(job, state="done", reason="", finished=now_iso())  # its row was written before a crash
            skipped.append(job.id)
        else:
            store.update(job)
            todo.append(job)
    recorder = Recorder(store, backend.name)
    try:
        with _Heartbeat(recorder):
            if todo:
                backend.run(todo, recorder, run)
    except BaseException as exc:  # interrupted (or the backend broke): no job stays "running"
        for job in (j for j in todo if j.id in recorder.running):
            recorder.failed_with(job, exc if not isinstance(exc, KeyboardInterrupt) else EvarError("interrupted"))
        raise
    return SweepReport(ident, recorder.done, skipped, busy, recorder.failed)
