"""Which runs of the results store count: settings flattened and hashed (run-only settings aside), one run per
cell resting on the most seeds; and the published numbers beside them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from evar.errors import EvarError
from evar.paths import results_dir

#: Entries of `settings` that say where a run ran or what it found, not what it measures (left out of the hash)
RUN_ONLY_SETTINGS = frozenset({"device", "best_epochs", "run_dir", "skipped_files", "class_accuracy", "confusion",
                               "draw_scores", "grid_chosen"})


#: Settings fixed by the task rather than chosen for the run (left out, so one hash spans a model's tasks)
TASK_SETTINGS = frozenset({"unit_sec"})


def published_path() -> Path:
    """Reference numbers from the original papers: ``published.csv`` in the results directory when
    the user keeps one there, else the table installed with evar (``evar/published.csv``)."""
    own = results_dir() / "published.csv"
    return own if own.is_file() else Path(__file__).resolve().parent / "published.csv"


def load_published(path: str | Path | None = None, source: str | None = None) -> pd.DataFrame:
    """Published scores (percent): columns model, task, score, source; one row per (model, task).

    Where several sources give a (model, task), the first row of the file wins, or the first whose
    source contains ``source`` (case-insensitive) when it is given.
    """
    path = Path(path) if path else published_path()
    if not path.is_file():
        raise EvarError(f"{path}: published reference numbers not found (expected a CSV model,task,score,source)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"model", "task", "score", "source"} - set(table.columns)
    if missing:
        raise EvarError(f"{path}: missing column(s) {', '.join(sorted(missing))}; expected model,task,score,source")
    table["score"] = pd.to_numeric(table["score"], errors="coerce")
    bad = table[table["score"].isna()]
    if len(bad):
        raise EvarError(f"{path}: row {bad.index[0] + 2} has no numeric score")
    if source:
        table = table[table["source"].str.contains(source, case=False, regex=False)]
        if table.empty:
            raise EvarError(f"{path}: no row has a source containing {source!r}")
    return table.drop_duplicates(["model", "task"], keep="first").reset_index(drop=True)


def flatten_settings(settings: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level of dotted keys (``{"encoder": {"mel": "evar"}}`` -> ``encoder.mel``)."""
    if isinstance(settings, str):
        try:
            settings = json.loads(settings) if settings.strip() else {}
        except json.JSONDecodeError:
            return {prefix.rstrip(".") or "settings": settings}
    if not isinstance(settings, dict):
        return {prefix.rstrip("."): settings}
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(flatten_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def compared_settings(flat: dict[str, Any], ignore: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in flat.items() if k not in ignore and k.rsplit(".", 1)[-1] != "weights_sha256"}


def settings_hash(settings: Any, ignore: frozenset[str] = RUN_ONLY_SETTINGS | TASK_SETTINGS) -> str:
    """Six hex digits identifying the settings of a run, leaving out the keys in ``ignore`` and the
    weights' sha256 (a column of its own)."""
    flat = compared_settings(flatten_settings(settings), ignore)
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:6]


def model_label(model: str, layers: str) -> str:
    """``cnn14`` or ``cnn14+3,6``: the name evar.api.model_label gives a run."""
    return f"{model}+{layers}" if layers else model


def prepare_runs(results: pd.DataFrame, protocol: str, ignore: frozenset[str] = RUN_ONLY_SETTINGS | TASK_SETTINGS
                 ) -> pd.DataFrame:
    """Runs of ``protocol`` with numeric ``score``/``std`` in percent, ``label``, parsed ``settings_dict``
    and ``shash``, in the order they were recorded (date, then file order)."""
    runs = results[results["protocol"].astype(str) == protocol].copy()
    if runs.empty:
        have = sorted(set(results["protocol"].astype(str))) if len(results) else []
        raise EvarError(f"no {protocol} results yet" + (f" (results exist for: {', '.join(have)})" if have else "")
                        + "; run: evar probe --task TASK --model MODEL")
    for column in ("layers", "weights", "weights_sha256", "settings", "date", "run_id", "seeds"):
        runs[column] = runs[column].fillna("").astype(str)
    runs["score_pct"] = pd.to_numeric(runs["score"], errors="coerce") * 100
    runs["std_pct"] = pd.to_numeric(runs["std"], errors="coerce") * 100
    runs["label"] = [model_label(m, l) for m, l in zip(runs["model"].astype(str), runs["layers"])]
    runs["settings_dict"] = [flatten_settings(s) for s in runs["settings"]]
    runs["shash"] = [settings_hash(s, ignore) for s in runs["settings_dict"]]
    runs["order"] = range(len(runs))
    runs["n_seeds"] = [_count_seeds(s) for s in runs["seeds"]]
    return runs.sort_values(["date", "order"], kind="mergesort")


def _count_seeds(text: str) -> int:
    try:
        seeds = json.loads(text) if text else []
    except ValueError:
        return 1
    return len(seeds) if isinstance(seeds, list) else 1


def best_founded(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group of ``keys``: the run with the most seeds, the latest among those."""
    ranked = runs.sort_values(["n_seeds", "date", "order"], kind="mergesort")
    return ranked.groupby(keys, sort=False).tail(1).sort_values(["date", "order"], kind="mergesort")


def test_clips(tasks: Sequence[str]) -> dict[str, int]:
    """Test clips of each prepared task over its rounds (every clip once for cross-validation tasks)."""
    from evar.tasks import load_task

    sizes = {}
    for task in tasks:
        try:
            sizes[task] = sum(len(split.test) for split in load_task(task).splits())
        except EvarError as exc:
            raise EvarError(f"--average weighted needs each task's test size: {exc}") from exc
    return sizes
