"""Surge synthesizer pitch (Turian et al. 2021): 88 pitches of 2,084 Surge presets ("tones"), 4 s notes.

Official layout (``surge-velocity64-2K.tar`` from zenodo.org/record/4677097)::

    surge/<tone>/<note>.ogg        e.g. surge/surge-patches-factory-Leads-Triple-velocity64/<note>.ogg

``--root`` may be the ``surge`` folder or the folder holding it. Label = the note file's stem (one per MIDI
pitch), as in EVAR. EVAR splits by tone, 1,692 / 195 / 197 tones for train / valid / test, from a random
draw it ships as a table; that table is in ``tasks/surge/tone_splits.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evar.errors import EvarError
from evar.tasks.base import shipped_split_table
from evar.tasks import DownloadSpec, RemoteFile, register_task
from evar.log import log


def tone_splits() -> dict[str, str]:
    """EVAR's tone -> split table (2,084 tones) shipped in ``tasks/surge/tone_splits.csv``."""
    return shipped_split_table("surge", "tone_splits.csv", "tone")


#: where the official files are and which folder `evar prepare` reads
DOWNLOAD = DownloadSpec(
    root="surge",
    archives=(RemoteFile("https://zenodo.org/records/4677097/files/surge-velocity64-2K.tar", "surge-velocity64-2K.tar"),),
    checksums="none known from a reliable source (Zenodo shows an md5 on the record page)",
)


@register_task("surge", unit_sec=4.0, n_classes=88, description="synthesizer pitch (tone-disjoint split)",
               source="https://zenodo.org/record/4677097",
               title="Surge", group="Music", download=DOWNLOAD)
def prepare_surge(root: Path) -> pd.DataFrame:
    """One row per ``<tone>/<note>.ogg``: label = note stem, split from the tone."""
    base = root / "surge" if (root / "surge").is_dir() else root
    prefix = "surge/" if base != root else ""
    files = sorted(base.glob("*/*.ogg"))
    if not files:
        raise EvarError(f"{root}: expected Surge notes surge/<tone>/<note>.ogg (or <tone>/<note>.ogg directly "
                        f"under --root); none found; extract surge-velocity64-2K.tar")
    splits = tone_splits()
    unknown = sorted({f.parent.name for f in files} - splits.keys())
    if unknown:
        raise EvarError(f"{base / unknown[0]}: tone folder not in EVAR's Surge split table "
                        f"({len(unknown)} unknown folder(s)); is --root the extracted surge-velocity64-2K.tar?")
    absent = len(splits.keys() - {f.parent.name for f in files})
    if absent:
        log.warning(f"surge: {absent} of the {len(splits)} tones of the split table are not under {base}")
    return pd.DataFrame({"file": [f"{prefix}{f.parent.name}/{f.name}" for f in files],
                         "label": [f.stem for f in files],
                         "split": [splits[f.parent.name] for f in files]})
