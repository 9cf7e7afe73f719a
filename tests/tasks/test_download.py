"""Dataset downloads: served from a local HTTP server, verified, resumed, extracted safely, then prepared."""

from __future__ import annotations

import hashlib
import io
import re
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from http_server import serve

import evar
from evar.tasks import DownloadSpec, RemoteFile, get_task_spec
from evar.tasks.download import ARCHIVE_DIR, describe_downloads, download_task, downloadable, extract_archive
from evar.errors import EvarError
from evar.synth.trees import make_esc50_tree

from evar.synth.trees import make_nsynth_tree


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_bytes(entries: list[tuple[str, str, bytes | str]], mode: str = "w:gz") -> bytes:
    """A tar archive from (name, kind, payload) with kind file / dir / sym / hard (payload = link target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}[kind]
            info.linkname = payload if kind != "dir" else ""
            tar.addfile(info)
    return buffer.getvalue()


def tree_tar(root: Path, arcname: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(root, arcname=arcname)
    return buffer.getvalue()


def tree_zip(root: Path, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(root.rglob("*")):
            zf.write(path, f"{root.name}/{path.relative_to(root).as_posix()}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def site(tmp_path: Path):
    folder = tmp_path / "site"
    folder.mkdir()
    with serve(folder) as (url, log):
        yield folder, url, log


def test_zip_download_extracts_and_prepares_and_a_second_run_fetches_nothing(site, tmp_path: Path, monkeypatch) -> None:
    folder, url, log = site
    data = tree_zip(make_esc50_tree(tmp_path / "src" / "ESC-50-master", n_classes=2, clips_per_class_per_fold=1,
                                    sample_rate=16000, seconds=0.2),
                    extra={"__MACOSX/ESC-50-master/._esc50.csv": b"resource fork", "ESC-50-master/audio/._x.wav": b""})
    (folder / "master.zip").write_bytes(data)
    monkeypatch.setattr(get_task_spec("esc50"), "download", DownloadSpec(root="ESC-50-master", archives=(RemoteFile(f"{url}/master.zip", "ESC-50-master.zip",
                                                                       sha256=sha256(data)),)))
    to = tmp_path / "data"
    root = download_task("esc50", to, progress=False)
    assert root == to / "ESC-50-master" and (root / "meta/esc50.csv").is_file()
    assert not (to / "__MACOSX").exists() and not (root / "audio/._x.wav").exists()  # macOS junk skipped
    assert not (to / ARCHIVE_DIR / "ESC-50-master.zip").exists()  # deleted once extracted
    assert sorted(p.name for p in to.iterdir()) == ["ESC-50-master", ARCHIVE_DIR]  # no temporary folder left
    requests = len(log)
    assert download_task("esc50", to, progress=False) == root and len(log) == requests  # marker: nothing fetched
    task = evar.prepare_task("esc50", root)
    assert len(task) == 10 and task.classes == ["dog", "rooster"]


def test_three_tar_gz_into_one_folder_with_md5(site, tmp_path: Path, monkeypatch) -> None:
    folder, url, _ = site
    source = make_nsynth_tree(tmp_path / "src", notes={"train": 2, "valid": 1, "test": 1}, train_only=())
    archives = []
    for split in ("test", "valid", "train"):
        data = tree_tar(source / f"nsynth-{split}", f"nsynth-{split}")
        (folder / f"nsynth-{split}.jsonwav.tar.gz").write_bytes(data)
        archives.append(RemoteFile(f"{url}/nsynth-{split}.jsonwav.tar.gz", f"nsynth-{split}.jsonwav.tar.gz",
                                   md5=hashlib.md5(data).hexdigest(), into="nsynth"))
    monkeypatch.setattr(get_task_spec("nsynth"), "download", DownloadSpec(root="nsynth", archives=tuple(archives)))
    root = download_task("nsynth", tmp_path / "data", progress=False, keep_archives=True)
    assert sorted(p.name for p in root.iterdir()) == ["nsynth-test", "nsynth-train", "nsynth-valid"]
    assert (tmp_path / "data" / ARCHIVE_DIR / "nsynth-train.jsonwav.tar.gz").is_file()  # kept on request
    assert evar.prepare_task("nsynth", root).info["per_split"] == {"test": 3, "train": 6, "valid": 3}


@pytest.mark.parametrize("checksum", ["sha256", "md5"])
def test_checksum_mismatch_stops_before_extraction(site, tmp_path: Path, monkeypatch, checksum: str) -> None:
    folder, url, _ = site
    data = tar_bytes([("UrbanSound8K/readme.txt", "file", b"hello")])
    (folder / "us8k.tar.gz").write_bytes(data)
    wrong = {"sha256": sha256(b"other")} if checksum == "sha256" else {"md5": hashlib.md5(b"other").hexdigest()}
    monkeypatch.setattr(get_task_spec("us8k"), "download", DownloadSpec(root="UrbanSound8K", archives=(RemoteFile(f"{url}/us8k.tar.gz", "UrbanSound8K.tar.gz", **wrong),)))
    to = tmp_path / "data"
    with pytest.raises(EvarError, match=f"{checksum} mismatch"):
        download_task("us8k", to, progress=False)
    assert not (to / "UrbanSound8K").exists()
    assert list((to / ARCHIVE_DIR).iterdir()) == []  # neither the bad file nor its .part is kept


def test_resume_from_a_partial_download(site, tmp_path: Path, monkeypatch) -> None:
    folder, url, log = site
    data = tar_bytes([("a/b.txt", "file", bytes(range(256)) * 40)], mode="w")
    (folder / "sc.tar").write_bytes(data)
    monkeypatch.setattr(get_task_spec("spcv2"), "download", DownloadSpec(root="sc/a", archives=(RemoteFile(f"{url}/sc.tar", "sc.tar", sha256=sha256(data), into="sc"),)))
    to = tmp_path / "data"
    (to / ARCHIVE_DIR).mkdir(parents=True)
    (to / ARCHIVE_DIR / "sc.tar.part").write_bytes(data[:3000])
    root = download_task("spcv2", to, progress=False)
    assert log == ["/sc.tar bytes=3000-"]  # only the rest was requested
    assert (root / "b.txt").read_bytes() == bytes(range(256)) * 40


UNSAFE_TARS = {
    "parent": [("ok.txt", "file", b"x"), ("../evil.txt", "file", b"x")],
    "absolute": [("/tmp/evil.txt", "file", b"x")],
    "symlink": [("d", "dir", ""), ("d/link", "sym", "../../outside")],
    "absolute symlink": [("link", "sym", "/etc/passwd")],
    "hard link": [("link", "hard", "../outside")],
}


@pytest.mark.parametrize("case", sorted(UNSAFE_TARS))
def test_unsafe_tar_entries_are_refused(tmp_path: Path, case: str) -> None:
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(tar_bytes(UNSAFE_TARS[case]))
    dest = tmp_path / "out" / "dest"
    with pytest.raises(EvarError, match="refusing"):
        extract_archive(archive, dest)
    assert list(dest.iterdir()) == [] and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dest"]
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()


def test_unsafe_zip_entries_are_refused_and_inner_links_kept(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("ok.txt", b"x")
        zf.writestr("../evil.txt", b"x")
    with pytest.raises(EvarError, match=r"refusing to extract '\.\./evil.txt'"):
        extract_archive(bad, tmp_path / "dest")
    link = zipfile.ZipInfo("link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr(link, "../../etc/passwd")
    with pytest.raises(EvarError, match="refusing symlink link -> ../../etc/passwd"):
        extract_archive(bad, tmp_path / "dest")
    good = tmp_path / "good.tar"
    good.write_bytes(tar_bytes([("top/a.txt", "file", b"A"), ("top/sub/link", "sym", "../a.txt")], mode="w"))
    assert extract_archive(good, tmp_path / "dest") == [tmp_path / "dest" / "top"]
    assert (tmp_path / "dest/top/sub/link").read_bytes() == b"A"
    with pytest.raises(EvarError, match=re.escape(f"{tmp_path / 'dest' / 'top'} already exists")):
        extract_archive(good, tmp_path / "dest")  # never extracted over an existing entry


def test_file_list_download_checks_each_file_and_resumes(site, tmp_path: Path, monkeypatch) -> None:
    folder, url, log = site
    clips = {f"10{k:02d}_DFA_ANG_XX.wav": bytes([k]) * 100 for k in range(3)}
    for name, data in clips.items():
        (folder / name).write_bytes(data)
    lines = [f"{url}/{name}\t{len(data)}\t{sha256(data)}" for name, data in clips.items()]
    lines.append(f"{url}/summaryTable.csv\t10\t{sha256(b'x')}")  # not a .wav: ignored, like EVAR does
    listing = ("\n".join(lines) + "\n").encode()
    (folder / "crema_d.txt").write_bytes(listing)
    monkeypatch.setattr(get_task_spec("cremad"), "download", DownloadSpec(root="CREMA-D", file_list=RemoteFile(f"{url}/crema_d.txt", "crema_d.txt",
                                                                  sha256=sha256(listing)),
        list_into="CREMA-D/AudioWAV", list_suffix=".wav"))
    broken = "1001_DFA_ANG_XX.wav"
    (folder / broken).write_bytes(b"tampered")
    to = tmp_path / "data"
    with pytest.raises(EvarError, match=f"cremad: 1 of 3 files failed .*{broken}: sha256 mismatch"):
        download_task("cremad", to, progress=False, workers=2)
    (folder / broken).write_bytes(clips[broken])
    log.clear()
    root = download_task("cremad", to, progress=False, workers=2)
    assert sorted(p.name for p in (root / "AudioWAV").iterdir()) == sorted(clips)
    assert all((root / "AudioWAV" / n).read_bytes() == d for n, d in clips.items())
    assert [entry for entry in log if entry.endswith(".wav")] == [f"/{broken}"]  # the others were kept


def test_list_of_archives_without_scheme(site, tmp_path: Path, monkeypatch) -> None:
    folder, url, _ = site
    names = []
    for speaker in ("anon-20100101-abc", "bob-20110202-xyz"):
        (folder / f"{speaker}.tgz").write_bytes(tar_bytes([(f"{speaker}/wav/a0001.wav", "file", b"RIFF")]))
        names.append(url.removeprefix("http://") + f"/{speaker}.tgz")  # as in TFDS' voxforge_urls.txt
    listing = ("\n".join(names) + "\n").encode()
    (folder / "voxforge_urls.txt").write_bytes(listing)
    monkeypatch.setattr(get_task_spec("voxforge"), "download", DownloadSpec(root="voxforge", file_list=RemoteFile(f"{url}/voxforge_urls.txt", "voxforge_urls.txt"),
        list_into="voxforge", list_archives=True))
    root = download_task("voxforge", tmp_path / "data", progress=False, workers=2)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.wav")) == [
        "anon-20100101-abc/wav/a0001.wav", "bob-20110202-xyz/wav/a0001.wav"]


def test_registration_and_unknown_tasks_explain_themselves(tmp_path: Path) -> None:
    with pytest.raises(EvarError, match="VoxCeleb1 needs registration.*iden_split.txt.*evar prepare vc1 --root"):
        download_task("vc1", tmp_path)
    with pytest.raises(EvarError, match="no download for task 'nope'; downloadable: as, as20k, audiocaps, clotho, cremad, cremad_gender, esc50"):
        download_task("nope", tmp_path)


def test_official_table_is_well_formed() -> None:
    specs = downloadable()
    assert {"esc50", "us8k", "spcv2", "nsynth", "cremad", "voxforge", "gtzan", "surge", "vc1", "as20k"} <= set(specs)
    for name, spec in specs.items():
        assert spec.root and get_task_spec(name).source.startswith("http")
        remotes = list(spec.archives) + ([spec.file_list] if spec.file_list else [])
        assert bool(remotes) != bool(spec.manual)
        for remote in remotes:
            assert re.match(r"https?://", remote.url) and remote.filename and "/" not in remote.filename
            assert remote.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", remote.sha256)
            assert remote.md5 is None or re.fullmatch(r"[0-9a-f]{32}", remote.md5)
        assert spec.manual or spec.checksums  # every entry says where its checksums come from, or why none
    described = describe_downloads()
    assert "vc1: manual download" in described and "spcv2: http://download.tensorflow.org" in described


def test_audioset_download_says_how_to_get_the_clips(tmp_path: Path) -> None:
    with pytest.raises(EvarError, match="AudioSet is published as segment lists.*evar prepare as20k --root as"):
        download_task("as20k", tmp_path)
