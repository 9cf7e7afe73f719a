"""One JSON record per run beside its ``scores.csv`` row, and their validation (``evar results validate``).

``<results>/records/<run_id>.json``, schema version 2::

    {"schema": 2,
     "run": the scores.csv row (run_id, date, evar_version, protocol, model, layers, task, metric, score, std,
            n_folds, fold_scores[round][seed], seeds, weights, weights_sha256, settings),
     "task_data": {"clips": N, "sha256": hash of every prepared row's file, label, split or fold and file size,
                   "root": the prepared data folder},
     "encoder": {"name", "weights" (file given, "official" or ""), "weights_sha256",
                 "hub": {"model_id", "revision"} for Hugging Face models, else null},
     "environment": {"evar", "git_commit" (when run from a checkout), "python", "platform", "torch",
                     "transformers", "numpy"},
     "provenance": {"device", "compute_dtype", "embedding_dtype", "wall_sec",
                    "stages_sec": {"decode", "statistics", "embedding", "probe" or "training"} (those that ran),
                    "clips_embedded", "clips_per_sec", "embeddings": {"cached": bool, "computed": what computing
                    the cache took when it was reused}, "peak_rss_mb", "peak_device_mb",
                    "cost": {"params", "gflops_per_audio_second", "counted_on_sec", "counter"}}}

(:mod:`evar.results.provenance` says how each is measured.) Schema 1 records (no encoder or provenance
section) still validate, with a note. The record is written after the row (atomically); a reviewer checks that
the score follows from the fold scores, that every fold has every seed, that the row in ``scores.csv`` says the
same, that the stored leaderboards are the ones the records give, and which settings differ from the
protocol's standard ones.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from evar.errors import EvarError
from evar.io import atomic_write_text
from evar.paths import results_dir

SCHEMA_VERSION = 2
#: schemas still read (older records lack the encoder and provenance sections)
READABLE_SCHEMAS = (1, 2)
PROVENANCE_FIELDS = ("device", "wall_sec", "stages_sec", "peak_rss_mb", "cost")
RUN_FIELDS = ("run_id", "date", "evar_version", "protocol", "model", "layers", "task", "metric", "score", "std",
              "n_folds", "fold_scores", "seeds", "weights", "weights_sha256", "settings")
#: the standard settings of each protocol (a row with others is flagged, not refused)
STANDARD_SETTINGS = {"linear": {"lr": 3e-4, "max_epochs": 200, "patience": 20, "linear_mode": "evar"},
                     "mlp": {"lr": 3e-4, "max_epochs": 200, "patience": 20},
                     "knn": {"k": 10, "metric": "cosine", "temperature": 0.07},
                     "fewshot": {"shots": 8, "draws": 10, "classifier": "logistic", "c": 1.0}}


def records_dir(directory: str | Path | None = None) -> Path:
    return Path(directory or results_dir()) / "records"


def environment() -> dict[str, Any]:
    """Versions of what computed the run, and evar's git commit when it runs from a checkout (transformers' from
    its package metadata: importing it takes about 0.6 s, which a run that does not use it should not pay)."""
    from importlib.metadata import version

    import numpy
    import torch

    from evar import __version__

    return {"evar": __version__, "git_commit": _git_commit(), "python": sys.version.split()[0],
            "platform": platform.platform(), "torch": torch.__version__, "transformers": version("transformers"),
            "numpy": numpy.__version__}


def _git_commit() -> str | None:
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def task_data(task_name: str) -> dict[str, Any]:
    """What the run's task data was: its prepared rows and file sizes, hashed."""
    from evar.tasks import load_task

    try:
        task = load_task(task_name)
    except EvarError:
        return {"clips": None, "sha256": None, "root": None}
    digest = hashlib.sha256()
    group = "fold" if task.spec.folds else "split"
    for file, label, part in task.meta[["file", "label", group]].itertuples(index=False):
        path = task.root / file
        size = path.stat().st_size if path.is_file() else -1
        digest.update(f"{file}\t{label}\t{part}\t{size}\n".encode())
    return {"clips": len(task.meta), "sha256": digest.hexdigest(), "root": str(task.root)}


def encoder_section(row: dict[str, Any]) -> dict[str, Any]:
    """What evaluated: the encoder's name, checkpoint and its sha256, and the hub id and revision of hub models."""
    settings = row.get("settings") if isinstance(row.get("settings"), dict) else {}
    config = settings.get("encoder") if isinstance(settings.get("encoder"), dict) else {}
    hub = {"model_id": config["model_id"], "revision": config.get("revision") or None} \
        if config.get("model_id") else None
    return {"name": row.get("model"), "weights": row.get("weights") or "",
            "weights_sha256": row.get("weights_sha256") or "", "hub": hub}


def write_record(row: dict[str, Any], directory: str | Path | None = None,
                 provenance: dict[str, Any] | None = None) -> Path:
    """Write the record of the stored ``row`` (as :func:`evar.results.store.append_result` returned it);
    ``provenance`` None takes the summary of the run clock in progress (an empty section outside one)."""
    from evar.results import provenance as clock

    if provenance is None:
        running = clock.current()
        provenance = running.summary() if running is not None else {
            **{k: None for k in PROVENANCE_FIELDS}, "peak_rss_mb": clock.peak_rss_mb()}
    record = {"schema": SCHEMA_VERSION, "run": {k: row.get(k) for k in RUN_FIELDS},
              "task_data": task_data(str(row["task"])), "encoder": encoder_section(row),
              "environment": environment(), "provenance": provenance}
    path = records_dir(directory) / f"{row['run_id']}.json"
    return atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")


def check_record(record: dict[str, Any], where: str) -> tuple[list[str], list[str]]:
    """Problems (the record cannot be trusted) and notes (non-standard settings) of one record."""
    if record.get("schema") not in READABLE_SCHEMAS:
        return [f"{where}: schema {record.get('schema')!r}, expected one of {READABLE_SCHEMAS}"], []
    run = record.get("run")
    if not isinstance(run, dict) or sorted(set(RUN_FIELDS) - set(run)):
        missing = sorted(set(RUN_FIELDS) - set(run)) if isinstance(run, dict) else ["run"]
        return [f"{where}: missing field(s) {missing}"], []
    problems, notes = [], []
    if record["schema"] == 1:
        notes.append(f"{where}: schema 1 record (no encoder, cost or stage times)")
    else:
        section = record.get("provenance")
        missing = ([] if isinstance(record.get("encoder"), dict) else ["encoder"]) + [
            f"provenance.{k}" for k in PROVENANCE_FIELDS if not isinstance(section, dict) or k not in section]
        if missing:
            problems.append(f"{where}: missing field(s) {missing}")
        elif record["encoder"].get("weights_sha256", "") != (run["weights_sha256"] or ""):
            problems.append(f"{where}: encoder.weights_sha256 differs from the run's")
    problems += _round_problems(run, where)
    standard = STANDARD_SETTINGS.get(str(run["protocol"]), {})
    settings = run["settings"] if isinstance(run["settings"], dict) else {}
    for key, value in standard.items():
        if key in settings and settings[key] != value:
            notes.append(f"{where}: non-standard {run['protocol']} setting {key}={settings[key]!r} "
                         f"(standard {value!r})")
    return problems, notes


def _round_problems(run: dict[str, Any], where: str) -> list[str]:
    """Every round has a score for every seed, the task's folds are all there, the score is their mean."""
    problems = []
    folds, seeds = run["fold_scores"], run["seeds"]
    expected = _task_rounds(str(run["task"]))
    if expected is not None and run["protocol"] != "sed" and run["n_folds"] != expected:
        problems.append(f"{where}: {run['n_folds']} round(s) recorded, but {run['task']} has {expected} "
                        f"fold(s) or split(s)")
    if not isinstance(folds, list) or len(folds) != run["n_folds"]:
        problems.append(f"{where}: {len(folds) if isinstance(folds, list) else 0} round(s) of scores for n_folds "
                        f"{run['n_folds']}")
    elif any(not isinstance(f, list) or len(f) != len(seeds) for f in folds):
        problems.append(f"{where}: a round lacks scores for some of the {len(seeds)} seed(s) {seeds}")
    else:
        mean = sum(map(sum, folds)) / max(1, sum(map(len, folds)))
        if not math.isclose(float(run["score"]), round(mean, 6), abs_tol=2e-6):
            problems.append(f"{where}: score {run['score']} does not follow from the fold scores (mean {mean:.6f})")
    return problems


def _task_rounds(task: str) -> int | None:
    """How many folds a registered cross-validation task has (None: a fixed split or an unknown task)."""
    from evar.tasks import get_task_spec

    try:
        folds = get_task_spec(task).folds
    except EvarError:
        return None
    return folds or None


def validate(directory: str | Path) -> tuple[list[str], list[str]]:
    """Check every record under ``directory`` (a results folder or its ``records/``) against the schema, its own
    scores and its ``scores.csv`` row. Returns (problems, notes)."""
    from evar.results.store import read_results

    folder = Path(directory)
    records = folder if folder.name == "records" else folder / "records"
    files = sorted(records.glob("*.json"))
    if not files:
        raise EvarError(f"{records}: no run records (*.json) to validate")
    rows = {}
    csv_path = records.parent / "scores.csv"
    if csv_path.is_file():
        rows = {str(r["run_id"]): r for r in read_results(records.parent).to_dict("records")}
    problems, notes, runs = [], [], []
    for path in files:
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            problems.append(f"{path}: not JSON ({exc})")
            continue
        found, noted = check_record(record, str(path))
        problems += found
        notes += noted
        run = record.get("run") if isinstance(record.get("run"), dict) else {}
        if not found:
            runs.append(run)
        row = rows.get(str(run.get("run_id")))
        if csv_path.is_file() and row is None:
            problems.append(f"{path}: run {run.get('run_id')} has no row in {csv_path}")
        elif row is not None:
            problems += [f"{path}: {key} differs from its row in {csv_path}" for key in ("score", "fold_scores",
                         "settings", "seeds", "weights_sha256") if _value(row.get(key)) != _value(run.get(key))]
    return problems + table_problems(records.parent, runs), notes


def table_problems(folder: Path, runs: list[dict[str, Any]]) -> list[str]:
    """Leaderboards stored in ``folder`` (written by ``evar leaderboard --out``) that the records do not give."""
    from evar.results.leaderboard import leaderboard_text, stored_options
    from evar.results.store import rows_frame

    problems = []
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".md", ".tex", ".html") and p.is_file()):
        text = path.read_text()
        options = stored_options(text)
        if options is None:
            continue
        try:
            rebuilt = leaderboard_text(rows_frame(runs), **options, records=folder / "records")
        except EvarError as exc:
            problems.append(f"{path}: cannot be rebuilt from the records ({exc})")
            continue
        if _table_content(rebuilt, options) != _table_content(text.split("\n", 1)[1], options):
            problems.append(f"{path}: differs from the leaderboard rebuilt from the records "
                            f"(evar leaderboard with {options}); regenerate it or find the edited record")
    return problems


def _table_content(text: str, options: dict[str, Any]) -> str:
    """What must match: the whole table, or a page's embedded data (its figures may differ by plotting library)."""
    if options.get("fmt") == "html":
        from evar.results.page import page_data

        return json.dumps(page_data(text), sort_keys=True)
    return text


def _value(value: Any) -> Any:
    """A CSV cell or a record value, compared as the same JSON value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, float):
        return round(value, 6)
    return value


def export_records(out: str | Path, directory: str | Path | None = None) -> list[Path]:
    """Write the latest record of each model × layers × task × protocol into ``out`` for sharing
    (``<model>__<task>__<protocol>.json``, layer fusions as ``model+layers``)."""
    from evar.io import safe_name

    latest: dict[tuple, dict] = {}
    for path in sorted(records_dir(directory).glob("*.json")):
        record = json.loads(path.read_text())
        run = record["run"]
        key = (run["model"], run.get("layers") or "", run["task"], run["protocol"])
        if key not in latest or str(run["date"]) >= str(latest[key]["run"]["date"]):
            latest[key] = record
    if not latest:
        raise EvarError(f"{records_dir(directory)}: no run records to export")
    written = []
    for (model, layers, task, protocol), record in sorted(latest.items()):
        label = f"{model}+{layers}" if layers else model
        written.append(atomic_write_text(Path(out) / safe_name(f"{label}__{task}__{protocol}.json"),
                                         json.dumps(record, indent=1, default=str) + "\n"))
    return written


def import_records(source: str | Path, directory: str | Path | None = None) -> tuple[int, int]:
    """Merge someone else's records (a folder of ``*.json``): each new run becomes a ``scores.csv`` row and keeps its
    own record; runs already here (same run id) are skipped. Invalid records are refused, none is half-imported.
    Returns (imported, skipped)."""
    from evar.results.store import append_result

    files = sorted(Path(source).glob("*.json"))
    if not files:
        raise EvarError(f"{source}: no run records (*.json) to import")
    records = []
    for path in files:
        record = json.loads(path.read_text())
        problems, _ = check_record(record, str(path))
        if problems:
            raise EvarError("refused, nothing imported: " + "; ".join(problems))
        records.append(record)
    present = {p.stem for p in records_dir(directory).glob("*.json")}
    imported = 0
    for record in records:
        run = record["run"]
        if run["run_id"] in present:
            continue
        append_result({k: v for k, v in run.items() if k in RUN_FIELDS}, directory)
        atomic_write_text(records_dir(directory) / f"{run['run_id']}.json", json.dumps(record, indent=1) + "\n")
        present.add(run["run_id"])
        imported += 1
    return imported, len(records) - imported
