"""Cases 18-19: a dropped download is resumed and verified; archive entries leaving the target are refused."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from evar.tasks.download import extract_archive
from evar.errors import EvarError
from evar.encoders.weights import download
from http_server import serve

SIZE, DROP = 3_000_000, 1_500_000


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, str]:
    folder = tmp_path / "srv"
    folder.mkdir()
    data = np.random.default_rng(0).integers(0, 256, SIZE, dtype=np.uint8).tobytes()
    (folder / "big.bin").write_bytes(data)
    return folder, hashlib.sha256(data).hexdigest()


def test_18_dropped_connection_is_resumed_in_the_same_call(served, tmp_path: Path) -> None:
    folder, sha = served
    dest = tmp_path / "cache/big.bin"
    with serve(folder, drop_after={"/big.bin": DROP}) as (url, log):
        download(f"{url}/big.bin", dest, sha, progress=False)
    assert log == ["/big.bin", f"/big.bin bytes={DROP}-"]  # the second request asks only for the rest
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha
    assert not dest.with_name("big.bin.part").exists()


def test_18_interrupted_run_resumes_on_the_next_run(served, tmp_path: Path) -> None:
    folder, sha = served
    dest = tmp_path / "cache/big.bin"
    part = dest.with_name("big.bin.part")
    with serve(folder, drop_after={"/big.bin": DROP}) as (url, log):
        with pytest.raises(EvarError) as info:
            download(f"{url}/big.bin", dest, sha, progress=False, attempts=1)
        message = str(info.value)
        assert f"{url}/big.bin" in message and "run again to resume" in message and str(part) in message
        assert not dest.exists() and part.stat().st_size == DROP  # what arrived is kept, nothing at dest
        download(f"{url}/big.bin", dest, sha, progress=False)
    assert log == ["/big.bin", f"/big.bin bytes={DROP}-"]
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha and not part.exists()


def test_18_resumed_bytes_that_do_not_verify_are_discarded(served, tmp_path: Path) -> None:
    folder, sha = served
    dest = tmp_path / "cache/big.bin"
    part = dest.with_name("big.bin.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * DROP)  # a stale partial file from another version of the file
    with serve(folder) as (url, _):
        with pytest.raises(EvarError, match=f"expected {sha}, got [0-9a-f]{{64}}"):
            download(f"{url}/big.bin", dest, sha, progress=False)
        assert not part.exists() and not dest.exists()
        download(f"{url}/big.bin", dest, sha, progress=False)  # the next run starts afresh and verifies
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha


def _tar(path: Path, name: str, link: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("data/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        info = tarfile.TarInfo(name)
        if link is not None:
            info.type, info.linkname = tarfile.SYMTYPE, link
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return path


def _zip(path: Path, name: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data/ok.txt", "ok")
        zf.writestr(zipfile.ZipInfo(name), "evil")
    return path


@pytest.mark.parametrize("kind,name,link", [
    ("tar", "../evil.txt", None), ("tar", "data/../../evil.txt", None), ("tar", "/tmp/evar-fault-evil.txt", None),
    ("tar", "data/link", "../../evil.txt"), ("tar", "data/abs-link", "/etc/passwd"),
    ("zip", "../evil.txt", None), ("zip", "/tmp/evar-fault-evil.txt", None), ("zip", "C:/evil.txt", None),
])
def test_19_entries_leaving_the_target_are_refused(tmp_path: Path, kind: str, name: str, link: str | None) -> None:
    work = tmp_path / "work"
    dest = work / "dest"
    work.mkdir()
    archive = _tar(work / "a.tar.gz", name, link) if kind == "tar" else _zip(work / "a.zip", name)
    with pytest.raises(EvarError) as info:
        extract_archive(archive, dest)
    message = str(info.value)
    assert str(archive) in message and name in message and "refusing" in message and "\n" not in message
    assert list(dest.iterdir()) == []  # not even the good entry: all or nothing
    assert sorted(p.name for p in work.iterdir()) == ["a.tar.gz" if kind == "tar" else "a.zip", "dest"]
    assert not Path("/tmp/evar-fault-evil.txt").exists() and not (tmp_path / "evil.txt").exists()
