"""RAVDESS speech (Livingstone & Russo 2018): 1,440 acted sentences by 24 actors in 8 emotions, 4 actor folds.

Official layout (Zenodo record 1188976, ``Audio_Speech_Actors_01-24.zip`` extracted into a folder)::

    Actor_01/03-01-05-01-02-01-01.wav   modality-channel-emotion-intensity-statement-repetition-actor

Labels: the emotion code (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised),
named as X-ARES names its classes. Only audio-only speech files (modality 03, vocal channel 01) are read.

Folds: X-ARES evaluates RAVDESS in 4 folds whose assignment is built into its data archives (Zenodo 14722524) and
is not published as a list; evar uses 4 speaker-independent folds of six consecutive actors (1–6, 7–12, 13–18,
19–24; three women and three men each, as odd actors are male), so no actor is in training and test. Unit 4 s
(the clips last about 3–5 s).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from evar.errors import EvarError
from evar.tasks import DownloadSpec, RemoteFile, register_task

EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
            "07": "disgust", "08": "surprised"}
ACTORS_PER_FOLD = 6
NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
DOWNLOAD = DownloadSpec(
    root="RAVDESS",
    archives=(RemoteFile("https://zenodo.org/records/1188976/files/Audio_Speech_Actors_01-24.zip?download=1",
                         "Audio_Speech_Actors_01-24.zip", into="RAVDESS"),),
    checksums="none recorded: Zenodo lists an md5 on the record page, which could not be read from here",
)


@register_task("ravdess", unit_sec=4.0, n_classes=8, folds=4, description="emotion of acted speech (RAVDESS)",
               source="https://zenodo.org/records/1188976", title="RAVDESS", group="NOSS", download=DOWNLOAD)
def prepare_ravdess(root: Path) -> pd.DataFrame:
    """Every audio-only speech file under ``Actor_*/``, its emotion and the actor's fold."""
    files = sorted(root.glob("Actor_*/*.wav"))
    if not files:
        raise EvarError(f"{root}: no Actor_*/<code>.wav files; point --root at the folder "
                        "Audio_Speech_Actors_01-24.zip was extracted into")
    rows = []
    for path in files:
        match = NAME.match(path.stem)
        if match is None:
            raise EvarError(f"{path}: not a RAVDESS file name (modality-channel-emotion-intensity-statement-"
                            "repetition-actor, e.g. 03-01-05-01-02-01-01.wav)")
        modality, channel, emotion, *_rest, actor = match.groups()
        if emotion not in EMOTIONS or not 1 <= int(actor) <= 24:
            raise EvarError(f"{path}: emotion {emotion} or actor {actor} is outside RAVDESS's codes")
        if (modality, channel) == ("03", "01"):
            rows.append((path.relative_to(root).as_posix(), EMOTIONS[emotion], (int(actor) - 1) // ACTORS_PER_FOLD + 1))
    if not rows:
        raise EvarError(f"{root}: no audio-only speech files (03-01-...); the song archive is not this task")
    return pd.DataFrame(rows, columns=["file", "label", "fold"])
