"""CREMA-D (Cao et al. 2014): emotion of acted sentences, 6 classes, EVAR's speaker-disjoint split.

Official layout (github.com/CheyneyComputerScience/CREMA-D)::

    AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav     e.g. AudioWAV/1001_DFA_ANG_XX.wav

EVAR's own download (the TFDS file list, every file in one folder) works too: ``--root`` may hold the
``.wav`` files directly. Label = the emotion field (ANG, DIS, FEA, HAP, NEU, SAD). EVAR drew 63 / 9 / 19 of
the 91 actors at random for train / valid / test; that draw is not reproducible from code, so its
actor-to-split table is shipped in ``tasks/cremad/speaker_splits.csv``. The four clips that TFDS leaves out
of its file list (and hence EVAR, 7,438 of the 7,442 clips) are left out here too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from evar.errors import EvarError
from evar.tasks.base import shipped_split_table
from evar.tasks import DownloadSpec, RemoteFile, register_task
from evar.log import log

N_CLIPS = 7438  # clips in EVAR's task: 7,442 in CREMA-D less EXCLUDED
EMOTIONS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
FILE_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_(" + "|".join(EMOTIONS) + r")_([A-Z]{2})\.wav$")
#: Clips absent from the TFDS crema_d list that EVAR downloads (tensorflow_datasets/audio/crema_d.py ``bad_files``)
EXCLUDED = frozenset({"1040_ITH_SAD_XX.wav", "1006_TIE_NEU_XX.wav", "1013_WSI_DIS_XX.wav", "1017_IWW_FEA_XX.wav"})


def speaker_splits() -> dict[str, str]:
    """EVAR's actor -> split table (91 actors) shipped in ``tasks/cremad/speaker_splits.csv``."""
    return shipped_split_table("cremad", "speaker_splits.csv", "speaker_id")


#: where the official files are and which folder `evar prepare` reads
DOWNLOAD = DownloadSpec(
    root="CREMA-D",
    file_list=RemoteFile("https://storage.googleapis.com/tfds-data/manual_checksums/crema_d.txt", "crema_d.txt",
                         size=1339905, sha256="66b5d959dcee997321baf9080c80022a6937279419446db3a9d4827d839b0abb"),
    list_into="CREMA-D/AudioWAV", list_suffix=".wav",
    checksums="the wav files one by one from the repository's Git LFS storage (media.githubusercontent.com), "
              "each checked against the sha256 in TensorFlow Datasets' CREMA-D list (the list's own sha256 "
              "from TFDS url_checksums/crema_d.txt); EVAR downloads the same list",
)


def actor_sex() -> dict[str, str]:
    """Each actor's sex (Male/Female) as EVAR's cremad_gender task has it (``tasks/cremad/actor_sex.csv``)."""
    return shipped_split_table("cremad", "actor_sex.csv", "speaker_id", "sex")


@register_task("cremad", unit_sec=2.5, n_classes=6, description="speech emotion (speaker-disjoint split)",
               source="https://github.com/CheyneyComputerScience/CREMA-D",
               title="CREMA-D", group="NOSS", download=DOWNLOAD)
def prepare_cremad(root: Path) -> pd.DataFrame:
    """One row per CREMA-D clip: label from the file name, split from the clip's actor."""
    return _cremad_rows(root)[["file", "label", "split"]]


@register_task("cremad_gender", unit_sec=2.5, n_classes=2, description="speaker sex of acted sentences (CREMA-D, "
               "speaker-disjoint split)", source="https://github.com/CheyneyComputerScience/CREMA-D",
               title="CREMA-D gender", group="NOSS", download=DOWNLOAD)
def prepare_cremad_gender(root: Path) -> pd.DataFrame:
    """CREMA-D's clips and split, labelled with the actor's sex (EVAR's ``cremad_gender``)."""
    rows = _cremad_rows(root)
    sex = actor_sex()
    return rows.assign(label=rows["speaker"].map(sex))[["file", "label", "split"]]


def _cremad_rows(root: Path) -> pd.DataFrame:
    """file, emotion label, split and actor of every CREMA-D clip under ``root``."""
    base = root / "AudioWAV" if (root / "AudioWAV").is_dir() else root
    prefix = "AudioWAV/" if base != root else ""
    names = sorted(p.name for p in base.glob("*.wav"))
    if not names:
        raise EvarError(f"{root}: expected CREMA-D clips AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav "
                        f"(or the .wav files directly under --root); none found")
    splits = speaker_splits()
    rows = []
    for name in names:
        match = FILE_NAME.match(name)
        if not match:
            raise EvarError(f"{base / name}: not a CREMA-D clip name (expected e.g. 1001_DFA_ANG_XX.wav)")
        if name in EXCLUDED:
            continue
        speaker = match.group(1)
        if speaker not in splits:
            raise EvarError(f"{base / name}: actor {speaker} is not one of the 91 CREMA-D actors of "
                            "tasks/cremad/speaker_splits.csv")
        rows.append((prefix + name, match.group(3), splits[speaker], speaker))
    if len(rows) != N_CLIPS:
        log.warning(f"cremad: {len(rows)} clips under {base}, the task has {N_CLIPS}")
    return pd.DataFrame(rows, columns=["file", "label", "split", "speaker"])
