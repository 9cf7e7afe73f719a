"""Where evar keeps its caches and outputs; each is overridable by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Downloaded weights and datasets: ``$EVAR_CACHE_DIR`` or ``~/.cache/evar``."""
    return Path(os.environ.get("EVAR_CACHE_DIR", Path.home() / ".cache" / "evar"))


def prepared_tasks_dir() -> Path:
    """Prepared task metadata (one CSV + JSON per task): ``$EVAR_TASKS_DIR`` or ``<cache>/tasks``."""
    return Path(os.environ.get("EVAR_TASKS_DIR", cache_dir() / "tasks"))


def embeddings_dir() -> Path:
    """Embedding cache: ``$EVAR_EMBEDDINGS_DIR`` or ``./embeddings``."""
    return Path(os.environ.get("EVAR_EMBEDDINGS_DIR", "embeddings"))


def results_dir() -> Path:
    """Results store: ``$EVAR_RESULTS_DIR`` or ``<cache>/results`` (``~/.cache/evar/results``).

    Not the working directory: run from a checkout of evar, ``./results`` holds the shipped example
    results, which a user's runs must neither append to nor be mixed with."""
    return Path(os.environ.get("EVAR_RESULTS_DIR", cache_dir() / "results"))


def task_data_dir() -> Path:
    """Split lists shipped with evar: the repository's top-level ``tasks/`` (installed as ``evar._task_data``)."""
    source_tree = Path(__file__).resolve().parent.parent / "tasks"
    if source_tree.is_dir():
        return source_tree
    from importlib.resources import files

    return Path(str(files("evar._task_data")))
