"""AudioSet (Gemmeke et al. 2017): 10-s YouTube clips, 527 classes, multi-label; ``as20k`` and ``as``.

AudioSet is distributed as segment lists, not audio: you download the clips you can still get. The
layout EVAR expects (nttcslab/eval-audio-repr, ``evar/utils/make_as_metadata.py``) and evar reads::

    balanced_train_segments.csv     the official segment lists (with their 3 comment lines), from
    eval_segments.csv               http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/
    unbalanced_train_segments.csv   (``as`` only)
    balanced_train_segments/**/<YTID>*.wav    one file per segment, named from its 11-character YouTube id
    eval_segments/**/<YTID>*.wav
    unbalanced_train_segments/**/<YTID>*.wav  (``as`` only)

As in EVAR, a segment counts when a file with its YouTube id is in its list's folder; labels are the
segment's ``positive_labels`` (MIDs such as ``/m/09x0r``). ``as20k``: balanced train -> train, eval -> test;
``as``: balanced + unbalanced train -> train, eval -> test. No validation split: the probe holds out
10 % of the training clips. How many listed segments were found is printed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evar.errors import EvarError
from evar.tasks import DownloadSpec, LABEL_SEPARATOR, register_task, require_files
from evar.log import log

SEGMENT_LISTS_URL = "http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/"
YTID_LENGTH = 11


def read_segment_list(path: Path) -> pd.DataFrame:
    """An official segment list as ``ytid, labels`` (labels joined with evar's multi-label separator)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.startswith("#") or not line.strip():
                continue
            parts = line.rstrip("\n").split(", ", 3)
            if len(parts) != 4 or len(parts[0]) != YTID_LENGTH:
                raise EvarError(f"{path}:{number}: expected 'YTID, start_seconds, end_seconds, \"labels\"', "
                                f"got {line.strip()[:80]!r}")
            labels = parts[3].strip().strip('"').split(",")
            rows.append((parts[0], LABEL_SEPARATOR.join(label.strip() for label in labels if label.strip())))
    return pd.DataFrame(rows, columns=["ytid", "label"])


def _present(root: Path, subset: str, split: str) -> pd.DataFrame:
    """Rows for the listed segments of ``subset`` whose audio is in the folder of the same name."""
    listed = read_segment_list(root / f"{subset}.csv")
    files = {path.stem[:YTID_LENGTH]: path.relative_to(root).as_posix()
             for path in sorted((root / subset).rglob("*.wav"))}
    found = listed[listed["ytid"].isin(files)]
    log.info(f"{subset}: {len(found)} of {len(listed)} listed segments have audio under {root / subset}")
    return pd.DataFrame({"file": [files[y] for y in found["ytid"]], "label": found["label"].to_numpy(), "split": split})


def _prepare(root: Path, train_subsets: tuple[str, ...]) -> pd.DataFrame:
    subsets = (*train_subsets, "eval_segments")
    require_files(root, *(f"{s}.csv" for s in subsets), *subsets,
                  hint=f"put the official segment lists ({SEGMENT_LISTS_URL}) beside one folder of downloaded "
                       f"clips per list, each file named from its YouTube id")
    frames = [_present(root, subset, "train") for subset in train_subsets] + [_present(root, "eval_segments", "test")]
    meta = pd.concat(frames, ignore_index=True)
    if not (meta["split"] == "train").any() or not (meta["split"] == "test").any():
        raise EvarError(f"{root}: no training or no evaluation clips found; see the counts above")
    return meta


AUDIOSET_STEPS = (
    "AudioSet is published as segment lists, not audio, so evar cannot download the clips. Steps: "
    "(1) download the lists balanced_train_segments.csv, eval_segments.csv (and unbalanced_train_segments.csv "
    "for `as`) from http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/ into one folder, e.g. as/; "
    "(2) fetch the clips you can still get with a tool of your choice, as .wav files named from their 11-character "
    "YouTube id (e.g. --PJHxphWEs_30000.wav), into as/balanced_train_segments/, as/eval_segments/ "
    "(as/unbalanced_train_segments/); "
    "(3) run: evar prepare as20k --root as   (or: evar prepare as --root as)"
)
#: AudioSet is published as segment lists: the steps to get the clips
DOWNLOAD = DownloadSpec(root="as", manual=AUDIOSET_STEPS)


@register_task("as20k", unit_sec=10.0, n_classes=527, multilabel=True, description="AudioSet balanced train (20K)",
               source="https://research.google.com/audioset/",
               title="AS20K", download=DOWNLOAD)
def prepare_as20k(root: Path) -> pd.DataFrame:
    """Balanced train -> train, eval -> test, for the segments whose audio you have."""
    return _prepare(root, ("balanced_train_segments",))


@register_task("as", unit_sec=10.0, n_classes=527, multilabel=True, description="AudioSet (2M)",
               source="https://research.google.com/audioset/",
               title="AS2M", download=DOWNLOAD)
def prepare_as(root: Path) -> pd.DataFrame:
    """Balanced and unbalanced train -> train, eval -> test, for the segments whose audio you have."""
    return _prepare(root, ("balanced_train_segments", "unbalanced_train_segments"))
