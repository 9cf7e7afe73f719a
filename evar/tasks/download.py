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
from pathlib import Path, PurePosixPath

from evar.errors import EvarError
from evar.encoders.weights import download
from evar.tasks.base import DownloadSpec, RemoteFile

#: Folder (inside the download folder) that holds the downloaded archives and the extraction markers
ARCHIVE_DIR = "_archives"


def downloadable() -> dict[str, DownloadSpec]:
    """Every registered task's download spec (the ``download=`` of its ``register_task``), by task name."""
    from evar.tasks import list_tasks

    return {spec.name: spec.download for spec in list_tasks() if spec.download is not None}


def get_download_spec(name: str) -> DownloadSpec:
    """The download spec of task ``name``; a clear error for tasks without one."""
    specs = downloadable()
    if name not in specs:
        raise EvarError(f"no download for task {name!r}; downloadable: {', '.join(sorted(specs))} "
                        "(custom tasks use files you already have)")
    return specs[name]


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
        _fetch_listed(name, spec, to, progress, keep_archives, workers)
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


def _fetch_listed(name: str, spec: DownloadSpec, to: Path, progress: bool, keep: bool, workers: int) -> None:
    """Fetch every file named in ``spec.file_list`` in parallel; report all failures at the end."""
    from tqdm import tqdm

    list_path = fetch_file(spec.file_list, to / ARCHIVE_DIR / spec.file_list.filename, progress)
    remotes = _parse_list(list_path, spec.list_suffix)
    dest = to / spec.list_into
    dest.mkdir(parents=True, exist_ok=True)
    archive_dir = to / ARCHIVE_DIR / name

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
                                  desc=name, disable=not progress) if e]
    if errors:
        raise EvarError(f"{name}: {len(errors)} of {len(remotes)} files failed (first: {errors[0]}); "
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
    from evar.tasks import get_task_spec

    for name, spec in sorted(downloadable().items()):
        if spec.manual:
            lines.append(f"{name}: manual download ({get_task_spec(name).source})")
            continue
        files = list(spec.archives) + ([spec.file_list] if spec.file_list else [])
        urls = ", ".join(f.url for f in files)
        lines.append(f"{name}: {urls} -> prepare --root <to>/{spec.root}; checksums: {spec.checksums}")
    return "\n".join(lines)

