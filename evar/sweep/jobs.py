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

This module holds the jobs and their store; :mod:`evar.sweep.steps` the steps, :mod:`evar.sweep.backends`
the backends and :func:`~evar.sweep.backends.run_sweep`, :mod:`evar.sweep.status` the status table.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from evar.encoders import model_label
from evar.errors import EvarError
from evar.io import atomic_write_text
from evar.options import LinearSettings, ModelChoice
from evar.paths import results_dir

PROTOCOLS = ("linear", "finetune")
STATES = ("pending", "running", "done", "failed")
#: seconds between heartbeats of a running sweep; a running job silent for 3 beats is shown as stale
HEARTBEAT_SEC = 30.0
#: probe settings of a linear job (LinearSettings' defaults; the seeds are the job's own)
LINEAR_DEFAULTS = LinearSettings().probe_kwargs()


def now_iso() -> str:
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
                          json.dumps({"id": ident, "created": now_iso(), "jobs": [j.id for j in jobs]}, indent=1))
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


# ---------------------------------------------------------------- running a sweep


# ---------------------------------------------------------------- status


