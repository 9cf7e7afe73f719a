"""Task definitions, preparation from an official layout, and loading of prepared metadata."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import soundfile as sf

from evar.audio import read_error_reason, truncation_reason
from evar.errors import EvarError

ON_ERROR_CHOICES = ("fail", "skip")
#: Separator between labels of one clip in multi-label tasks (prepared metadata and custom CSVs)
LABEL_SEPARATOR = ";"
#: a caption task's primary score: text→audio mAP@10, the DCASE language-based audio retrieval metric
CAPTION_METRIC = "t2a_mAP@10"


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch; ``size``/``sha256``/``md5`` only where a reliable source publishes them."""

    url: str
    filename: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    into: str = "."  # archives: folder (relative to the download folder) receiving the top-level entries


@dataclass(frozen=True)
class DownloadSpec:
    """How to obtain a task's data (``evar download``) and which folder ``evar prepare`` then reads."""

    root: str  # relative to the download folder: the --root for `evar prepare`
    archives: tuple[RemoteFile, ...] = ()
    file_list: RemoteFile | None = None  # a list of URLs, one per line: ``url [size sha256]``
    list_into: str = ""  # folder (relative to the download folder) receiving the listed files
    list_suffix: str = ""  # keep only listed URLs ending with this
    list_archives: bool = False  # listed files are archives, each extracted into ``list_into``
    checksums: str = ""  # where the checksums come from, or why there are none
    manual: str = ""  # steps to follow by hand when evar cannot download the data


@dataclass
class TaskSpec:
    """What defines a task under the published protocol.

    ``folds`` > 0 means cross-validation over folds 1..folds (metadata column ``fold``);
    otherwise the metadata has a ``split`` column with train/valid/test.
    """

    name: str
    unit_sec: float
    n_classes: int | None = None
    folds: int = 0
    multilabel: bool = False
    description: str = ""
    source: str = ""
    prepare: Callable[[Path], pd.DataFrame] | None = field(default=None, repr=False, compare=False)
    #: the name in tables (``ESC-50``) and the group of EVAR's papers (SER, NOSS, Music) it averages into
    title: str = ""
    group: str = ""
    #: ``scene``: one label set per clip (linear probe); ``event``: timed events (the SED probe, event metrics);
    #: ``captions``: clips with their captions (the retrieval protocol; metadata column ``captions``)
    kind: str = "scene"
    event_metric: str = ""  # an event task's primary metric (HEAR's ``evaluation[0]``)
    download: DownloadSpec | None = field(default=None, repr=False, compare=False)

    @property
    def display_title(self) -> str:
        return self.title or self.name

    @property
    def metric(self) -> str:
        if self.kind == "captions":
            return CAPTION_METRIC
        return self.event_metric or ("mAP" if self.multilabel else "accuracy")

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("prepare", "download")}


@dataclass
class Split:
    """One evaluation round: row indices into the task metadata. ``valid`` is None for CV folds."""

    name: str
    train: np.ndarray
    valid: np.ndarray | None
    test: np.ndarray


def require_files(root: Path, *relative: str, hint: str = "") -> None:
    """Raise a precise error when a file or folder of the official layout is missing."""
    for rel in relative:
        if not (root / rel).exists():
            raise EvarError(f"{root}: expected {rel} (not found){'; ' + hint if hint else ''}")


def check_audio_files(root: Path, meta: pd.DataFrame, on_error: str) -> tuple[pd.DataFrame, list[dict]]:
    """Check every row's file exists and has a readable, non-empty audio header.

    ``on_error='fail'`` raises listing the problems; ``'skip'`` drops those rows and returns them.
    """
    if on_error not in ON_ERROR_CHOICES:
        raise EvarError(f"--on-error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    problems: list[dict] = []
    keep = np.ones(len(meta), dtype=bool)
    for i, rel in enumerate(meta["file"]):
        path = root / rel
        reason = None
        if not path.is_file():
            reason = "file not found"
        else:
            try:
                info = sf.info(os.fsencode(path))  # bytes: names that are not valid UTF-8 work too
                if info.format == "RAW":  # libsndfile's guess for a header-less file (e.g. a broken .au)
                    reason = "unreadable audio (no audio header)"
                elif info.frames == 0:
                    reason = "audio is empty (0 samples)"
                else:
                    reason = truncation_reason(info)
            except Exception as exc:
                reason = f"unreadable audio ({read_error_reason(exc)})"
        if reason:
            keep[i] = False
            problems.append({"file": str(rel), "reason": reason})
    if problems and on_error == "fail":
        listed = "; ".join(f"{p['file']}: {p['reason']}" for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise EvarError(f"{len(problems)} bad row(s) under {root}: {listed}{more}; use --on-error skip to drop them")
    return meta[keep].reset_index(drop=True), problems


def _group_name(group: str, value) -> str:
    return f"fold {value}" if group == "fold" else str(value)


def check_metadata(name: str, meta: pd.DataFrame, group: str, root: Path | None = None) -> dict:
    """Check prepared rows for leakage, unseen classes and label spelling variants.

    A file listed in more than one split/fold (same path once normalised) is refused: the clip
    would be trained on and tested on. Reported instead (returned for the task info and printed by
    the caller): files with the same name and the same bytes in different splits/folds (a copy of a
    clip; checked under ``root``), classes found in evaluation rows but in no training rows, and
    labels that differ only in case or spaces; labels are never merged.
    """
    files = meta["file"].astype(str).map(lambda f: posixpath.normpath(f.replace("\\", "/")))
    pairs = pd.DataFrame({"file": files, "group": meta[group]})
    repeated = pairs[pairs.duplicated(keep=False)]  # the same file more than once in one split/fold
    if len(repeated):
        counts = repeated["file"].value_counts()
        shown = "; ".join(f"{f} ({n} rows)" for f, n in list(counts.items())[:3])
        more = f" (and {len(counts) - 3} more)" if len(counts) > 3 else ""
        raise EvarError(f"{name}: {len(counts)} file(s) listed more than once in the same {group}: {shown}{more} "
                        "(a repeated clip counts twice in training or in the score); remove the repeated rows")
    groups_of = meta.groupby(files)[group].agg(lambda v: sorted(set(v), key=str))
    leaked = groups_of[groups_of.map(len) > 1]
    if len(leaked):
        shown = "; ".join(f"{f} in {' and '.join(_group_name(group, g) for g in gs)}"
                          for f, gs in list(leaked.items())[:3])
        more = f" (and {len(leaked) - 3} more)" if len(leaked) > 3 else ""
        raise EvarError(f"{name}: {len(leaked)} file(s) listed in more than one {group} (train/test leakage): "
                        f"{shown}{more}; fix the metadata so that each file is in exactly one {group}")
    findings: dict = {}
    if root is not None and (copies := _copies_across_groups(root, files, meta[group], group)):
        findings["duplicate_audio"] = copies
    labels = meta["label"].astype(str).map(split_labels)
    per_group: dict[str, dict] = {}
    for value, labs in zip(meta[group], labels):
        for lab in labs:
            per_group.setdefault(lab, {}).setdefault(value, 0)
            per_group[lab][value] += 1
    unseen = {}
    for lab, counts in sorted(per_group.items()):
        if group == "split" and "train" not in counts:
            unseen[lab] = {g: n for g, n in counts.items()}
        elif group == "fold" and len(counts) == 1:  # when that fold is the test fold, training lacks the class
            unseen[lab] = {_group_name(group, g): n for g, n in counts.items()}
    if unseen:
        findings["unseen_classes"] = unseen
    spellings: dict[str, set[str]] = {}
    for lab in per_group:
        spellings.setdefault(" ".join(lab.split()).casefold(), set()).add(lab)
    variants = [sorted(v) for v in spellings.values() if len(v) > 1]
    if variants:
        findings["label_variants"] = {
            " / ".join(repr(v) for v in vs): {v: sum(per_group[v].values()) for v in vs} for vs in sorted(variants)}
    return findings


def _copies_across_groups(root: Path, files: pd.Series, groups: pd.Series, group: str) -> list[dict]:
    """Same-named files in different splits/folds whose bytes are identical (size first, then sha256)."""
    frame = pd.DataFrame({"file": files, "group": groups, "base": files.map(posixpath.basename)})
    frame = frame[frame.groupby("base")["group"].transform("nunique") > 1]
    if frame.empty:
        return []
    frame = frame.assign(size=[(root / f).stat().st_size if (root / f).is_file() else -1 for f in frame["file"]])
    frame = frame[(frame["size"] >= 0) & (frame.groupby(["base", "size"])["group"].transform("nunique") > 1)]
    if frame.empty:
        return []
    frame = frame.assign(sha=[hashlib.sha256((root / f).read_bytes()).hexdigest() for f in frame["file"]])
    copies = []
    for _, same in frame.groupby(["base", "sha"]):
        if same["group"].nunique() > 1:
            copies.append({"files": list(same["file"]), "in": [_group_name(group, g) for g in same["group"]]})
    return copies


def describe_findings(name: str, findings: dict) -> list[str]:
    """One warning line per finding of ``check_metadata``, saying what to do."""
    lines = []
    for copy in findings.get("duplicate_audio", []):
        lines.append(f"{name}: {' and '.join(copy['files'])} hold the same audio but are in "
                     f"{' and '.join(copy['in'])} (a clip in train and test inflates the score); remove the copy "
                     "if it is one recording")
    for lab, counts in findings.get("unseen_classes", {}).items():
        where = ", ".join(f"{n} file(s) in {g}" for g, n in counts.items())
        lines.append(f"{name}: class {lab!r} has no training clips ({where}); its clips cannot be "
                     "predicted and are left out of the score — add training clips or fix the label")
    for spelled, counts in findings.get("label_variants", {}).items():
        where = ", ".join(f"{v!r} ({n} file(s))" for v, n in counts.items())
        lines.append(f"{name}: labels {where} differ only in case or spaces; they are kept as "
                     "different classes — fix the metadata if they are one class")
    return lines


def shipped_split_table(task: str, filename: str, key: str, value: str = "split") -> dict[str, str]:
    """A ``<key>,<value>`` table shipped with evar under ``tasks/<task>/`` (see its SOURCE.md)."""
    from evar.paths import task_data_dir

    path = task_data_dir() / task / filename
    if not path.is_file():
        raise EvarError(f"{path}: {task} split table missing from the evar installation "
                        f"(tasks/{task}/ of the evar repository; see tasks/{task}/SOURCE.md)")
    table = pd.read_csv(path, dtype=str)
    return dict(zip(table[key], table[value]))


def split_labels(label: str) -> list[str]:
    return [part for part in str(label).split(LABEL_SEPARATOR) if part]


def summarise(meta: pd.DataFrame, group: str) -> dict:
    """Counts per split/fold and per class, stored with the prepared metadata."""
    exploded = meta.assign(label=meta["label"].map(split_labels)).explode("label")
    return {
        "n_files": int(len(meta)),
        f"per_{group}": {str(k): int(v) for k, v in meta[group].value_counts().sort_index().items()},
        "per_class": {str(k): int(v) for k, v in exploded["label"].value_counts().sort_index().items()},
    }


class Task:
    """A prepared task: metadata rows (file, label, split|fold) under ``root``."""

    def __init__(self, spec: TaskSpec, root: Path, meta: pd.DataFrame, info: dict | None = None) -> None:
        self.spec, self.root, self.meta, self.info = spec, Path(root), meta, info or {}
        self.group = "fold" if spec.folds else "split"
        train_rows = meta if spec.folds else meta[meta["split"] == "train"]
        self.classes = sorted({lab for label in train_rows["label"] for lab in split_labels(label)})

    @property
    def name(self) -> str:
        return self.spec.name

    def __len__(self) -> int:
        return len(self.meta)

    def paths(self) -> list[Path]:
        return [self.root / f for f in self.meta["file"]]

    def labels(self) -> np.ndarray:
        """Class indices ``(N,)``, or a multi-hot matrix ``(N, C)`` for multi-label tasks."""
        index = {c: i for i, c in enumerate(self.classes)}
        if self.spec.multilabel:
            y = np.zeros((len(self.meta), len(self.classes)), dtype=np.float32)
            for row, label in enumerate(self.meta["label"]):
                for lab in split_labels(label):
                    if lab in index:
                        y[row, index[lab]] = 1.0
            return y
        return np.array([index.get(str(label), -1) for label in self.meta["label"]], dtype=np.int64)

    def random_crop_rows(self) -> np.ndarray:
        """Rows cropped at a random offset (EVAR: train and valid); test rows start at 0.

        Cross-validation tasks use every clip as test in one fold, so all their rows start at 0.
        """
        if self.spec.folds:
            return np.zeros(len(self.meta), dtype=bool)
        return self.meta["split"].isin(["train", "valid"]).to_numpy()

    def splits(self) -> Iterator[Split]:
        """The protocol's evaluation rounds: one per fold (test = fold k), or one train/valid/test."""
        if self.spec.folds:
            folds = self.meta["fold"].astype(int).to_numpy()
            for k in range(1, self.spec.folds + 1):
                yield Split(f"fold{k}", np.flatnonzero(folds != k), None, np.flatnonzero(folds == k))
        else:
            split = self.meta["split"].to_numpy()
            valid = np.flatnonzero(split == "valid")
            yield Split("test", np.flatnonzero(split == "train"), valid if len(valid) else None, np.flatnonzero(split == "test"))

    def first_train_rows(self) -> np.ndarray:
        """Training rows of the first round (EVAR measures normalisation statistics there), or its validation rows
        when it has none (caption tasks: EVAR's retrieval calibrates on the validation split)."""
        first = next(iter(self.splits()))
        return first.train if len(first.train) or first.valid is None else first.valid

    def captions(self) -> list[list[str]]:
        """Each row's captions (caption tasks)."""
        if "captions" not in self.meta.columns:
            raise EvarError(f"{self.name} has no captions (not a caption task)")
        return [json.loads(text) for text in self.meta["captions"]]
