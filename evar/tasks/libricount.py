"""LibriCount (Stöter et al., ICASSP 2018): 5,720 five-second LibriSpeech mixtures of 0–10 speakers; speaker count
as 11 classes, HEAR 2021's five folds (also X-ARES's ``libricount_fold00``–``04``).

Official layout (Zenodo record 1216072, ``LibriCount10-0dB.zip`` extracted into a folder)::

    test/<count>_<id>.wav   (with a <count>_<id>.json of the speakers beside each)

HEAR (hear-preprocess 610d864, ``hearsecrettasks/libricount.py`` and ``pipeline.split_k_folds``): label = the file
name before the first ``_``; folds from the sorted file stems shuffled by ``random.Random("split_k_folds")`` and cut
into five near-equal parts (``numpy.array_split``); when a fold lacks a class the next seed,
``split_k_folds_retry_<i>``, is tried. Unit 5 s.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd

from evar.errors import EvarError
from evar.tasks import DownloadSpec, RemoteFile, register_task, require_files

FOLDS = 5
#: HEAR's fold seeds, tried in order until every fold has every class
SEEDS = ["split_k_folds", *(f"split_k_folds_retry_{i}" for i in range(999))]
DOWNLOAD = DownloadSpec(
    root="LibriCount10-0dB",
    archives=(RemoteFile("https://zenodo.org/record/1216072/files/LibriCount10-0dB.zip?download=1",
                         "LibriCount10-0dB.zip", md5="30c8f844dc59fa65d216d53db9dc37e2", into="LibriCount10-0dB"),),
    checksums="md5 from the HEAR benchmark's preprocessing (hear-preprocess libricount.py); no sha256 published",
)


@register_task("libricount", unit_sec=5.0, n_classes=11, folds=FOLDS, description="speaker count, 0-10 (LibriCount)",
               source="https://zenodo.org/record/1216072", title="LibriCount", group="NOSS", download=DOWNLOAD)
def prepare_libricount(root: Path) -> pd.DataFrame:
    """Every clip under ``test/``, its speaker count, HEAR's fold."""
    require_files(root, "test", hint="point --root at the folder LibriCount10-0dB.zip was extracted into")
    files = sorted(root.joinpath("test").rglob("*.wav"))
    if not files:
        raise EvarError(f"{root / 'test'}: no .wav files")
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        raise EvarError(f"{root / 'test'}: file names repeat in sub-folders (HEAR's folds need unique names)")
    labels = [stem.split("_")[0] for stem in stems]
    bad = [f.name for f, label in zip(files, labels) if not label.isdigit()]
    if bad:
        raise EvarError(f"{root / 'test'}: {len(bad)} file(s) not named <count>_<id>.wav, e.g. {bad[0]}")
    fold_of = hear_folds(stems, labels)
    return pd.DataFrame({"file": [f.relative_to(root).as_posix() for f in files], "label": labels,
                         "fold": [fold_of[s] for s in stems]})


def hear_folds(keys: list[str], labels: list[str]) -> dict[str, int]:
    """HEAR's ``split_k_folds``: key -> fold 1..5 (HEAR's fold00..fold04)."""
    label_of = dict(zip(keys, labels))
    classes = set(labels)
    for seed in SEEDS:
        shuffled = sorted(set(keys))
        random.Random(seed).shuffle(shuffled)
        fold_of = {key: j + 1 for j, part in enumerate(np.array_split(shuffled, FOLDS)) for key in part}
        if all({label_of[k] for k, f in fold_of.items() if f == j} == classes for j in range(1, FOLDS + 1)):
            return fold_of
    raise EvarError(f"libricount: no HEAR fold seed puts every class in every fold ({len(keys)} clips)")
