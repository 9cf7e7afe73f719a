"""Speech Commands (Warden 2018): V2 (``spcv2``, 105,829 one-second words, 35 classes) and V1 (``spcv1``, 64,721
words, 30 classes), each with its official lists.

Official layout (``speech_commands_v0.02.tar.gz`` or ``_v0.01`` extracted into one folder)::

    <word>/<speaker hash>_nohash_<n>.wav     35 word folders
    _background_noise_/*.wav                  not a class (EVAR's ``[a-z]*`` glob skips it)
    validation_list.txt, testing_list.txt     one ``<word>/<file>.wav`` per line

EVAR (``convert_spc_metadata``): every ``[a-z]*/*.wav`` is a clip labelled by its folder; listed files are
valid/test, the rest train (V1: 6,798 valid, 6,835 test; V2: 9,981 and 11,005).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from evar.errors import EvarError
from evar.tasks import DownloadSpec, RemoteFile, register_task, require_files

SPLIT_LISTS = {"valid": "validation_list.txt", "test": "testing_list.txt"}


def _wav_files(root: Path) -> list[str]:
    """``word/file.wav`` for every word folder (name starting with a-z), one directory scan each."""
    files = []
    with os.scandir(root) as top:
        words = sorted(e.name for e in top if "a" <= e.name[:1] <= "z" and e.is_dir())
    for word in words:
        with os.scandir(root / word) as entries:
            files.extend(f"{word}/{e.name}" for e in entries if e.name.endswith(".wav") and e.is_file())
    return sorted(files)


def _read_list(path: Path) -> list[str]:
    entries = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    bad = [e for e in entries if e.count("/") != 1 or not e.endswith(".wav")]
    if bad:
        raise EvarError(f"{path}: expected lines like 'right/bb05582b_nohash_3.wav', found {bad[0]!r}")
    return entries


#: where the official files are and which folder `evar prepare` reads
DOWNLOAD = DownloadSpec(
    root="speech_commands_v0.02",
    archives=(RemoteFile("http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
                         "speech_commands_v0.02.tar.gz", size=2428923189,
                         sha256="af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
                         into="speech_commands_v0.02"),),
    checksums="size and sha256 from TensorFlow Datasets (url_checksums/speech_commands.txt)",
)


@register_task("spcv2", unit_sec=1.0, n_classes=35, description="spoken words (Speech Commands V2)",
               source="https://arxiv.org/abs/1804.03209",
               title="SPCV2", group="NOSS", download=DOWNLOAD)
def prepare_spcv2(root: Path) -> pd.DataFrame:
    """Rows for every word clip; split from the official lists (listed files missing on disk are kept,
    so the file check reports them instead of losing them silently)."""
    return _speech_commands(root, "speech_commands_v0.02")


DOWNLOAD_V1 = DownloadSpec(
    root="speech_commands_v0.01",
    archives=(RemoteFile("http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
                         "speech_commands_v0.01.tar.gz", into="speech_commands_v0.01"),),
    checksums="none: no checksum of v0.01 is published where evar could read it; prepare checks the lists",
)


@register_task("spcv1", unit_sec=1.0, n_classes=30, description="spoken words (Speech Commands V1)",
               source="https://arxiv.org/abs/1804.03209", title="SPCV1", group="NOSS", download=DOWNLOAD_V1)
def prepare_spcv1(root: Path) -> pd.DataFrame:
    """As spcv2, on the V1 release (30 words)."""
    return _speech_commands(root, "speech_commands_v0.01")


def _speech_commands(root: Path, folder: str) -> pd.DataFrame:
    require_files(root, *SPLIT_LISTS.values(), hint=f"point --root at the extracted {folder} folder")
    split_of: dict[str, str] = {}
    for split, name in SPLIT_LISTS.items():
        for entry in _read_list(root / name):
            if split_of.get(entry, split) != split:
                raise EvarError(f"{root}: {entry} is in both {SPLIT_LISTS['valid']} and {SPLIT_LISTS['test']}")
            split_of[entry] = split
    files = _wav_files(root)
    if not files:
        raise EvarError(f"{root}: no <word>/*.wav files found; point --root at the extracted {folder} folder")
    on_disk = set(files)
    files += sorted(e for e in split_of if e not in on_disk)
    return pd.DataFrame({
        "file": files,
        "label": [f.split("/", 1)[0] for f in files],
        "split": [split_of.get(f, "train") for f in files],
    })
