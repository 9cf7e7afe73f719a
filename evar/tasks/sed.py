"""Sound event detection (SED) tasks: clips with timed events (file, onset, offset, label).

An event task is stored like any task (``<name>.csv``: file, label, split|fold, where ``label``
joins the classes present in the clip with ``;``, so it loads as a multi-label task) plus its
events in ``<name>.events.csv`` (file, onset, offset, label; seconds) beside it in
``$EVAR_TASKS_DIR``. The events file records the sha256 of the metadata CSV it belongs to: a task
re-prepared under the same name as a clip-level task is not mistaken for an event task.

A user-defined SED task comes from one CSV (:func:`prepare_sed`), one row per event::

    file,onset,offset,label,split          (or fold instead of split)
    street/a.wav,0.50,1.25,car,train
    street/b.wav,,,,test                   a clip without events: onset, offset and label empty

HEAR 2021 event task folders are read by :func:`evar.tasks.hear.prepare_hear`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from evar.errors import EvarError
from evar.io import atomic_write_text
from evar.log import log
from evar.metrics.sed import Event
from evar.tasks import (
    LABEL_SEPARATOR, Task, TaskSpec, check_audio_files, check_new_task_name, get_task_spec, metadata_paths,
    register_source, save_prepared,
)
from evar.tasks.custom import read_csv_table

EVENT_COLUMNS = ["file", "onset", "offset", "label"]
#: HEAR 2021 event metrics: (t_collar s, evaluate_offset, percentage_of_length), heareval/score.py
EVENT_METRICS = {
    "event_onset_200ms_fms": (0.2, False, 0.5),
    "event_onset_50ms_fms": (0.05, False, 0.5),
    "event_onset_offset_50ms_20perc_fms": (0.05, True, 0.2),
}
DEFAULT_METRIC = "event_onset_200ms_fms"
SPLIT_VALUES = ("train", "valid", "test")


def events_path(name: str) -> Path:
    """Where the events of prepared task ``name`` are stored."""
    return metadata_paths(name)[0].with_name(f"{name}.events.csv")


def _csv_sha256(name: str) -> str | None:
    path = metadata_paths(name)[0]
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _header(name: str) -> dict | None:
    """The JSON header of ``<name>.events.csv`` when it belongs to the current metadata, else None."""
    path = events_path(name)
    if not path.is_file():
        return None
    first = path.read_text().split("\n", 1)[0]
    try:
        header = json.loads(first[1:]) if first.startswith("#") else None
    except ValueError:
        return None
    if not isinstance(header, dict) or header.get("metadata_sha256") != _csv_sha256(name):
        return None
    return header


def is_event_task(name: str) -> bool:
    """Whether task ``name`` is an event (SED) task (its spec's ``kind``)."""
    try:
        return get_task_spec(name).kind == "event"
    except EvarError:
        return False


def primary_metric(name: str) -> str:
    """The event task's primary metric (HEAR's ``evaluation[0]``; default ``event_onset_200ms_fms``)."""
    return get_task_spec(name).event_metric or DEFAULT_METRIC


def load_events(task: Task) -> dict[str, list[Event]]:
    """Events of prepared event task ``task``, per metadata ``file`` (every file present, maybe empty)."""
    if not is_event_task(task.name) or _header(task.name) is None:
        raise EvarError(f"task {task.name!r} is not a prepared event (SED) task; prepare it with "
                        "`evar prepare sed --csv ...` or `evar prepare hear --root EVENT_TASK`")
    table = pd.read_csv(events_path(task.name), skiprows=1, dtype={"file": str, "label": str}, keep_default_na=False)
    events: dict[str, list[Event]] = {f: [] for f in task.meta["file"]}
    for row in table.itertuples(index=False):
        if row.file in events:
            events[row.file].append(Event(float(row.onset), float(row.offset), str(row.label)))
    return events


def _clip_labels(files: pd.Series, events: pd.DataFrame) -> pd.Series:
    """The ``;``-joined sorted classes present in each clip ('' for a clip without events)."""
    present = events.groupby("file")["label"].agg(lambda s: LABEL_SEPARATOR.join(sorted(set(s))))
    return files.map(present).fillna("")


def save_event_task(spec: TaskSpec, root: Path, clips: pd.DataFrame, events: pd.DataFrame,
                    on_error: str = "fail", metric: str = DEFAULT_METRIC) -> Task:
    """Check the clips' audio, then write the metadata (clip rows) and the events of an event task.

    ``clips``: file, split|fold (one row per clip); ``events``: file, onset, offset, label (seconds).
    Events past a clip's end are cut at its duration; events starting at or after it are dropped (as
    hear-preprocess trims them), and both are reported. ``metric`` (one of ``EVENT_METRICS``) is the
    primary score of the SED probe.
    """
    if metric not in EVENT_METRICS:
        raise EvarError(f"{spec.name}: unknown event metric {metric!r}; known: {', '.join(EVENT_METRICS)}")
    spec.kind, spec.event_metric = "event", metric
    group = "fold" if spec.folds else "split"
    clips = clips.assign(label=_clip_labels(clips["file"], events))[["file", "label", group]]
    clips, problems = check_audio_files(root, clips, on_error)
    for problem in problems:
        log.warning(f"skipped {problem['file']}: {problem['reason']}")
    if clips.empty:
        raise EvarError(f"{spec.name}: no usable audio files under {root}")
    durations = {f: sf.info(os.fsencode(root / f)).duration for f in clips["file"]}
    events = events[events["file"].isin(durations)].copy()
    duration = events["file"].map(durations)
    late = events["onset"] >= duration
    cut = ~late & (events["offset"] > duration)
    if late.any() or cut.any():
        log.warning(f"{spec.name}: {int(late.sum())} event(s) starting after their clip's end dropped, "
                    f"{int(cut.sum())} cut at the clip's end")
    events.loc[cut, "offset"] = duration[cut]
    events = events[~late].sort_values(["file", "onset", "label"], kind="stable")
    clips["label"] = _clip_labels(clips["file"], events).fillna("")
    if spec.n_classes is None:
        spec.n_classes = int(events["label"].nunique())
    task = save_prepared(spec, root, clips, problems)
    body = events[EVENT_COLUMNS].to_csv(index=False, float_format="%.6g")
    header = json.dumps({"metadata_sha256": _csv_sha256(spec.name), "primary": metric})
    atomic_write_text(events_path(spec.name), f"#{header}\n{body}")
    return task



def _read_table(csv: Path) -> pd.DataFrame:
    return read_csv_table(csv).apply(lambda col: col.str.strip())


def _lines(mask: pd.Series) -> list[int]:
    """CSV line numbers (header = line 1) of the first rows where ``mask`` holds."""
    return [int(i) + 2 for i in np.flatnonzero(mask.to_numpy())[:5]]


def check_name(name: str) -> None:
    """Refuse task names that are not plain or that a built-in task (or a prepare keyword) uses."""
    check_new_task_name(name)


@register_source("sed", reads_csv=True)
def prepare_sed(csv: str | Path, root: str | Path, name: str, unit_sec: float | None = None,
                on_error: str = "fail") -> Task:
    """Prepare SED task ``name`` from ``csv`` (file, onset, offset, label, split|fold; times in seconds).

    ``file`` is relative to ``root``. A file may have many rows (one per event) that all give the same
    split/fold; a row with empty onset, offset and label lists a clip without events. ``unit_sec``
    (stored; the SED probe embeds whole clips) defaults to the mean clip duration.
    """
    csv, root = Path(csv).expanduser(), Path(root).expanduser()
    check_name(name)
    if not root.is_dir():
        raise EvarError(f"--root {root}: not a directory")
    table = _read_table(csv)
    missing = [c for c in EVENT_COLUMNS if c not in table.columns]
    groups = [c for c in ("split", "fold") if c in table.columns]
    if missing or len(groups) != 1:
        raise EvarError(f"{csv}: expected columns file,onset,offset,label and one of split or fold; "
                        f"found {list(table.columns)}")
    group = groups[0]
    if table.empty:
        raise EvarError(f"{csv}: no rows")
    for column in ("file", group):
        empty = table[column] == ""
        if empty.any():
            raise EvarError(f"{csv}: empty {column!r} on line(s) {_lines(empty)}")
    blank = (table[["onset", "offset", "label"]] == "").all(axis=1)
    partial = (table[["onset", "offset", "label"]] == "").any(axis=1) & ~blank
    if partial.any():
        raise EvarError(f"{csv}: onset, offset and label must all be given (or all empty for a clip without "
                        f"events) on line(s) {_lines(partial)}")
    onset = pd.to_numeric(table["onset"].where(~blank), errors="coerce")
    offset = pd.to_numeric(table["offset"].where(~blank), errors="coerce")
    bad = ~blank & (onset.isna() | offset.isna() | (onset < 0) | ~(offset > onset))
    if bad.any():
        raise EvarError(f"{csv}: onset and offset must be numbers in seconds with 0 <= onset < offset, "
                        f"see line(s) {_lines(bad)}")
    if group == "split":
        unknown = ~table["split"].isin(SPLIT_VALUES)
        if unknown.any():
            raise EvarError(f"{csv}: unknown split value(s) {sorted(set(table['split'][unknown]))[:5]} on line(s) "
                            f"{_lines(unknown)}; allowed: {', '.join(SPLIT_VALUES)}")
        n_folds = 0
    else:
        folds = pd.to_numeric(table["fold"], errors="coerce")
        if (folds.isna() | (folds != folds.round()) | (folds < 1)).any():
            raise EvarError(f"{csv}: fold must be an integer >= 1, see line(s) "
                            f"{_lines(folds.isna() | (folds != folds.round()) | (folds < 1))}")
        table["fold"] = folds.astype(int)
        present = sorted(set(table["fold"]))
        n_folds = len(present)
        if n_folds < 2 or present != list(range(1, n_folds + 1)):
            raise EvarError(f"{csv}: folds must be numbered 1..K with K >= 2 and no gaps, found {present}")
    per_file = table.groupby("file", sort=False)[group].nunique()
    if (per_file > 1).any():
        raise EvarError(f"{csv}: file {per_file[per_file > 1].index[0]!r} has rows in more than one {group}")
    clips = table.drop_duplicates("file")[["file", group]].reset_index(drop=True)
    if group == "split" and not {"train", "test"} <= set(clips["split"]):
        raise EvarError(f"{csv}: a task needs train and test clips")
    events = pd.DataFrame({"file": table["file"], "onset": onset, "offset": offset, "label": table["label"]})[~blank]
    if unit_sec is None:
        unit_sec = max(0.01, round(float(np.mean([sf.info(os.fsencode(root / f)).duration for f in clips["file"]
                                                  if (root / f).is_file()] or [1.0])), 2))
    if not unit_sec > 0:
        raise EvarError(f"unit_sec must be positive, got {unit_sec}")
    spec = TaskSpec(name, float(unit_sec), None, n_folds, True, description=f"SED task from {csv.name}",
                    source=str(csv.resolve()))
    return save_event_task(spec, root, clips, events, on_error)
