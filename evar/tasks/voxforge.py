"""VoxForge language identification (MacLean 2018, as in TFDS and NOSS): 6 languages, EVAR's split.

Layout: the VoxForge archives listed by TFDS (``voxforge_urls.txt``), each extracted into ``--root`` as EVAR's
``evar/utils/download_voxforge.py`` does (an archive unpacks to ``<archive>/wav/*.wav``, ``<archive>/etc/...``).

EVAR does not derive its split from code: it drew 70 % / 15 % / 15 % of the 13,837 archive folders at random
and publishes the outcome only as ``evar/metadata/voxforge.csv`` in github.com/nttcslab/eval-audio-repr
(176,428 clips; EVAR reads its ``file_name``, ``label`` and ``split`` columns). evar reads that exact file,
checked against its git blob id, from ``tasks/voxforge/`` or from ``--root``; ``file_name`` is relative to
``--root``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

import pandas as pd

from evar.errors import EvarError
from evar.paths import task_data_dir
from evar.tasks import DownloadSpec, RemoteFile, register_task

EVAR_METADATA = "https://github.com/nttcslab/eval-audio-repr/blob/main/evar/metadata/voxforge.csv"
#: git blob id of EVAR's voxforge.csv (unchanged since its first commit 0a546e6, 2022-03-15)
EVAR_BLOB_SHA1 = "24104f97e3f9b5f412cef59ab31fa8c07f0bcbf9"
CANDIDATES = ("voxforge.csv.gz", "voxforge.csv")


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a file with these bytes (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def metadata_file(root: Path) -> Path:
    """The first of ``tasks/voxforge/voxforge.csv[.gz]`` and ``<root>/voxforge.csv[.gz]`` that exists."""
    places = [task_data_dir() / "voxforge" / name for name in CANDIDATES] + [root / name for name in CANDIDATES]
    for path in places:
        if path.is_file():
            return path
    raise EvarError(f"VoxForge split list not found (looked for {places[1]} and {places[3]}); EVAR publishes "
                    f"its split only as a file: download {EVAR_METADATA} into --root (or tasks/voxforge/)")


def read_metadata(root: Path) -> pd.DataFrame:
    """EVAR's metadata table, after checking the file is EVAR's, byte for byte."""
    path = metadata_file(root)
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    if git_blob_sha1(data) != EVAR_BLOB_SHA1:
        raise EvarError(f"{path}: not EVAR's voxforge.csv (git blob {git_blob_sha1(data)[:12]}, expected "
                        f"{EVAR_BLOB_SHA1[:12]}); download it unchanged from {EVAR_METADATA}")
    meta = pd.read_csv(io.BytesIO(data), dtype=str)
    missing = [c for c in ("file_name", "label", "split") if c not in meta.columns]
    if missing:
        raise EvarError(f"{path}: missing column(s) {missing}; expected file_name, label, split")
    return meta


#: where the official files are and which folder `evar prepare` reads
DOWNLOAD = DownloadSpec(
    root="voxforge",
    file_list=RemoteFile("https://storage.googleapis.com/tfds-data/downloads/voxforge/voxforge_urls.txt",
                         "voxforge_urls.txt", size=1344189,
                         sha256="9cc218a5bce16640dc4eeb263aa423ce63ca59fc6587a9487dc397642b76af6c"),
    list_into="voxforge", list_archives=True,
    checksums="the URL list (TFDS, sha256 from url_checksums/voxforge.txt) as EVAR uses it; the ~13,800 "
              "speaker archives it names have no published checksums",
)


@register_task("voxforge", unit_sec=5.8, n_classes=6, description="spoken language identification",
               source="http://www.voxforge.org/",
               title="VF", group="NOSS", download=DOWNLOAD)
def prepare_voxforge(root: Path) -> pd.DataFrame:
    """Rows of EVAR's ``voxforge.csv``: ``file_name`` under ``--root``, language label, split."""
    meta = read_metadata(root)
    return pd.DataFrame({"file": meta["file_name"], "label": meta["label"], "split": meta["split"]})
