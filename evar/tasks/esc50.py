"""ESC-50 (Piczak 2015): 2,000 five-second clips, 50 classes, EVAR's 5-fold cross-validation.

Official layout (github.com/karolpiczak/ESC-50, the ``ESC-50-master`` archive)::

    meta/esc50.csv     filename,fold,target,category,esc10,src_file,take
    audio/*.wav
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evar.errors import EvarError
from evar.tasks import DownloadSpec, RemoteFile, register_task, require_files

ESC50_COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]


#: where the official files are and which folder `evar prepare` reads
DOWNLOAD = DownloadSpec(
    root="ESC-50-master",
    archives=(RemoteFile("https://github.com/karolpiczak/ESC-50/archive/master.zip", "ESC-50-master.zip"),),
    checksums="none: GitHub builds master.zip from the current branch, so its bytes have no fixed checksum",
)


@register_task("esc50", unit_sec=5.0, n_classes=50, folds=5, description="environmental sounds",
               source="https://github.com/karolpiczak/ESC-50",
               title="ESC-50", group="SER", download=DOWNLOAD)
def prepare_esc50(root: Path) -> pd.DataFrame:
    """Rows from ``meta/esc50.csv``: ``audio/<filename>``, label = ``category``, the official fold."""
    require_files(root, "meta/esc50.csv", "audio", hint="point --root at the ESC-50-master folder")
    meta = pd.read_csv(root / "meta/esc50.csv")
    missing = [c for c in ("filename", "fold", "category") if c not in meta.columns]
    if missing:
        raise EvarError(f"{root / 'meta/esc50.csv'}: missing column(s) {missing}; expected {ESC50_COLUMNS}")
    return pd.DataFrame({"file": "audio/" + meta["filename"], "label": meta["category"], "fold": meta["fold"].astype(int)})
