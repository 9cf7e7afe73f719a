"""VoxCeleb1 speaker identification (Nagrani et al. 2017): 1,251 speakers, the official identification split.

Official layout (vox1_dev_wav.zip and vox1_test_wav.zip extracted into one folder, plus the
identification split list from the VoxCeleb1 page)::

    iden_split.txt          lines "<1|2|3> id10001/1zcIwhmdeo4/00001.wav" (1 train, 2 valid, 3 test)
    wav/id10001/1zcIwhmdeo4/00001.wav

One row per line of ``iden_split.txt`` (153,516 in the real list): ``wav/<path>``, label = speaker id.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from evar.errors import EvarError
from evar.tasks import DownloadSpec, register_task, require_files

IDEN_SPLIT_URL = "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/meta/iden_split.txt"
SPLIT_CODES = {"1": "train", "2": "valid", "3": "test"}
LINE = re.compile(r"^([123])\s+(id\d{5}/[^/\s]+/[^/\s]+\.wav)$")


VC1_STEPS = (
    "VoxCeleb1 needs registration, so evar cannot download it. Steps: "
    "(1) request access at https://www.robots.ox.ac.uk/~vgg/data/voxceleb/vox1.html and follow the download links "
    "you receive; "
    "(2) download vox1_dev_wav_partaa..partad and vox1_test_wav.zip; join the parts with "
    "`cat vox1_dev_wav_parta* > vox1_dev_wav.zip`; "
    "(3) unzip vox1_dev_wav.zip and vox1_test_wav.zip into one folder, e.g. vc1/, so that it holds "
    "wav/id10001/<video>/<clip>.wav; "
    "(4) put the official identification split https://www.robots.ox.ac.uk/~vgg/data/voxceleb/meta/iden_split.txt "
    "in the same folder; "
    "(5) run: evar prepare vc1 --root vc1"
)
#: where the official files are and which folder `evar prepare` reads
DOWNLOAD = DownloadSpec(root="vc1", manual=VC1_STEPS)


@register_task("vc1", unit_sec=8.2, n_classes=1251, description="speaker identification (VoxCeleb1)",
               source="https://www.robots.ox.ac.uk/~vgg/data/voxceleb/vox1.html",
               title="VC1", group="NOSS", download=DOWNLOAD)
def prepare_vc1(root: Path) -> pd.DataFrame:
    """Rows from ``iden_split.txt``: ``wav/<speaker>/<video>/<n>.wav``, label = speaker, split from the code."""
    require_files(root, "iden_split.txt", hint=f"download it from {IDEN_SPLIT_URL}")
    require_files(root, "wav", hint="extract vox1_dev_wav.zip and vox1_test_wav.zip into --root")
    split_file = root / "iden_split.txt"
    rows = []
    for number, line in enumerate(split_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        match = LINE.match(line.strip())
        if not match:
            raise EvarError(f"{split_file}:{number}: expected '<1|2|3> idNNNNN/<video>/<nnnnn>.wav', got {line!r}")
        code, path = match.groups()
        rows.append((f"wav/{path}", path.split("/")[0], SPLIT_CODES[code]))
    if not rows:
        raise EvarError(f"{split_file}: no entries")
    return pd.DataFrame(rows, columns=["file", "label", "split"])
