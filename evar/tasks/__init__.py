"""Task registry: ``@register_task`` on a ``prepare_*`` recipe, then ``prepare_task`` / ``load_task``."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pandas as pd

from evar.errors import EvarError, unknown_name
from evar.io import atomic_write_text
from evar.log import log
from evar.paths import prepared_tasks_dir
from evar.tasks.base import (
    LABEL_SEPARATOR, ON_ERROR_CHOICES, DownloadSpec, RemoteFile, Split, Task, TaskSpec, check_audio_files,
    check_metadata, describe_findings, require_files, split_labels, summarise,
)

_REGISTRY: dict[str, TaskSpec] = {}
_loaded = False


def register_task(name: str, *, unit_sec: float, n_classes: int | None = None, folds: int = 0,
                  multilabel: bool = False, description: str = "", source: str = "", title: str = "",
                  group: str = "", download: DownloadSpec | None = None, kind: str = "scene") -> Callable:
    """Decorator registering ``prepare(root: Path) -> DataFrame[file, label, split|fold]`` as task ``name``.

    The recipe reads the official layout under ``root`` and returns one row per clip, ``file``
    relative to ``root``; evar checks the files, counts and writes the metadata. ``download`` says where
    the official files are (``evar download``). A ``captions`` task's rows carry ``captions`` (a list per clip)
    and an empty label.
    """

    def decorator(prepare: Callable[[Path], pd.DataFrame]) -> Callable[[Path], pd.DataFrame]:
        _REGISTRY[name] = TaskSpec(name, unit_sec, n_classes, folds, multilabel, description, source, prepare,
                                   title, group, kind=kind, download=download)
        return prepare

    return decorator


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in pkgutil.iter_modules(__path__):  # every module of evar.tasks registers itself
            if module.name not in ("base", "download"):
                importlib.import_module(f"{__name__}.{module.name}")


def list_tasks() -> list[TaskSpec]:
    """Registered tasks plus custom tasks prepared on this machine, sorted by name."""
    _load_builtins()
    specs = dict(_REGISTRY)
    for info_path in sorted(prepared_tasks_dir().glob("*.json")):
        name = info_path.stem
        if name not in specs:
            specs[name] = TaskSpec(**json.loads(info_path.read_text())["spec"])
    return [specs[name] for name in sorted(specs)]


def get_task_spec(name: str) -> TaskSpec:
    """The spec of a registered task or of a prepared custom task."""
    for spec in list_tasks():
        if spec.name == name:
            return spec
    raise unknown_name("task", name, [s.name for s in list_tasks()])


def metadata_paths(name: str) -> tuple[Path, Path]:
    base = prepared_tasks_dir()
    return base / f"{name}.csv", base / f"{name}.json"


def save_prepared(spec: TaskSpec, root: Path, meta: pd.DataFrame, problems: list[dict]) -> Task:
    """Validate labels/splits against the spec and write metadata CSV + info JSON atomically."""
    group = "fold" if spec.folds else "split"
    if group not in meta.columns:
        raise EvarError(f"{spec.name}: prepared metadata lacks a {group!r} column")
    if spec.folds:
        bad = sorted(set(meta["fold"].astype(int)) - set(range(1, spec.folds + 1)))
        if bad:
            raise EvarError(f"{spec.name}: folds must be 1..{spec.folds}, found {bad}")
    elif not set(meta["split"]) <= {"train", "valid", "test"}:
        raise EvarError(f"{spec.name}: splits must be train/valid/test, found {sorted(set(meta['split']))}")
    if meta.empty:
        raise EvarError(f"{spec.name}: no usable files under {root}")
    meta = meta[["file", "label", group, *(["captions"] if spec.kind == "captions" else [])]].reset_index(drop=True)
    if spec.kind == "captions":
        meta["captions"] = [_caption_list(spec.name, f, c) for f, c in zip(meta["file"], meta["captions"])]
    findings = check_metadata(spec.name, meta, group, Path(root))
    for line in describe_findings(spec.name, findings):
        log.warning(line)
    info = {
        "spec": spec.to_json(),
        "root": str(Path(root).resolve()),
        "prepared": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "skipped": problems,
        **findings,
        **summarise(meta, group),
    }
    csv_path, info_path = metadata_paths(spec.name)
    atomic_write_text(csv_path, meta.to_csv(index=False))
    atomic_write_text(info_path, json.dumps(info, indent=1))
    return Task(spec, root, meta, info)


def _caption_list(task: str, file: str, captions) -> str:
    """A row's captions as stored (a JSON list); none or blank ones are an error."""
    listed = [str(c).strip() for c in captions] if isinstance(captions, (list, tuple)) else []
    if not listed or not all(listed):
        raise EvarError(f"{task}: {file}: needs one or more non-empty captions, got {captions!r}")
    return json.dumps(listed, ensure_ascii=False)


#: task sources (``custom``, ``sed``, ``hear``): tasks made from the user's own files, registered like tasks;
#: kind -> (make, whether it reads a CSV)
_SOURCES: dict[str, tuple[Callable[..., Task], bool]] = {}


def register_source(kind: str, reads_csv: bool) -> Callable:
    """Decorator registering a task source as ``evar prepare KIND``: ``make(csv, root, name, unit_sec, on_error)``
    when it ``reads_csv``, else ``make(root, name=, unit_sec=, on_error=)`` (a folder with its own metadata)."""

    def decorator(make: Callable[..., Task]) -> Callable[..., Task]:
        _SOURCES[kind] = (make, reads_csv)
        return make

    return decorator


_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_new_task_name(name: str) -> None:
    """A clear error unless ``name`` can name a task made from the user's files: a safe file name, not a built-in
    task and not a task source."""
    if not _TASK_NAME.fullmatch(name):
        raise EvarError(f"task name {name!r}: use letters, digits, '_', '-' or '.', starting with a letter or digit")
    _load_builtins()
    if name in _REGISTRY or name in _SOURCES:
        raise EvarError(f"task name {name!r} is reserved (a built-in task or a task source: {', '.join(sorted(_SOURCES))}); "
                        "choose another name with --name")


def source_kinds() -> list[str]:
    _load_builtins()
    return sorted(_SOURCES)


def prepare(name: str, root: str | Path, on_error: str = "fail", csv: str | Path | None = None,
            task_name: str | None = None, unit_sec: float | None = None) -> Task:
    """What ``evar prepare NAME`` does: a registered task from its official layout under ``root``, or a task
    source (``custom``, ``sed``, ``hear``) made into the task ``task_name`` from the user's files."""
    _load_builtins()
    if name not in _SOURCES:
        return prepare_task(name, root, on_error)
    make, reads_csv = _SOURCES[name]
    if not reads_csv:
        if csv:
            raise EvarError(f"prepare {name} reads the folder's own metadata; --csv does not apply")
        return make(root, name=task_name, unit_sec=unit_sec, on_error=on_error)
    if not csv or not task_name:
        raise EvarError(f"prepare {name} needs --csv FILE and --name NAME")
    return make(csv, root, task_name, unit_sec, on_error)


def prepare_task(name: str, root: str | Path, on_error: str = "fail") -> Task:
    """Prepare registered task ``name`` from its official layout under ``root``.

    Files that are missing or unreadable stop the run (``on_error='fail'``) or are dropped and
    reported (``'skip'``); nothing is dropped silently.
    """
    _load_builtins()
    if name not in _REGISTRY:
        raise unknown_name("task", name, _REGISTRY)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise EvarError(f"--root {root}: not a directory")
    spec = _REGISTRY[name]
    meta = spec.prepare(root)
    meta, problems = check_audio_files(root, meta, on_error)
    for problem in problems:
        log.warning(f"skipped {problem['file']}: {problem['reason']}")
    task = save_prepared(spec, root, meta, problems)
    if spec.n_classes is not None and len(task.classes) != spec.n_classes:
        log.warning(f"{name} has {len(task.classes)} classes in its training data, "
                    f"the protocol has {spec.n_classes}")
    return task


def load_task(name: str) -> Task:
    """Load a prepared task; a clear error says how to prepare it when it is not."""
    spec = get_task_spec(name)
    csv_path, info_path = metadata_paths(name)
    if not csv_path.is_file() or not info_path.is_file():
        raise EvarError(f"task {name!r} is not prepared; run: evar prepare {name} --root PATH")
    info = json.loads(info_path.read_text())
    meta = pd.read_csv(csv_path, dtype={"file": str, "label": str}, keep_default_na=False)  # "NA" is a name
    return Task(spec, Path(info["root"]), meta, info)


def is_prepared(name: str) -> bool:
    return all(p.is_file() for p in metadata_paths(name))


__all__ = [
    "DownloadSpec", "LABEL_SEPARATOR", "ON_ERROR_CHOICES", "RemoteFile", "Split", "Task", "TaskSpec",
    "check_audio_files", "get_task_spec", "is_prepared", "list_tasks", "load_task", "prepare", "prepare_task",
    "register_source", "register_task", "require_files", "save_prepared", "source_kinds", "split_labels",
]
