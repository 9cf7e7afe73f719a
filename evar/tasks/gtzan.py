"""GTZAN genre collection (Tzanetakis & Cook 2002): 10 genres, 30 s excerpts, EVAR's fault-filtered split.

Official layout (``genres.tar.gz`` from the marsyas/opihi site)::

    genres/<genre>/<genre>.000NN.au      (--root may be the folder holding ``genres/`` or ``genres/`` itself)

The split is the artist-filtered one of Kereliuk, Sturm & Larsen (2015), as EVAR downloads it from
github.com/jongpillee/music_dataset_split ``GTZAN_split/{train,valid,test}_filtered.txt``: 443 / 197 / 290
excerpts; the other 70 excerpts of GTZAN are in no list and are not part of the task. The lists, shipped
in ``tasks/gtzan/``, name ``.wav`` files while the archive holds ``.au``: each entry is matched to the
``.wav`` file when one exists, otherwise to the ``.au`` file of the archive.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evar.errors import EvarError
from evar.paths import task_data_dir
from evar.tasks import DownloadSpec, RemoteFile, register_task

GENRES = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
SPLIT_LISTS = {"train": "train_filtered.txt", "valid": "valid_filtered.txt", "test": "test_filtered.txt"}


def read_split_lists() -> pd.DataFrame:
    """The shipped lists as rows ``entry`` (``<genre>/<genre>.000NN.wav``), ``split``."""
    rows = []
    for split, name in SPLIT_LISTS.items():
        path = task_data_dir() / "gtzan" / name
        if not path.is_file():
            raise EvarError(f"{path}: GTZAN split list missing from the evar installation "
                            f"(tasks/gtzan/ of the evar repository; see tasks/gtzan/SOURCE.md)")
        rows += [(line.strip(), split) for line in path.read_text().splitlines() if line.strip()]
    return pd.DataFrame(rows, columns=["entry", "split"])


def _audio_base(root: Path) -> Path:
    """``root/genres`` for the archive's top folder, else ``root`` itself; error when neither holds a genre."""
    for base in (root / "genres", root):
        if any((base / genre).is_dir() for genre in GENRES):
            return base
    raise EvarError(f"{root}: expected GTZAN genre folders ({', '.join(GENRES[:3])}, ...) in genres/ or "
                    f"directly under --root; point --root at the extracted genres.tar.gz")


#: where the official files are and which folder `evar prepare` reads
DOWNLOAD = DownloadSpec(
    root="genres",
    archives=(RemoteFile("https://huggingface.co/datasets/marsyas/gtzan/resolve/main/data/genres.tar.gz",
                         "genres.tar.gz"),),
    checksums="none for this mirror (the Hugging Face marsyas/gtzan copy, which SpeechBrain's GTZAN recipe also "
              "uses); the original http://opihi.cs.uvic.ca/sound/genres.tar.gz (1,225,571,541 bytes, sha256 "
              "24347e0223d2ba798e0a558c4c172d9d4a19c00bb7963fe055d183dadb4ef2c6 per TFDS) is usually offline",
)


@register_task("gtzan", unit_sec=30.0, n_classes=10, description="music genre (fault-filtered split)",
               source="http://marsyas.info/downloads/datasets.html",
               title="GTZAN", group="Music", download=DOWNLOAD)
def prepare_gtzan(root: Path) -> pd.DataFrame:
    """One row per listed excerpt: its ``.wav`` or ``.au`` file, label = genre folder, split from the lists.

    A listed excerpt missing on disk keeps a row (``.wav`` when the tree holds ``.wav`` files, else ``.au``) so
    that preparation reports it.
    """
    base = _audio_base(root)
    prefix = base.relative_to(root).as_posix()
    lists = read_split_lists()
    absent_suffix = ".wav" if next(base.glob("*/*.wav"), None) else ".au"  # how a missing file is reported
    files, labels = [], []
    for entry in lists["entry"]:
        genre, stem = entry.split("/")[0], entry.rsplit(".", 1)[0]
        name = next((f"{stem}{suffix}" for suffix in (".wav", ".au") if (base / f"{stem}{suffix}").is_file()),
                    f"{stem}{absent_suffix}")
        files.append(name if prefix == "." else f"{prefix}/{name}")
        labels.append(genre)
    return pd.DataFrame({"file": files, "label": labels, "split": lists["split"]})
