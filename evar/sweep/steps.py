"""The steps of a job, run in this process or on a Ray worker: embed (shared by a model's jobs on a task),
probe a round, fine-tune, and the linear row."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from evar.api import embed as api_embed
from evar.api import fused_layers, linear_settings
from evar.embeddings.cache import skipped_clips
from evar.embeddings.datasets import SharedDecoding
from evar.encoders import model_label
from evar.errors import EvarError
from evar.options import RunOptions
from evar.paths import cache_dir, embeddings_dir, prepared_tasks_dir, results_dir
from evar.protocols.base import Result, class_summary, score_rounds, weights_field
from evar.protocols.linear import LinearRounds, evar_row_orders
from evar.results import provenance
from evar.sweep.jobs import Job
from evar.tasks import load_task


def worker_env() -> dict[str, str]:
    """This process's evar folders as absolute paths, for workers (which may start elsewhere)."""
    return {"EVAR_CACHE_DIR": str(cache_dir().resolve()), "EVAR_TASKS_DIR": str(prepared_tasks_dir().resolve()),
            "EVAR_EMBEDDINGS_DIR": str(embeddings_dir().resolve()), "EVAR_RESULTS_DIR": str(results_dir().resolve())}


def embed_step(job_spec: dict, run: RunOptions, env: dict[str, str], decoded: SharedDecoding | None = None
               ) -> tuple[np.ndarray, dict]:
    """Embeddings of a job's task (from the cache when present; computed from ``decoded``'s clips where it
    shares the encoder's rate) and what its row records of the encoder."""
    from evar.tasks.sed import is_event_task

    os.environ.update(env)
    job = Job.from_spec(job_spec)
    if is_event_task(job.task):
        raise EvarError(f"{job.task} is an event (SED) task, which sweeps do not run yet; "
                        f"use: evar probe --task {job.task} --model {job.model}")
    model = job.model_choice()
    with provenance.run_clock(run.device, run.dtype) as clock:
        encoder = model.build(run.device)
        layers = fused_layers(model, encoder)
        X = api_embed(model, job.task, run=run, encoder=encoder, decoded=decoded)
    skipped = skipped_clips(load_task(job.task), encoder, model_label(job.model, layers), run.dtype,
                            autocast=run.autocast)
    info = {"layers": [str(l) for l in layers], "config": encoder.config(), "weights_sha256": encoder.weights_sha256,
            "skipped": skipped, "evar_init_words": getattr(encoder, "evar_init_words", None),
            "needs_stats": encoder.needs_stats, "provenance": clock.summary()}
    return np.asarray(X), json.loads(json.dumps(info, default=str))


def shared_decoding(jobs: list[Job], run: RunOptions) -> SharedDecoding | None:
    """The decoding that jobs of one task (one per model) share: at each sample rate two or more of their
    encoders declare; None when no rate is shared or the task is not prepared (its jobs then fail, saying so)."""
    from collections import Counter

    from evar.encoders import get_encoder_spec

    rates = Counter()
    for job in jobs:
        try:
            rates[get_encoder_spec(job.model).sample_rate] += 1
        except EvarError:
            continue  # an unknown model: its own job says so
    shared = [rate for rate, count in rates.items() if rate and count > 1]
    if not shared:
        return None
    try:
        task = load_task(jobs[0].task)
    except EvarError:
        return None
    return SharedDecoding(task, embeddings_dir() / "decoding", shared, num_workers=run.num_workers,
                          progress=run.progress)


def probe_step(X: np.ndarray, job_spec: dict, round_index: int | None, run: RunOptions, env: dict[str, str],
               info: dict | None = None) -> tuple[list[str], list[list[float]], list | None, float]:
    """A linear job's rounds (all, or the one ``round_index``): their names, one score per seed each, the
    confusion counts of their test predictions (None for multi-label tasks) and the seconds it took; in ``evar``
    mode the rounds before ``round_index`` are trained too (they advance EVAR's generators) but only the reported
    ones are counted."""
    started = time.perf_counter()
    os.environ.update(env)
    job = Job.from_spec(job_spec)
    task = load_task(job.task)
    settings = job.linear_settings()
    orders = None
    if settings.mode == "evar" and info:
        orders = evar_row_orders(task, info.get("evar_init_words"), info["needs_stats"])
    rounds = LinearRounds(X, task, settings, run.device, orders)
    names, scores = score_rounds(rounds, settings.seeds, False, round_index)
    if round_index is not None:
        rounds.predictions = {key: value for key, value in rounds.predictions.items() if key[0] == round_index}
    confusion = rounds.confusion()
    return names, scores, None if confusion is None else confusion.tolist(), time.perf_counter() - started


def job_provenance(info: dict, run: RunOptions, probe_seconds: list[float]) -> dict[str, Any]:
    """A linear job's record provenance: its (shared) embedding step's clock and its probe steps' time."""
    clock = provenance.RunClock(run.device, run.dtype)
    clock.merge(info.get("provenance") or {})
    clock.add("probe", sum(probe_seconds))
    summary = clock.summary()
    summary["wall_sec"] = round((info.get("provenance") or {}).get("wall_sec", 0.0) + sum(probe_seconds), 3)
    return summary


def finetune_step(job_spec: dict, run: RunOptions, env: dict[str, str]) -> str:
    """A fine-tuning job (resumes its unfinished run; appends its own row once). Returns the run id."""
    from evar.protocols.finetune import finetune

    os.environ.update(env)
    job = Job.from_spec(job_spec)
    result = finetune(job.task, job.model_choice(), {**job.settings, "seed": job.seeds[0]}, run, resume=True)
    return result.run_id


def n_rounds(task: str) -> int:
    return len(list(load_task(task).splits()))


def linear_row(job: Job, rounds: list[str], scores: list[list[float]], info: dict, run: RunOptions,
               confusions: list[list | None]) -> dict[str, Any]:
    """The ``results/scores.csv`` row of a linear job, as :func:`evar.api.probe` writes it; ``confusions``: the
    probe steps' confusion counts, summed into the row's class-wise results."""
    task = load_task(job.task)
    recorded = linear_settings(task, info["config"], job.linear_settings(), run, info["skipped"])
    if confusions and all(c is not None for c in confusions):
        recorded.update(class_summary(task.classes, np.sum([np.asarray(c) for c in confusions], axis=0)))
    return Result("linear", job.task, job.model, info["layers"], task.spec.metric, rounds, list(job.seeds), scores,
                  recorded, weights_field(job.model, job.weights), info["weights_sha256"] or "").row()
