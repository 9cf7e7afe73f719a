"""FSD50K (Fonseca et al. 2022): 51,197 clips of 200 AudioSet-ontology classes, multi-label, the official splits.

Official layout (Zenodo record 4060432, the split zips joined and extracted into one folder)::

    FSD50K.ground_truth/dev.csv    fname,labels,mids,split     split: train | val
    FSD50K.ground_truth/eval.csv   fname,labels,mids
    FSD50K.dev_audio/<fname>.wav   FSD50K.eval_audio/<fname>.wav

EVAR (``convert_fsd50k_multilabel``): dev ``train`` → train, ``val`` → valid, eval → test; the label set of a
clip is its ``labels`` column (comma-separated names, ancestors included). Unit 7.6358 s; metric mAP.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evar.errors import EvarError
from evar.tasks import DownloadSpec, LABEL_SEPARATOR, register_task, require_files

GROUND_TRUTH = "FSD50K.ground_truth"
DEV_SPLITS = {"train": "train", "val": "valid"}
#: the steps to get the data (its parts are split zips that need joining)
STEPS = ("Download every part of https://zenodo.org/record/4060432 (FSD50K.dev_audio.z01-z05 + .zip, "
         "FSD50K.eval_audio.z01 + .zip, FSD50K.ground_truth.zip); join each split archive (zip -s 0 "
         "FSD50K.dev_audio.zip --out dev.zip) and extract all into one folder D; then: evar prepare fsd50k --root D")
DOWNLOAD = DownloadSpec(root="FSD50K", manual=STEPS)


@register_task("fsd50k", unit_sec=7.6358, n_classes=200, multilabel=True, description="sound events, multi-label "
               "(FSD50K)", source="https://zenodo.org/record/4060432", title="FSD50K", download=DOWNLOAD)
def prepare_fsd50k(root: Path) -> pd.DataFrame:
    """One row per dev and eval clip, its label set, the official split."""
    require_files(root, f"{GROUND_TRUTH}/dev.csv", f"{GROUND_TRUTH}/eval.csv",
                  hint="extract FSD50K.ground_truth.zip and the audio zips into one folder (see `evar download fsd50k`)")
    dev = _read(root / GROUND_TRUTH / "dev.csv", ["fname", "labels", "split"])
    unknown = sorted(set(dev["split"]) - set(DEV_SPLITS))
    if unknown:
        raise EvarError(f"{root / GROUND_TRUTH / 'dev.csv'}: split must be train or val, found {unknown[:3]}")
    evaluation = _read(root / GROUND_TRUTH / "eval.csv", ["fname", "labels"])
    frames = [pd.DataFrame({"file": "FSD50K.dev_audio/" + dev["fname"] + ".wav", "label": _labels(dev["labels"]),
                            "split": dev["split"].map(DEV_SPLITS)}),
              pd.DataFrame({"file": "FSD50K.eval_audio/" + evaluation["fname"] + ".wav",
                            "label": _labels(evaluation["labels"]), "split": "test"})]
    return pd.concat(frames, ignore_index=True)


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise EvarError(f"{path}: not a readable CSV ({exc})") from exc
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise EvarError(f"{path}: missing column(s) {missing}; expected {columns}")
    empty = table[columns].isna().any(axis=1)
    if empty.any():
        raise EvarError(f"{path}: row {int(empty.idxmax()) + 2} has an empty {columns} field")
    return table


def _labels(column: pd.Series) -> pd.Series:
    """FSD50K's comma-separated label names as evar's ``;``-separated label set."""
    return column.str.split(",").map(lambda names: LABEL_SEPARATOR.join(n.strip() for n in names if n.strip()))
