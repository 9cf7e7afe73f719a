"""User-defined tasks from one CSV: ``file,label,split`` or ``file,label,fold``.

``file`` is relative to ``root`` (or absolute); ``split`` is train/valid/test, or ``fold`` numbers
1..K for K-fold cross-validation (test = fold k, train = the rest, as EVAR). A label holding ``;``
makes the task multi-label (``dog;bark``), scored with mAP. The prepared task is written beside the
built-in ones and is then found by ``load_task(name)`` and ``evar list``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from evar.errors import EvarError
from evar.log import log
from evar.tasks import (
    LABEL_SEPARATOR, Task, TaskSpec, check_audio_files, check_new_task_name, register_source, save_prepared,
    split_labels,
)

SPLIT_VALUES = ("train", "valid", "test")


def read_csv_table(csv: Path) -> pd.DataFrame:
    """A user's CSV as strings (empty cells stay empty), column names stripped; clear errors."""
    if not csv.is_file():
        raise EvarError(f"{csv}: CSV file not found")
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise EvarError(f"{csv}: cannot read as CSV ({exc})") from exc
    table.columns = [str(c).strip() for c in table.columns]
    return table


def _lines(mask: pd.Series) -> list[int]:
    """CSV line numbers (header = line 1) of the first rows where ``mask`` holds."""
    return [int(i) + 2 for i in np.flatnonzero(mask.to_numpy())[:5]]


def _normalise_labels(labels: pd.Series) -> pd.Series:
    """Strip spaces around each label and drop empty parts: ' dog ; bark;' -> 'dog;bark'."""
    return labels.map(lambda s: LABEL_SEPARATOR.join(p.strip() for p in s.split(LABEL_SEPARATOR) if p.strip()))


#: clips longer than this many times the median duration are outliers and left out of the default unit
OUTLIER_FACTOR = 4.0


def _default_unit_sec(root: Path, files: pd.Series) -> float:
    """Mean clip duration, rounded to 0.01 s: EVAR's unit for variable-length tasks (e.g. VC1 8.2 s).

    Clips longer than ``OUTLIER_FACTOR`` times the median are left out of the mean, with a warning naming
    them: one 10-minute recording among 2-s clips would otherwise make every clip 14 s of mostly padding."""
    durations = []
    for rel in files:
        info = sf.info(os.fsencode(root / rel))
        durations.append(info.frames / info.samplerate)
    durations = np.asarray(durations)
    outliers = durations > OUTLIER_FACTOR * np.median(durations)
    if outliers.any():
        longest = int(np.argmax(durations))
        log.warning("%d clip(s) longer than %g x the median duration (%.2f s) are left out of the default unit, "
                    "e.g. %s (%.1f s); they are cropped to the unit — pass --unit-sec to choose it yourself",
                    int(outliers.sum()), OUTLIER_FACTOR, float(np.median(durations)), files.iloc[longest],
                    durations[longest])
    return max(0.01, round(float(np.mean(durations[~outliers])), 2))


@register_source("custom", reads_csv=True)
def prepare_custom(csv: str | Path, root: str | Path, name: str, unit_sec: float | None = None,
                   on_error: str = "fail") -> Task:
    """Prepare a custom task ``name`` from ``csv`` (``file,label,split`` or ``file,label,fold``).

    ``unit_sec`` defaults to the mean clip duration (EVAR's rule for variable-length datasets; for
    equal-length clips it is their length). Files are checked like built-in tasks: ``on_error='fail'``
    stops at a missing/unreadable file, ``'skip'`` drops and reports it.
    """
    csv, root = Path(csv).expanduser(), Path(root).expanduser()
    check_new_task_name(name)
    if not root.is_dir():
        raise EvarError(f"--root {root}: not a directory")
    if unit_sec is not None and not unit_sec > 0:
        raise EvarError(f"unit_sec must be positive, got {unit_sec}")
    table = read_csv_table(csv)
    missing = [c for c in ("file", "label") if c not in table.columns]
    if missing:
        raise EvarError(f"{csv}: missing column(s) {missing}; expected file,label,split or file,label,fold")
    groups = [c for c in ("split", "fold") if c in table.columns]
    if len(groups) != 1:
        raise EvarError(f"{csv}: needs exactly one of the columns 'split' or 'fold', found "
                        f"{groups or 'neither'}")
    group = groups[0]
    if table.empty:
        raise EvarError(f"{csv}: no rows")
    table["file"] = table["file"].str.strip()
    labels = _normalise_labels(table["label"])
    for original in sorted(set(table["label"][labels != table["label"]])):
        changed = table["label"] == original
        log.warning(f"{csv}: label {original!r} on line(s) {_lines(changed)} read as "
                    f"{labels[changed].iloc[0]!r} (spaces around labels removed)")
    table["label"] = labels
    table[group] = table[group].str.strip()
    for column in ("file", "label", group):
        empty = table[column] == ""
        if empty.any():
            raise EvarError(f"{csv}: empty {column!r} on line(s) {_lines(empty)}")

    if group == "split":
        unknown = ~table["split"].isin(SPLIT_VALUES)
        if unknown.any():
            raise EvarError(f"{csv}: unknown split value(s) {sorted(set(table['split'][unknown]))[:5]} on line(s) "
                            f"{_lines(unknown)}; allowed: {', '.join(SPLIT_VALUES)}")
        for needed in ("train", "test"):
            if not (table["split"] == needed).any():
                raise EvarError(f"{csv}: no {needed!r} rows; a task needs train and test rows")
        n_folds = 0
    else:
        folds = pd.to_numeric(table["fold"], errors="coerce")
        bad = folds.isna() | (folds != folds.round()) | (folds < 1)
        if bad.any():
            raise EvarError(f"{csv}: fold must be an integer >= 1, see line(s) {_lines(bad)}")
        table["fold"] = folds.astype(int)
        present = sorted(set(table["fold"]))
        n_folds = len(present)
        if n_folds < 2 or present != list(range(1, n_folds + 1)):
            raise EvarError(f"{csv}: folds must be numbered 1..K with K >= 2 and no gaps, found {present}")

    meta = table[["file", "label", group]]
    meta, problems = check_audio_files(root, meta, on_error)
    for problem in problems:
        log.warning(f"skipped {problem['file']}: {problem['reason']}")
    if meta.empty:
        raise EvarError(f"{csv}: no usable audio files under {root}")
    if not n_folds and not {"train", "test"} <= set(meta["split"]):
        raise EvarError(f"{csv}: after skipping bad files no train or no test rows are left")
    train_rows = meta if n_folds else meta[meta["split"] == "train"]
    classes = {lab for label in train_rows["label"] for lab in split_labels(label)}
    if unit_sec is None:
        unit_sec = _default_unit_sec(root, meta["file"])
    multilabel = bool(meta["label"].str.contains(LABEL_SEPARATOR, regex=False).any())
    spec = TaskSpec(name, float(unit_sec), len(classes), n_folds, multilabel,
                    description=f"custom task from {csv.name}", source=str(csv.resolve()))
    return save_prepared(spec, root, meta, problems)
