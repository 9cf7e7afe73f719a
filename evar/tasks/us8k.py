"""UrbanSound8K (Salamon et al. 2014): 8,732 clips of up to 4 s, 10 classes, the official 10 folds.

Official layout (the ``UrbanSound8K`` folder of ``UrbanSound8K.tar.gz``)::

    metadata/UrbanSound8K.csv   slice_file_name,fsID,start,end,salience,fold,classID,class
    audio/fold1 .. audio/fold10/*.wav
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evar.errors import EvarError
from evar.tasks import DownloadSpec, RemoteFile, register_task, require_files

US8K_COLUMNS = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
US8K_CSV = "metadata/UrbanSound8K.csv"


#: where the official files are and which folder `evar prepare` reads
DOWNLOAD = DownloadSpec(
    root="UrbanSound8K",
    archives=(RemoteFile("https://zenodo.org/records/1203745/files/UrbanSound8K.tar.gz", "UrbanSound8K.tar.gz",
                         md5="9aa69802bbf37fb986f71ec1483a196e"),),
    checksums="md5 of Zenodo record 1203745 as given by soundata's urbansound8k loader; no sha256 published",
)


@register_task("us8k", unit_sec=4.0, n_classes=10, folds=10, description="urban sounds",
               source="https://urbansounddataset.weebly.com/urbansound8k.html",
               title="US8K", group="SER", download=DOWNLOAD)
def prepare_us8k(root: Path) -> pd.DataFrame:
    """Rows from ``metadata/UrbanSound8K.csv``: ``audio/fold{fold}/{slice_file_name}``, label = ``class``."""
    require_files(root, US8K_CSV, "audio", hint="point --root at the UrbanSound8K folder")
    csv = root / US8K_CSV
    try:
        meta = pd.read_csv(csv, dtype={"slice_file_name": str, "class": str})
    except (ValueError, pd.errors.ParserError) as exc:
        raise EvarError(f"{csv}: cannot read as CSV ({exc})") from exc
    missing = [c for c in ("slice_file_name", "fold", "class") if c not in meta.columns]
    if missing:
        raise EvarError(f"{csv}: missing column(s) {missing}; expected {US8K_COLUMNS}")
    blank = meta.index[meta["slice_file_name"].isna() | meta["class"].isna() | meta["fold"].isna()]
    if len(blank):
        raise EvarError(f"{csv}: empty slice_file_name/class/fold on line(s) {[int(i) + 2 for i in blank[:5]]}")
    folds = pd.to_numeric(meta["fold"], errors="coerce")
    bad = meta.index[folds.isna() | (folds != folds.round()) | ~folds.between(1, 10)]
    if len(bad):
        raise EvarError(f"{csv}: fold must be an integer 1..10, line {int(bad[0]) + 2} has {str(meta['fold'][bad[0]])!r}")
    folds = folds.astype(int)
    return pd.DataFrame({
        "file": "audio/fold" + folds.astype(str) + "/" + meta["slice_file_name"],
        "label": meta["class"],
        "fold": folds,
    })
