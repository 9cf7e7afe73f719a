"""AudioCaps (Kim et al., NAACL 2019): 10-s AudioSet clips with human captions, for audio↔text retrieval.

Official layout: the caption lists of github.com/cdjkim/audiocaps (``dataset/val.csv``, ``dataset/test.csv``,
columns ``audiocap_id,youtube_id,start_time,caption``; one row per caption, five per val/test clip) in the
``--root`` folder, and the clips, which are on YouTube only, as WAV files anywhere under it named as ACT's download
tool names them (``Y<youtube_id>....wav``, EVAR's reading) or ``<youtube_id>.wav``.

EVAR (``audiocaps`` in make_metadata.py, read by ``retr_a2t_t2a.py``): val → valid, test → test, each clip with
all its captions; clips that could not be downloaded are left out (EVAR's test set has 957 of 975). Retrieval reads
only these two splits, so train is not prepared. Unit 10 s.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evar.errors import EvarError
from evar.log import log
from evar.tasks import DownloadSpec, register_task, require_files

#: evar's split -> the caption list's name
SPLITS = {"valid": "val", "test": "test"}
YOUTUBE_ID = 11
DOWNLOAD = DownloadSpec(
    root="audiocaps",
    manual="put val.csv and test.csv of https://github.com/cdjkim/audiocaps (dataset/) into D and the clips, "
           "fetched from YouTube (e.g. with https://github.com/XinhaoMei/ACT's download script), under D; then: "
           "evar prepare audiocaps --root D",
)


@register_task("audiocaps", unit_sec=10.0, kind="captions", description="audio-text retrieval (AudioCaps)",
               source="https://github.com/cdjkim/audiocaps", title="AudioCaps", download=DOWNLOAD)
def prepare_audiocaps(root: Path) -> pd.DataFrame:
    """One row per val and test clip found under ``root``, with all its captions."""
    require_files(root, *(f"{name}.csv" for name in SPLITS.values()),
                  hint="copy val.csv and test.csv from the audiocaps repository's dataset/ folder into --root")
    file_of = _clips_by_id(root)
    frames = []
    for split, name in SPLITS.items():
        path = root / f"{name}.csv"
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if not {"youtube_id", "caption"} <= set(table.columns):
            raise EvarError(f"{path}: expected columns audiocap_id,youtube_id,start_time,caption")
        captions = table.groupby("youtube_id", sort=True)["caption"].apply(list)
        found = captions[captions.index.isin(list(file_of))]
        if len(found) < len(captions):
            log.warning("audiocaps %s: %d of %d clips have no audio under %s and are left out", split,
                        len(captions) - len(found), len(captions), root)
        frames.append(pd.DataFrame({"file": [file_of[i] for i in found.index], "label": "",
                                    "captions": list(found), "split": split}))
    return pd.concat(frames, ignore_index=True)


def _clips_by_id(root: Path) -> dict[str, str]:
    """YouTube id -> WAV file (relative to ``root``) for every clip under it."""
    files = {}
    for path in sorted(root.rglob("*.wav")):
        stem = path.stem
        key = stem[1:1 + YOUTUBE_ID] if stem.startswith("Y") and len(stem) > YOUTUBE_ID else stem[:YOUTUBE_ID]
        files.setdefault(key, path.relative_to(root).as_posix())
    return files
