"""Sweeps: a grid of jobs (model x task, with seeds) run locally or as Ray tasks, resumable.

A job is one results row: the linear probe of a model (or a layer fusion) on a task over a set of
seeds, or one fine-tuning run. Its id hashes its spec, so the same job in any later sweep has the
same id. Each job's state lives in ``results/sweeps/jobs/<job_id>.json`` (written atomically)::

    {"id", "spec", "state": pending|running|done|failed, "reason", "attempts", "host", "pid",
     "started", "finished", "heartbeat", "seconds", "run_id", "backend"}

Running a sweep skips done jobs, retries failed ones and jobs whose process died, and records a
failing job's error without stopping the others. A linear job is executed in steps: one embedding
step per (model, task), cached on disk by :mod:`evar.embeddings.cache` and shared by the jobs that need it,
then one probe step per round (fold or fixed split), gathered into one row. The local backend runs
the steps in this process; the Ray backend runs them as Ray tasks with resource requests and
retries of crashed workers, and the driver appends the rows, so a retried task never writes twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from evar.api import embed as api_embed
from evar.api import linear_settings
from evar.encoders import LayerFusion, model_label
from evar.errors import EvarError
from evar.embeddings.cache import skipped_clips
from evar.options import LinearSettings, ModelChoice, RunOptions
from evar.protocols.base import Result, weights_field
from evar.protocols.linear import evaluate_embeddings, evar_row_orders
from evar.paths import cache_dir, embeddings_dir, prepared_tasks_dir, results_dir
from evar.results.store import append_result, read_results
from evar.tasks import load_task
from evar.io import atomic_write_text
from evar.log import log

PROTOCOLS = ("linear", "finetune")
STATES = ("pending", "running", "done", "failed")
#: seconds between heartbeats of a running sweep; a running job silent for 3 beats is shown as stale
HEARTBEAT_SEC = 30.0
#: probe settings of a linear job (LinearSettings' defaults; the seeds are the job's own)
LINEAR_DEFAULTS = LinearSettings().probe_kwargs()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Job:
    """One results row to produce. ``settings``: probe settings (linear) or fine-tuning overrides."""

    model: str
    task: str
    protocol: str = "linear"
    layers: tuple[str, ...] = ()
    weights: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (42,)
    settings: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "model": self.model, "layers": list(self.layers), "task": self.task,
                "weights": self.weights, "options": self.options, "seeds": list(self.seeds),
                "settings": self.settings}

    @property
    def id(self) -> str:
        """Stable id: a hash of the spec (what changes the result, not where or how fast it runs)."""
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        return model_label(self.model, list(self.layers))

    def embed_key(self) -> str:
        """Jobs with the same key share one embedding step."""
        return json.dumps([self.model, list(self.layers), self.weights, self.options, self.task], sort_keys=True)

    def model_choice(self) -> ModelChoice:
        return ModelChoice(self.model, self.weights, tuple(self.layers), self.options)

    def linear_settings(self) -> LinearSettings:
        return LinearSettings(seeds=self.seeds, **self.settings)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "Job":
        return cls(model=spec["model"], task=spec["task"], protocol=spec["protocol"], layers=tuple(spec["layers"]),
                   weights=spec["weights"], options=spec["options"], seeds=tuple(spec["seeds"]),
                   settings=spec["settings"])


def parse_models(text: str) -> list[str]:
    """``byola,cnn14+2,5,ast`` -> ``["byola", "cnn14+2,5", "ast"]`` (a bare number continues a layer list)."""
    models: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.lstrip("-").isdigit() and models and "+" in models[-1]:
            models[-1] += f",{part}"
        else:
            models.append(part)
    return models


def make_grid(models: Sequence[str], tasks: Sequence[str], seeds: Sequence[int] = (42,), protocol: str = "linear",
              weights: dict[str, str] | None = None, options: dict[str, dict] | None = None,
              **settings: Any) -> list[Job]:
    """Every model (``name`` or ``name+layers``) on every task.

    Linear: one job per (model, task) probing all ``seeds`` (one row, as ``evar probe --seeds``).
    Fine-tuning: one job per (model, task, seed). ``weights``/``options`` map a model name to its
    checkpoint / encoder options; ``settings`` are probe settings or fine-tuning overrides.
    """
    if protocol not in PROTOCOLS:
        raise EvarError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if not models or not tasks or not seeds:
        raise EvarError("a sweep needs at least one model, one task and one seed")
    weights, options = weights or {}, options or {}
    names = {m.partition("+")[0] for m in models}
    for given, what in ((weights, "--weights"), (options, "--model-options")):
        unknown = set(given) - names
        if unknown:
            raise EvarError(f"{what} names {', '.join(sorted(unknown))}, which is not among the sweep's models")
    jobs = []
    for entry in models:
        name, _, layer_text = entry.partition("+")
        layers = tuple(l.strip() for l in layer_text.split(",") if l.strip())
        if protocol == "finetune" and layers:
            raise EvarError(f"{entry}: fine-tuning sweeps take whole models, not layer fusions")
        for task in tasks:
            common = dict(model=name, task=task, protocol=protocol, layers=layers, weights=weights.get(name),
                          options=options.get(name, {}))
            if protocol == "linear":
                jobs.append(Job(**common, seeds=tuple(seeds), settings={**LINEAR_DEFAULTS, **settings}))
            else:
                jobs.extend(Job(**common, seeds=(seed,), settings=dict(settings)) for seed in seeds)
    return jobs


def sweep_id(jobs: Iterable[Job]) -> str:
    return hashlib.sha256(",".join(sorted(j.id for j in jobs)).encode()).hexdigest()[:12]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobStore:
    """Job records under ``<results>/sweeps/``: ``jobs/<job_id>.json`` and ``<sweep_id>.json`` (its job ids)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else results_dir() / "sweeps"
        self._lock = threading.Lock()

    def path(self, job_id: str) -> Path:
        return self.root / "jobs" / f"{job_id}.json"

    def read(self, job_id: str) -> dict[str, Any] | None:
        path = self.path(job_id)
        return json.loads(path.read_text()) if path.is_file() else None

    def update(self, job: Job, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the job's record (created pending when new) and write it atomically."""
        with self._lock:
            record = self.read(job.id) or {"id": job.id, "spec": job.spec(), "state": "pending", "reason": "",
                                           "attempts": 0}
            record.update(fields)
            atomic_write_text(self.path(job.id), json.dumps(record, indent=1))
            return record

    def beat(self, job_ids: Iterable[str]) -> None:
        """Refresh the heartbeat of this process's running jobs."""
        with self._lock:
            for job_id in job_ids:
                record = self.read(job_id)
                if record and record["state"] == "running" and record.get("pid") == os.getpid():
                    record["heartbeat"] = time.time()
                    atomic_write_text(self.path(job_id), json.dumps(record, indent=1))

    def save_sweep(self, jobs: Sequence[Job]) -> str:
        ident = sweep_id(jobs)
        atomic_write_text(self.root / f"{ident}.json",
                          json.dumps({"id": ident, "created": _now(), "jobs": [j.id for j in jobs]}, indent=1))
        return ident

    def sweep_jobs(self, ident: str | None = None) -> tuple[str, list[str]]:
        """The job ids of sweep ``ident`` (default: the sweep run last)."""
        sweeps = sorted(self.root.glob("*.json"), key=lambda p: p.stat().st_mtime)
        if ident is None:
            if not sweeps:
                raise EvarError(f"no sweep recorded under {self.root}; run `evar sweep` first")
            path = sweeps[-1]
        else:
            matches = [p for p in sweeps if p.stem.startswith(ident)]
            if len(matches) != 1:
                known = ", ".join(p.stem for p in sweeps) or "none"
                raise EvarError(f"sweep {ident!r} {'is ambiguous' if matches else 'not found'} under {self.root} "
                                f"(known: {known})")
            path = matches[0]
        return path.stem, json.loads(path.read_text())["jobs"]

    def all_job_ids(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "jobs").glob("*.json"))


def effective_state(record: dict[str, Any], now: float | None = None) -> tuple[str, str]:
    """(state, reason) as shown to users: a running job whose process is gone is ``died``, one whose
    heartbeat stopped (on another host) is ``stale``."""
    state, reason = record["state"], record.get("reason", "")
    if state != "running":
        return state, reason
    if record.get("host") == socket.gethostname() and record.get("pid") and not _pid_alive(record["pid"]):
        return "died", f"process {record['pid']} on {record['host']} is gone; the next sweep run retries it"
    silent = (now or time.time()) - record.get("heartbeat", 0)
    if silent > 3 * HEARTBEAT_SEC:
        return "stale", f"no heartbeat from {record.get('host')} for {silent:.0f} s"
    return state, reason


# ---------------------------------------------------------------- steps (run in this process or on a Ray worker)

def worker_env() -> dict[str, str]:
    """This process's evar folders as absolute paths, for workers (which may start elsewhere)."""
    return {"EVAR_CACHE_DIR": str(cache_dir().resolve()), "EVAR_TASKS_DIR": str(prepared_tasks_dir().resolve()),
            "EVAR_EMBEDDINGS_DIR": str(embeddings_dir().resolve()), "EVAR_RESULTS_DIR": str(results_dir().resolve())}


def embed_step(job_spec: dict, run: RunOptions, env: dict[str, str]) -> tuple[np.ndarray, dict]:
    """Embeddings of a job's task (from the cache when present) and what its row records of the encoder."""
    from evar.tasks.sed import is_event_task

    os.environ.update(env)
    job = Job.from_spec(job_spec)
    if is_event_task(job.task):
        raise EvarError(f"{job.task} is an event (SED) task, which sweeps do not run yet; "
                        f"use: evar probe --task {job.task} --model {job.model}")
    model = job.model_choice()
    encoder = model.build(run.device)
    layers = encoder.indices if isinstance(encoder, LayerFusion) else list(job.layers)
    X = api_embed(model, job.task, run=run, encoder=encoder)
    skipped = skipped_clips(load_task(job.task), encoder, model_label(job.model, layers), run.dtype)
    info = {"layers": [str(l) for l in layers], "config": encoder.config(), "weights_sha256": encoder.weights_sha256,
            "skipped": skipped, "evar_init_words": getattr(encoder, "evar_init_words", None),
            "needs_stats": encoder.needs_stats}
    return np.asarray(X), json.loads(json.dumps(info, default=str))


def probe_step(X: np.ndarray, job_spec: dict, round_index: int | None, run: RunOptions,
               env: dict[str, str], info: dict | None = None) -> tuple[list[str], list[list[float]]]:
    """A linear job's rounds (all, or the one ``round_index``): their names and one score per seed each (in
    ``evar`` mode the rounds before ``round_index`` are trained too: they advance EVAR's generators)."""
    os.environ.update(env)
    job = Job.from_spec(job_spec)
    task = load_task(job.task)
    settings = job.linear_settings()
    orders = None
    if settings.mode == "evar" and info:
        orders = evar_row_orders(task, info.get("evar_init_words"), info["needs_stats"])
    return evaluate_embeddings(X, task, settings, run.device, False, orders, round_index)


def finetune_step(job_spec: dict, run: RunOptions, env: dict[str, str]) -> str:
    """A fine-tuning job (resumes its unfinished run; appends its own row once). Returns the run id."""
    from evar.protocols.finetune import finetune

    os.environ.update(env)
    job = Job.from_spec(job_spec)
    result = finetune(job.task, job.model_choice(), {**job.settings, "seed": job.seeds[0]}, run, resume=True)
    return result.run_id


def n_rounds(task: str) -> int:
    return len(list(load_task(task).splits()))


def linear_row(job: Job, rounds: list[str], scores: list[list[float]], info: dict, run: RunOptions) -> dict[str, Any]:
    """The ``results/scores.csv`` row of a linear job, as :func:`evar.api.probe` writes it."""
    task = load_task(job.task)
    recorded = linear_settings(task, info["config"], job.linear_settings(), run, info["skipped"])
    return Result("linear", job.task, job.model, info["layers"], task.spec.metric, rounds, list(job.seeds), scores,
                  recorded, weights_field(job.model, job.weights), info["weights_sha256"] or "").row()


# ---------------------------------------------------------------- running a sweep

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
                          host=socket.gethostname(), pid=os.getpid(), started=_now(), finished=None,
                          heartbeat=now, start_time=now, backend=self.backend, run_id=None, traceback=None)
        self.running.add(job.id)

    def finished(self, job: Job, row: dict[str, Any] | None = None, run_id: str | None = None) -> None:
        """A linear job hands its row (appended here, under a run id recorded first); fine-tuning its run id."""
        if row is not None:
            run_id = uuid.uuid4().hex[:12]
            self.store.update(job, run_id=run_id)
            append_result({**row, "run_id": run_id})
        start = (self.store.read(job.id) or {}).get("start_time", time.time())
        self.store.update(job, state="done", run_id=run_id, finished=_now(), seconds=round(time.time() - start, 3))
        self.running.discard(job.id)
        self.done.append(job.id)

    def failed_with(self, job: Job, exc: BaseException) -> None:
        reason = describe_error(exc)
        start = (self.store.read(job.id) or {}).get("start_time", time.time())
        self.store.update(job, state="failed", reason=reason, finished=_now(), seconds=round(time.time() - start, 3),
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
        for group in _groups([j for j in jobs if j.protocol == "linear"]).values():
            for job in group:
                recorder.started(job)
            try:
                X, info = embed_step(group[0].spec(), run, env)
            except Exception as exc:
                for job in group:
                    recorder.failed_with(job, exc)
                continue
            for job in group:
                try:
                    rounds, scores = probe_step(X, job.spec(), None, run, env, info)  # all rounds, in order, once
                    recorder.finished(job, linear_row(job, rounds, scores, info, run))
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
                    recorder.finished(job, linear_row(job, [r[0] for r, _ in results], [s[0] for _, s in results],
                                                      info, run))
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
            store.update(job, state="done", reason="", finished=_now())  # its row was written before a crash
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


# ---------------------------------------------------------------- status

STATUS_COLUMNS = ["job", "state", "model", "task", "protocol", "seeds", "attempts", "seconds", "host", "finished",
                  "reason"]


def sweep_status(sweep: str | None = None, all_jobs: bool = False, store: JobStore | None = None
                 ) -> tuple[str | None, list[dict[str, Any]]]:
    """The jobs of a sweep (default: the last one run; ``all_jobs``: every recorded job), one dict each."""
    store = store or JobStore()
    if all_jobs:
        ident, ids = None, store.all_job_ids()
    else:
        ident, ids = store.sweep_jobs(sweep)
    now, rows = time.time(), []
    for job_id in ids:
        record = store.read(job_id)
        if record is None:
            rows.append({c: "" for c in STATUS_COLUMNS} | {"job": job_id, "state": "pending"})
            continue
        job = Job.from_spec(record["spec"])
        state, reason = effective_state(record, now)
        rows.append({"job": job_id, "state": state, "model": job.label, "task": job.task, "protocol": job.protocol,
                     "seeds": ",".join(str(s) for s in job.seeds), "attempts": record.get("attempts", 0),
                     "seconds": record.get("seconds", ""), "host": record.get("host", ""),
                     "finished": record.get("finished") or "", "reason": reason})
    return ident, rows


def status_text(sweep: str | None = None, fmt: str = "table", all_jobs: bool = False,
                store: JobStore | None = None) -> str:
    """`evar status` output: a table with a per-state count, or CSV / JSON."""
    import pandas as pd

    ident, rows = sweep_status(sweep, all_jobs, store)
    frame = pd.DataFrame(rows, columns=STATUS_COLUMNS)
    if fmt == "json":
        return json.dumps({"sweep": ident, "jobs": rows}, indent=1) + "\n"
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt != "table":
        raise EvarError(f"unknown status format {fmt!r}; expected table, csv or json")
    counts = frame["state"].value_counts()
    head = (f"sweep {ident}: " if ident else "all jobs: ") + ", ".join(
        f"{int(counts[s])} {s}" for s in (*STATES, "died", "stale") if s in counts)
    frame["reason"] = frame["reason"].map(lambda r: r if len(r) <= 80 else r[:77] + "...")
    return head + "\n" + frame.to_string(index=False) + "\n"
