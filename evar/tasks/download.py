"""Benchmark datasets from their official sources: verified, resumable downloads and safe extraction.

``download_task(name, to)`` fetches what task ``name`` needs into the folder ``to`` and returns the
folder to pass to ``evar prepare <name> --root``. Archives are downloaded into ``to/_archives``
(resumable ``.part`` files, checked against the published checksum where one exists), extracted into
a temporary folder with every entry checked (no absolute paths, no ``..``, no links leaving the
target, no device files), then moved into place; a marker file records each finished archive so a
second run does nothing. Datasets behind a registration (VoxCeleb1) raise an error listing the steps.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.parse
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from evar.errors import EvarError
from evar.encoders.weights import download

#: Folder (inside the download folder) that holds the downloaded archives and the extraction markers
ARCHIVE_DIR = "_archives"


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch; ``size``/``sha256``/``md5`` only where a reliable source publishes them."""

    url: str
    filename: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    into: str = "."  # archives: folder (relative to the download folder) receiving the top-level entries


@dataclass(frozen=True)
class DownloadSpec:
    """How to obtain a task's data and which folder ``evar prepare`` then reads."""

    task: str
    root: str  # relative to the download folder: the --root for `evar prepare`
    source: str  # the dataset's home page
    archives: tuple[RemoteFile, ...] = ()
    file_list: RemoteFile | None = None  # a list of URLs, one per line: ``url [size sha256]``
    list_into: str = ""  # folder (relative to the download folder) receiving the listed files
    list_suffix: str = ""  # keep only listed URLs ending with this
    list_archives: bool = False  # listed files are archives, each extracted into ``list_into``
    checksums: str = ""  # where the checksums come from, or why there are none
    manual: str = ""  # steps to follow by hand when evar cannot download the data


_NSYNTH = "http://download.magenta.tensorflow.org/datasets/nsynth/nsynth-{}.jsonwav.tar.gz"

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

AUDIOSET_STEPS = (
    "AudioSet is published as segment lists, not audio, so evar cannot download the clips. Steps: "
    "(1) download the lists balanced_train_segments.csv, eval_segments.csv (and unbalanced_train_segments.csv "
    "for `as`) from http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/ into one folder, e.g. as/; "
    "(2) fetch the clips you can still get with a tool of your choice, as .wav files named from their 11-character "
    "YouTube id (e.g. --PJHxphWEs_30000.wav), into as/balanced_train_segments/, as/eval_segments/ "
    "(as/unbalanced_train_segments/); "
    "(3) run: evar prepare as20k --root as   (or: evar prepare as --root as)"
)

#: Per-task download specifications (other modules may import this table)
DOWNLOADS: dict[str, DownloadSpec] = {
    "esc50": DownloadSpec(
        "esc50", root="ESC-50-master", source="https://github.com/karolpiczak/ESC-50",
        archives=(RemoteFile("https://github.com/karolpiczak/ESC-50/archive/master.zip", "ESC-50-master.zip"),),
        checksums="none: GitHub builds master.zip from the current branch, so its bytes have no fixed checksum",
    ),
    "us8k": DownloadSpec(
        "us8k", root="UrbanSound8K", source="https://urbansounddataset.weebly.com/urbansound8k.html",
        archives=(RemoteFile("https://zenodo.org/records/1203745/files/UrbanSound8K.tar.gz", "UrbanSound8K.tar.gz",
                             md5="9aa69802bbf37fb986f71ec1483a196e"),),
        checksums="md5 of Zenodo record 1203745 as given by soundata's urbansound8k loader; no sha256 published",
    ),
    "spcv2": DownloadSpec(
        "spcv2", root="speech_commands_v0.02", source="https://arxiv.org/abs/1804.03209",
        archives=(RemoteFile("http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
                             "speech_commands_v0.02.tar.gz", size=2428923189,
                             sha256="af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
                             into="speech_commands_v0.02"),),
        checksums="size and sha256 from TensorFlow Datasets (url_checksums/speech_commands.txt)",
    ),
    "nsynth": DownloadSpec(
        "nsynth", root="nsynth", source="https://magenta.tensorflow.org/datasets/nsynth",
        archives=tuple(RemoteFile(_NSYNTH.format(split), f"nsynth-{split}.jsonwav.tar.gz", md5=md5, into="nsynth")
                       for split, md5 in (("test", "5e6f8719bf7e16ad0a00d518b78af77d"),
                                          ("valid", "87e94a00a19b6dbc99cf6d4c0c0cae87"),
                                          ("train", "fde6665a93865503ba598b9fac388660"))),
        checksums="md5 from the HEAR benchmark's preprocessing (hear-preprocess nsynth_pitch.py); no sha256 published",
    ),
    "cremad": DownloadSpec(
        "cremad", root="CREMA-D", source="https://github.com/CheyneyComputerScience/CREMA-D",
        file_list=RemoteFile("https://storage.googleapis.com/tfds-data/manual_checksums/crema_d.txt", "crema_d.txt",
                             size=1339905,
                             sha256="66b5d959dcee997321baf9080c80022a6937279419446db3a9d4827d839b0abb"),
        list_into="CREMA-D/AudioWAV", list_suffix=".wav",
        checksums="the wav files one by one from the repository's Git LFS storage (media.githubusercontent.com), "
                  "each checked against the sha256 in TensorFlow Datasets' CREMA-D list (the list's own sha256 "
                  "from TFDS url_checksums/crema_d.txt); EVAR downloads the same list",
    ),
    "voxforge": DownloadSpec(
        "voxforge", root="voxforge", source="http://www.voxforge.org/",
        file_list=RemoteFile("https://storage.googleapis.com/tfds-data/downloads/voxforge/voxforge_urls.txt",
                             "voxforge_urls.txt", size=1344189,
                             sha256="9cc218a5bce16640dc4eeb263aa423ce63ca59fc6587a9487dc397642b76af6c"),
        list_into="voxforge", list_archives=True,
        checksums="the URL list (TFDS, sha256 from url_checksums/voxforge.txt) as EVAR uses it; the ~13,800 "
                  "speaker archives it names have no published checksums",
    ),
    "gtzan": DownloadSpec(
        "gtzan", root="genres", source="http://marsyas.info/downloads/datasets.html",
        archives=(RemoteFile("https://huggingface.co/datasets/marsyas/gtzan/resolve/main/data/genres.tar.gz",
                             "genres.tar.gz"),),
        checksums="none for this mirror (the Hugging Face marsyas/gtzan copy, which SpeechBrain's GTZAN recipe also "
                  "uses); the original http://opihi.cs.uvic.ca/sound/genres.tar.gz (1,225,571,541 bytes, sha256 "
                  "24347e0223d2ba798e0a558c4c172d9d4a19c00bb7963fe055d183dadb4ef2c6 per TFDS) is usually offline",
    ),
    "surge": DownloadSpec(
        "surge", root="surge", source="https://zenodo.org/records/4677097",
        archives=(RemoteFile("https://zenodo.org/records/4677097/files/surge-velocity64-2K.tar",
                             "surge-velocity64-2K.tar"),),
        checksums="none known from a reliable source (Zenodo shows an md5 on the record page)",
    ),
    "vc1": DownloadSpec("vc1", root="vc1", source="https://www.robots.ox.ac.uk/~vgg/data/voxceleb/vox1.html",
                        manual=VC1_STEPS),
    **{name: DownloadSpec(name, root="as", source="https://research.google.com/audioset/", manual=AUDIOSET_STEPS)
       for name in ("as20k", "as")},
}


def get_download_spec(name: str) -> DownloadSpec:
    """The download spec of task ``name``; a clear error for tasks without one."""
    if name not in DOWNLOADS:
        raise EvarError(f"no download for task {name!r}; downloadable: {', '.join(sorted(DOWNLOADS))} "
                        "(custom tasks use files you already have)")
    return DOWNLOADS[name]


def download_task(name: str, to: str | Path, progress: bool = True, keep_archives: bool = False,
                  workers: int = 8) -> Path:
    """Download and extract task ``name`` into ``to``; return the folder for ``evar prepare --root``.

    Interrupted runs resume (partial ``.part`` files, finished archives are not fetched again).
    Archives are deleted once extracted unless ``keep_archives``.
    """
    spec = get_download_spec(name)
    if spec.manual:
        raise EvarError(spec.manual)
    to = Path(to).expanduser()
    to.mkdir(parents=True, exist_ok=True)
    for remote in spec.archives:
        _fetch_and_extract(remote, to, to / ARCHIVE_DIR, progress, keep_archives)
    if spec.file_list is not None:
        _fetch_listed(spec, to, progress, keep_archives, workers)
    root = to / spec.root
    if not root.is_dir():
        found = sorted(p.name for p in to.iterdir() if not p.name.startswith((".", ARCHIVE_DIR)))
        raise EvarError(f"{name}: expected {root} after extraction but found only {found} in {to}; "
                        "pass the folder that holds the dataset to evar prepare")
    return root


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_file(remote: RemoteFile, dest: Path, progress: bool = True) -> Path:
    """Download ``remote`` to ``dest`` (resumable, sha256 checked by evar.encoders.weights.download), then check md5."""
    path = download(remote.url, dest, remote.sha256, progress=progress,
                    manual=f"download {remote.url} yourself into {dest.parent} (evar download resumes from it)")
    if remote.md5 is not None:
        got = _md5(path)
        if got != remote.md5:
            path.unlink()
            raise EvarError(f"{remote.url}: md5 mismatch (expected {remote.md5}, got {got}); the file was removed, "
                            "run again to download it anew")
    return path


def _fetch_and_extract(remote: RemoteFile, to: Path, archive_dir: Path, progress: bool, keep: bool) -> None:
    marker = archive_dir / f"{remote.filename}.extracted"
    if marker.is_file():
        return
    archive = fetch_file(remote, archive_dir / remote.filename, progress)
    extract_archive(archive, to / remote.into)
    marker.write_text(remote.url + "\n")
    if not keep:
        archive.unlink()


def _parse_list(path: Path, suffix: str) -> list[RemoteFile]:
    """Lines ``url [size [sha256]]`` (TFDS checksum lists; bare ``host/path`` URLs get ``http://``)."""
    remotes, names = [], set()
    for line in path.read_text().splitlines():
        fields = line.strip().replace('"', "").replace("'", "").split()
        if not fields:
            continue
        url = fields[0] if "://" in fields[0] else "http://" + fields[0]
        if suffix and not url.endswith(suffix):
            continue
        filename = posixpath.basename(urllib.parse.urlparse(url).path)
        if filename in ("", ".", "..") or filename in names:
            raise EvarError(f"{path}: unusable or repeated file name in {url!r}")
        names.add(filename)
        size = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
        sha256 = fields[2].lower() if len(fields) > 2 and re.fullmatch(r"[0-9a-fA-F]{64}", fields[2]) else None
        remotes.append(RemoteFile(url, filename, size=size, sha256=sha256))
    if not remotes:
        raise EvarError(f"{path}: no {suffix or 'file'} URLs in the list")
    return remotes


def _fetch_listed(spec: DownloadSpec, to: Path, progress: bool, keep: bool, workers: int) -> None:
    """Fetch every file named in ``spec.file_list`` in parallel; report all failures at the end."""
    from tqdm import tqdm

    list_path = fetch_file(spec.file_list, to / ARCHIVE_DIR / spec.file_list.filename, progress)
    remotes = _parse_list(list_path, spec.list_suffix)
    dest = to / spec.list_into
    dest.mkdir(parents=True, exist_ok=True)
    archive_dir = to / ARCHIVE_DIR / spec.task

    def fetch_one(remote: RemoteFile) -> str | None:
        try:
            if spec.list_archives:
                _fetch_and_extract(RemoteFile(remote.url, remote.filename, remote.size, remote.sha256,
                                              into=spec.list_into), to, archive_dir, False, keep)
            else:
                fetch_file(remote, dest / remote.filename, progress=False)
        except EvarError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        errors = [e for e in tqdm(pool.map(fetch_one, remotes), total=len(remotes), unit="file",
                                  desc=spec.task, disable=not progress) if e]
    if errors:
        raise EvarError(f"{spec.task}: {len(errors)} of {len(remotes)} files failed (first: {errors[0]}); "
                        "run again to resume")


def _member_path(name: str, archive: Path) -> PurePosixPath | None:
    """The safe relative path of an archive entry; None for entries to skip (``./``, macOS ``._*`` files)."""
    norm = name.replace("\\", "/")
    parts = [p for p in PurePosixPath(norm).parts if p not in ("", ".")]
    if norm.startswith("/") or re.match(r"[A-Za-z]:", norm) or ".." in parts:
        raise EvarError(f"{archive}: refusing to extract {name!r}: absolute path or '..' would leave the target folder")
    if not parts or "__MACOSX" in parts or parts[-1].startswith("._"):
        return None
    return PurePosixPath(*parts)


def _escapes(link: str, base: PurePosixPath) -> bool:
    """Whether link target ``link``, read relative to folder ``base``, leaves the extraction folder."""
    if link.startswith("/") or re.match(r"[A-Za-z]:", link):
        return True
    resolved = posixpath.normpath(posixpath.join(str(base), link.replace("\\", "/")))
    return resolved == ".." or resolved.startswith("../")


def _extract_tar(archive: Path, target: Path) -> None:
    data_filter = getattr(tarfile, "data_filter", None)  # Python >= 3.11.4 / 3.12: a second line of defence
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:  # one pass, in archive order: works for multi-GB compressed archives
            rel = _member_path(member.name, archive)
            if rel is None:
                continue
            if member.issym() and _escapes(member.linkname, rel.parent):
                raise EvarError(f"{archive}: refusing symlink {member.name} -> {member.linkname}: it points outside "
                                "the target folder")
            if member.islnk():
                if _escapes(member.linkname, PurePosixPath(".")):
                    raise EvarError(f"{archive}: refusing hard link {member.name} -> {member.linkname}: it points "
                                    "outside the target folder")
                linked = _member_path(member.linkname, archive)
                member.linkname = str(linked) if linked is not None else member.linkname
            elif not (member.isfile() or member.isdir() or member.issym()):
                raise EvarError(f"{archive}: refusing {member.name}: device or FIFO entries are not extracted")
            member.name = str(rel)
            if data_filter is not None:
                tar.extract(member, target, filter=data_filter)
            else:
                tar.extract(member, target, set_attrs=False)


def _extract_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            rel = _member_path(info.filename, archive)
            if rel is None:
                continue
            out = target / rel
            if stat.S_ISLNK(info.external_attr >> 16):
                link = zf.read(info).decode("utf-8", "replace")
                if _escapes(link, rel.parent):
                    raise EvarError(f"{archive}: refusing symlink {info.filename} -> {link}: it points outside the "
                                    "target folder")
                out.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(link, out)
            elif info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)


def extract_archive(archive: str | Path, dest: str | Path) -> list[Path]:
    """Safely extract a zip or tar (any compression) into ``dest``; return the top-level entries created.

    Extraction goes to a temporary folder inside ``dest``; its entries are renamed into ``dest`` only
    when the whole archive is extracted, and never over an existing entry.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        try:
            if zipfile.is_zipfile(archive):
                _extract_zip(archive, tmp)
            elif tarfile.is_tarfile(archive):
                _extract_tar(archive, tmp)
            else:
                raise EvarError(f"{archive}: not a zip or tar archive")
        except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise EvarError(f"{archive}: cannot extract ({exc}); if the download is damaged, delete it and "
                            "run again") from exc
        except OSError as exc:
            raise EvarError(f"{archive}: cannot extract into {dest} ({exc})") from exc
        entries = sorted(tmp.iterdir())
        clashes = [str(dest / e.name) for e in entries if os.path.lexists(dest / e.name)]
        if clashes:
            raise EvarError(f"{clashes[0]} already exists; move it away (left by an interrupted run?) and run again")
        for entry in entries:
            os.replace(entry, dest / entry.name)
        return [dest / e.name for e in entries]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def describe_downloads() -> str:
    """One paragraph per task: URLs, checksums and the folder to prepare (for `evar download --list`)."""
    lines = []
    for name, spec in sorted(DOWNLOADS.items()):
        if spec.manual:
            lines.append(f"{name}: manual download ({spec.source})")
            continue
        files = list(spec.archives) + ([spec.file_list] if spec.file_list else [])
        urls = ", ".join(f.url for f in files)
        lines.append(f"{name}: {urls} -> prepare --root <to>/{spec.root}; checksums: {spec.checksums}")
    return "\n".join(lines)

