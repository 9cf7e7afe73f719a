"""VocalSound (Gong et al., ICASSP 2022): 21,024 clips of 6 non-speech vocal sounds, the official speaker splits.

Official layout (the release folder, ``vocalsound_16k`` or the 44.1-kHz ``vocalsound_44k``)::

    datafiles/tr.json, val.json, te.json        {"data": [{"wav": ".../<file>.wav", "labels": "/m/01j3sz",
                                                  "spk_id": "f0003"}, ...]}   (or tr_rev.json, ...)
    class_labels_indices_vs.csv                  index,mid,display_name   (Laughter, Sigh, Cough, ...)
    audio_16k/<file>.wav  or  data_44k/<file>.wav

EVAR (``vocalsound`` in make_metadata.py): the three lists give train / valid / test, each clip named by its
``wav`` entry's file name and labelled with the display name of its ``labels`` mid. Unit 4.18 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from evar.errors import EvarError
from evar.tasks import DownloadSpec, register_task, require_files

SPLIT_FILES = {"train": "tr", "valid": "val", "test": "te"}
AUDIO_FOLDERS = ("audio_16k", "data_44k", "audio_44k")
DOWNLOAD = DownloadSpec(
    root="vocalsound_16k",
    manual="download the 16 kHz (or 44.1 kHz) release linked from https://github.com/YuanGongND/vocalsound "
           "(README, download section), extract it into D, then: evar prepare vocalsound --root D/vocalsound_16k",
)


@register_task("vocalsound", unit_sec=4.18, n_classes=6, description="non-speech vocal sounds (VocalSound)",
               source="https://github.com/YuanGongND/vocalsound", title="VocalSound", group="NOSS", download=DOWNLOAD)
def prepare_vocalsound(root: Path) -> pd.DataFrame:
    """Rows from the official lists; audio found in the release's audio folder."""
    require_files(root, "class_labels_indices_vs.csv", hint="point --root at the extracted VocalSound release folder")
    names = pd.read_csv(root / "class_labels_indices_vs.csv", dtype=str)
    if not {"mid", "display_name"} <= set(names.columns):
        raise EvarError(f"{root / 'class_labels_indices_vs.csv'}: expected columns index,mid,display_name")
    label_of = dict(zip(names["mid"], names["display_name"]))
    folder = next((f for f in AUDIO_FOLDERS if (root / f).is_dir()), None)
    if folder is None:
        raise EvarError(f"{root}: no audio folder ({' or '.join(AUDIO_FOLDERS)}) in the VocalSound release")
    rows = []
    for split, stem in SPLIT_FILES.items():
        path = next((root / "datafiles" / f"{stem}{s}.json" for s in ("", "_rev")
                     if (root / "datafiles" / f"{stem}{s}.json").is_file()), None)
        if path is None:
            raise EvarError(f"{root / 'datafiles'}: {stem}.json (or {stem}_rev.json) not found")
        for entry in _entries(path):
            if entry.get("labels") not in label_of:
                raise EvarError(f"{path}: {entry.get('wav')}: label {entry.get('labels')!r} is not in "
                                "class_labels_indices_vs.csv")
            rows.append((f"{folder}/{Path(str(entry['wav'])).name}", label_of[entry["labels"]], split))
    return pd.DataFrame(rows, columns=["file", "label", "split"])


def _entries(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise EvarError(f"{path}: not a VocalSound list ({{'data': [{{'wav', 'labels', 'spk_id'}}, ...]}}): {exc}") \
            from exc
    bad = next((e for e in data if not isinstance(e, dict) or "wav" not in e), None)
    if bad is not None:
        raise EvarError(f"{path}: entry without 'wav': {bad!r}")
    return data
