"""HEAR 2021 task directories (hear-preprocess output) as evar tasks, scene or event.

Layout written by hearbenchmark/hear-preprocess (``FinalCombine``), as in the Zenodo archives
``hear-2021.0.6/tasks/<task>-<version>-<mode>/``::

    task_metadata.json     task_name, embedding_type (scene|event), prediction_type (multiclass|multilabel),
                           split_mode (trainvaltest|presplit_kfold|new_split_kfold), splits, sample_duration
    labelvocabulary.csv    idx,label
    <split>.json           {"<file>.wav": ["label", ...]}     (event tasks: [{"label", "start", "end"}])
    <sr>/<split>/<file>.wav

``trainvaltest`` tasks keep their train/valid/test splits; k-fold tasks (splits ``fold00``..) become
evar folds 1..k evaluated with EVAR's rule (test = fold k, train = the others, no valid split),
not HEAR's (valid = the next fold). Event (timestamp) tasks are refused: evar's linear probe
scores clip-level labels only.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from evar.errors import EvarError
from evar.log import log
from evar.tasks import (
    LABEL_SEPARATOR, Task, TaskSpec, check_audio_files, check_new_task_name, register_source, require_files,
    save_prepared,
)
from evar.tasks.sed import DEFAULT_METRIC, EVENT_METRICS, save_event_task

HINT = "point --root at one HEAR task folder (the one holding task_metadata.json)"
KFOLD_MODES = ("presplit_kfold", "new_split_kfold")
_FOLD = re.compile(r"fold(\d+)")


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EvarError(f"{path}: cannot read as JSON ({exc})") from exc


def read_hear_metadata(root: Path) -> dict:
    """``task_metadata.json`` of a HEAR task folder, checked for what evar needs."""
    require_files(root, "task_metadata.json", hint=HINT)
    path = root / "task_metadata.json"
    meta = _read_json(path)
    missing = [k for k in ("task_name", "embedding_type", "prediction_type", "split_mode", "splits")
               if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise EvarError(f"{path}: missing key(s) {missing}; not a HEAR task_metadata.json")
    if meta["embedding_type"] not in ("scene", "event"):
        raise EvarError(f"{path}: unknown embedding_type {meta['embedding_type']!r} (expected scene or event)")
    if meta["prediction_type"] not in ("multiclass", "multilabel"):
        raise EvarError(f"{path}: unknown prediction_type {meta['prediction_type']!r} "
                        "(expected multiclass or multilabel)")
    return meta


def _groups(meta: dict, path: Path) -> dict[str, tuple[str, object]]:
    """HEAR split name -> (evar column, value): train/valid/test, or foldNN -> fold NN + 1."""
    splits = list(meta["splits"])
    if meta["split_mode"] == "trainvaltest":
        if not {"train", "test"} <= set(splits) or not set(splits) <= {"train", "valid", "test"}:
            raise EvarError(f"{path}: trainvaltest splits must be train, valid, test; found {splits}")
        return {s: ("split", s) for s in splits}
    if meta["split_mode"] not in KFOLD_MODES:
        raise EvarError(f"{path}: unknown split_mode {meta['split_mode']!r}")
    matches = [_FOLD.fullmatch(str(s)) for s in splits]
    if not all(matches):
        raise EvarError(f"{path}: k-fold splits must be named fold00, fold01, ...; found {splits}")
    numbers = sorted(int(m.group(1)) for m in matches)
    if len(numbers) < 2 or numbers != list(range(len(numbers))):
        raise EvarError(f"{path}: folds must be fold00..fold{len(numbers) - 1:02d} without gaps; found {splits}")
    return {s: ("fold", int(m.group(1)) + 1) for s, m in zip(splits, matches)}


def _audio_rate(root: Path, splits: list[str], sample_rate: int | None) -> int:
    """The ``<sr>/`` folder to read: ``sample_rate`` if given, else the highest rate holding every split."""
    rates = sorted((int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True)
    complete = [r for r in rates if all((root / str(r) / s).is_dir() for s in splits)]
    if sample_rate is not None:
        if sample_rate not in complete:
            raise EvarError(f"{root}: no audio folders {sample_rate}/<split>/ for splits {splits}; "
                            f"available rates: {complete or 'none'}")
        return sample_rate
    if not complete:
        raise EvarError(f"{root}: expected audio folders <sample_rate>/<split>/ (e.g. 48000/{splits[0]}/) "
                        f"for splits {splits}; {HINT}")
    return complete[0]


def _labels(split_json: Path, multilabel: bool) -> pd.DataFrame:
    """Rows (file name, evar label) of one ``<split>.json``."""
    table = _read_json(split_json)
    if not isinstance(table, dict):
        raise EvarError(f"{split_json}: expected an object {{file: [labels]}}")
    rows = []
    for name, labels in table.items():
        if not isinstance(labels, list) or not all(isinstance(x, (str, int)) for x in labels):
            raise EvarError(f"{split_json}: {name}: expected a list of labels, got {labels!r}")
        labels = list(dict.fromkeys(str(x) for x in labels))
        if not labels or (not multilabel and len(labels) != 1):
            expected = "at least one label" if multilabel else "exactly one label (multiclass task)"
            raise EvarError(f"{split_json}: {name}: {len(labels)} label(s), expected {expected}")
        if any(LABEL_SEPARATOR in x for x in labels):
            raise EvarError(f"{split_json}: {name}: label contains {LABEL_SEPARATOR!r}, which evar uses to "
                            "join multi-label labels")
        rows.append((name, LABEL_SEPARATOR.join(labels)))
    return pd.DataFrame(rows, columns=["name", "label"])


def _events(split_json: Path) -> tuple[pd.DataFrame, list[str]]:
    """Events (file name, onset s, offset s, label) of one event task ``<split>.json`` (times there in ms),
    and every file name it lists (a file with an empty list has no events)."""
    table = _read_json(split_json)
    if not isinstance(table, dict):
        raise EvarError(f"{split_json}: expected an object {{file: [{{label, start, end}}, ...]}}")
    rows = []
    for name, events in table.items():
        if not isinstance(events, list):
            raise EvarError(f"{split_json}: {name}: expected a list of events, got {events!r}")
        for event in events:
            try:
                start, end, label = float(event["start"]), float(event["end"]), str(event["label"])
            except (TypeError, KeyError, ValueError):
                raise EvarError(f"{split_json}: {name}: expected events {{\"label\", \"start\", \"end\"}} "
                                f"(ms), got {event!r}") from None
            if not 0 <= start < end:
                raise EvarError(f"{split_json}: {name}: event {event!r} needs 0 <= start < end (ms)")
            rows.append((name, start / 1000.0, end / 1000.0, label))
    events = pd.DataFrame(rows, columns=["name", "onset", "offset", "label"])
    return events, list(table)


def _mean_duration(root: Path, files: pd.Series) -> float:
    """Mean clip duration rounded to 0.01 s (the unit for tasks without a fixed sample_duration)."""
    durations = [sf.info(os.fsencode(root / f)).duration for f in files]
    return max(0.01, round(float(np.mean(durations)), 2))


@register_source("hear", reads_csv=False)
def prepare_hear(root: str | Path, name: str | None = None, sample_rate: int | None = None,
                 unit_sec: float | None = None, on_error: str = "fail") -> Task:
    """Prepare the HEAR task folder ``root`` as evar task ``name`` (default ``hear_<task_name>``).

    Audio is read from ``<sample_rate>/<split>/`` (default: the highest rate present; evar resamples
    to each encoder's rate). ``unit_sec`` defaults to HEAR's ``sample_duration``, or the mean clip
    duration when that is null. Files are checked like built-in tasks (``on_error``).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise EvarError(f"--root {root}: not a directory")
    meta = read_hear_metadata(root)
    path = root / "task_metadata.json"
    name = name or "hear_" + re.sub(r"[^A-Za-z0-9_.-]", "_", str(meta["task_name"]))
    check_new_task_name(name)
    groups = _groups(meta, path)
    rate = _audio_rate(root, list(groups), sample_rate)
    multilabel = meta["prediction_type"] == "multilabel"
    if meta["embedding_type"] == "event":
        return _prepare_events(root, meta, name, groups, rate, unit_sec, on_error)
    parts = []
    for split, (column, value) in groups.items():
        require_files(root, f"{split}.json", hint=HINT)
        rows = _labels(root / f"{split}.json", multilabel)
        parts.append(pd.DataFrame({"file": f"{rate}/{split}/" + rows["name"], "label": rows["label"], column: value}))
    table = pd.concat(parts, ignore_index=True)
    column = "fold" if meta["split_mode"] in KFOLD_MODES else "split"
    table, problems = check_audio_files(root, table[["file", "label", column]], on_error)
    for problem in problems:
        log.warning(f"skipped {problem['file']}: {problem['reason']}")
    if table.empty:
        raise EvarError(f"{root}: no usable audio files")
    if unit_sec is None:
        duration = meta.get("sample_duration")
        unit_sec = float(duration) if duration else _mean_duration(root, table["file"])
    if not unit_sec > 0:
        raise EvarError(f"unit_sec must be positive, got {unit_sec}")
    n_classes = None
    if (root / "labelvocabulary.csv").is_file():
        n_classes = len(pd.read_csv(root / "labelvocabulary.csv"))
    spec = TaskSpec(name, float(unit_sec), n_classes, len(groups) if column == "fold" else 0, multilabel,
                    description=f"HEAR {meta['task_name']} ({meta['prediction_type']}, {meta['split_mode']})",
                    source=str(root.resolve()))
    return save_prepared(spec, root, table, problems)


def _prepare_events(root: Path, meta: dict, name: str, groups: dict[str, tuple[str, object]], rate: int,
                    unit_sec: float | None, on_error: str) -> Task:
    """An event task folder as an evar event task (clips + events, see :mod:`evar.tasks.sed`)."""
    clips, events = [], []
    for split, (column, value) in groups.items():
        require_files(root, f"{split}.json", hint=HINT)
        table, names = _events(root / f"{split}.json")
        prefix = f"{rate}/{split}/"
        clips.append(pd.DataFrame({"file": [prefix + n for n in names], column: value}))
        events.append(table.assign(file=prefix + table["name"])[["file", "onset", "offset", "label"]])
    clips_table, events_table = pd.concat(clips, ignore_index=True), pd.concat(events, ignore_index=True)
    if clips_table.empty:
        raise EvarError(f"{root}: the split JSONs list no files")
    evaluation = meta.get("evaluation") or []
    metric = evaluation[0] if evaluation and evaluation[0] in EVENT_METRICS else DEFAULT_METRIC
    if unit_sec is None:
        duration = meta.get("sample_duration")
        present = clips_table["file"][[(root / f).is_file() for f in clips_table["file"]]]
        unit_sec = float(duration) if duration else _mean_duration(root, present) if len(present) else 1.0
    if not unit_sec > 0:
        raise EvarError(f"unit_sec must be positive, got {unit_sec}")
    n_classes = len(pd.read_csv(root / "labelvocabulary.csv")) if (root / "labelvocabulary.csv").is_file() else None
    kfold = meta["split_mode"] in KFOLD_MODES
    spec = TaskSpec(name, float(unit_sec), n_classes, len(groups) if kfold else 0, True,
                    description=f"HEAR {meta['task_name']} (event, {meta['split_mode']}, {metric})",
                    source=str(root.resolve()))
    return save_event_task(spec, root, clips_table, events_table, on_error, metric)
