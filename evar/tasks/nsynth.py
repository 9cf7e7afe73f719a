"""NSynth (Engel et al. 2017): 305,979 four-second notes, official splits; instrument family (``nsynth``, 11
classes), and EVAR's pitch (``nsynth_pitch``) and velocity (``nsynth_velocity``) tasks on the same notes.

Official layout (the three ``nsynth-{train,valid,test}.jsonwav.tar.gz`` extracted into one folder)::

    nsynth-train/examples.json   {note_str: {"instrument_family_str": ..., ...}, ...}
    nsynth-train/audio/<note_str>.wav
    nsynth-valid/..., nsynth-test/...

EVAR keeps every note (no pitch or quality filter): 289,205 / 12,678 / 4,096. The valid and test
splits have no ``synth_lead`` notes; the classes are the 11 families of the training split.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from evar.errors import EvarError
from evar.tasks import DownloadSpec, RemoteFile, register_task, require_files

SPLITS = ("train", "valid", "test")
LABEL_KEY = "instrument_family_str"


def _read_examples(path: Path) -> dict:
    try:
        examples = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvarError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(examples, dict):
        raise EvarError(f"{path}: expected an object mapping note names to attributes")
    return examples


_NSYNTH = "http://download.magenta.tensorflow.org/datasets/nsynth/nsynth-{}.jsonwav.tar.gz"
#: where the official files are and which folder `evar prepare` reads
DOWNLOAD = DownloadSpec(
    root="nsynth",
    archives=tuple(RemoteFile(_NSYNTH.format(split), f"nsynth-{split}.jsonwav.tar.gz", md5=md5, into="nsynth")
                   for split, md5 in (("test", "5e6f8719bf7e16ad0a00d518b78af77d"),
                                      ("valid", "87e94a00a19b6dbc99cf6d4c0c0cae87"),
                                      ("train", "fde6665a93865503ba598b9fac388660"))),
    checksums="md5 from the HEAR benchmark's preprocessing (hear-preprocess nsynth_pitch.py); no sha256 published",
)


@register_task("nsynth", unit_sec=4.0, n_classes=11, description="instrument family of musical notes",
               source="https://magenta.tensorflow.org/datasets/nsynth",
               title="NSynth", group="Music", download=DOWNLOAD)
def prepare_nsynth(root: Path) -> pd.DataFrame:
    """Rows ``nsynth-{split}/audio/{key}.wav`` for every key of each ``examples.json``, label = family."""
    return _nsynth_rows(root, LABEL_KEY)


@register_task("nsynth_pitch", unit_sec=4.0, description="MIDI pitch of musical notes (NSynth, EVAR's nspitch)",
               source="https://magenta.tensorflow.org/datasets/nsynth", title="NSynth pitch", group="Music",
               download=DOWNLOAD)
def prepare_nsynth_pitch(root: Path) -> pd.DataFrame:
    """NSynth's notes and splits, label = the MIDI pitch (EVAR's ``nspitch``: every note, no range filter)."""
    return _nsynth_rows(root, "pitch")


@register_task("nsynth_velocity", unit_sec=4.0, n_classes=5, description="MIDI velocity of musical notes (NSynth, "
               "EVAR's nsvelocity)", source="https://magenta.tensorflow.org/datasets/nsynth", title="NSynth velocity",
               group="Music", download=DOWNLOAD)
def prepare_nsynth_velocity(root: Path) -> pd.DataFrame:
    """NSynth's notes and splits, label = the MIDI velocity (25, 50, 75, 100, 127)."""
    return _nsynth_rows(root, "velocity")


def _nsynth_rows(root: Path, label_key: str) -> pd.DataFrame:
    """One row per note of each split's ``examples.json``, labelled by ``label_key``."""
    require_files(root, *(f"nsynth-{s}/examples.json" for s in SPLITS),
                  hint="extract nsynth-{train,valid,test}.jsonwav.tar.gz into one folder and point --root at it")
    frames = []
    for split in SPLITS:
        path = root / f"nsynth-{split}/examples.json"
        examples = _read_examples(path)
        labels = []
        for key, attributes in examples.items():
            label = attributes.get(label_key) if isinstance(attributes, dict) else None
            if label is None or label == "":
                raise EvarError(f"{path}: note {key!r} has no {label_key!r}")
            labels.append(str(label))
        frames.append(pd.DataFrame({"file": [f"nsynth-{split}/audio/{key}.wav" for key in examples],
                                    "label": labels, "split": split}))
    return pd.concat(frames, ignore_index=True)
