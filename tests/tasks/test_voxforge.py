"""VoxForge: EVAR's metadata file (blob-checked), where it is looked for, and the errors when it is absent."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

import evar
from evar.api import probe
import evar.tasks.voxforge as voxforge
from evar.errors import EvarError
from evar.options import RunOptions

from .layouts_b import VOXFORGE_LANGUAGES, make_voxforge_tree


@pytest.fixture
def no_shipped_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty stand-in for the repository's tasks/ folder."""
    data = tmp_path / "shipped"
    (data / "voxforge").mkdir(parents=True)
    monkeypatch.setattr(voxforge, "task_data_dir", lambda: data)
    return data


def test_git_blob_ids() -> None:
    assert voxforge.git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert voxforge.git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_missing_metadata_says_where_to_get_it(tmp_path: Path, no_shipped_file: Path) -> None:
    root = tmp_path / "voxforge"
    root.mkdir()
    with pytest.raises(EvarError, match=r"voxforge\.csv.*eval-audio-repr/blob/main/evar/metadata/voxforge\.csv"):
        evar.prepare_task("voxforge", root)


def test_only_evars_exact_file_is_accepted(tmp_path: Path, no_shipped_file: Path) -> None:
    root = tmp_path / "voxforge"
    make_voxforge_tree(root, languages=["de", "en"])
    with pytest.raises(EvarError, match=r"voxforge\.csv: not EVAR's voxforge\.csv \(git blob"):
        evar.prepare_task("voxforge", root)


def test_rows_follow_the_metadata(tmp_path: Path, no_shipped_file: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "voxforge"
    data = make_voxforge_tree(root)
    monkeypatch.setattr(voxforge, "EVAR_BLOB_SHA1", voxforge.git_blob_sha1(data))  # stand-in for EVAR's file
    task = evar.prepare_task("voxforge", root)
    rows = [line.split(",") for line in data.decode().splitlines()[1:]]
    assert task.meta[["file", "label", "split"]].values.tolist() == rows
    assert task.classes == VOXFORGE_LANGUAGES
    assert task.info["per_split"] == {"test": 12, "train": 24, "valid": 12}
    assert capsys.readouterr().err == ""  # 6 classes, as the protocol says

    # the same file gzipped in tasks/voxforge/ takes precedence over --root
    (no_shipped_file / "voxforge" / "voxforge.csv.gz").write_bytes(gzip.compress(data))
    (root / "voxforge.csv").write_text("garbage\n")
    assert voxforge.metadata_file(root).name == "voxforge.csv.gz"
    assert len(evar.prepare_task("voxforge", root).meta) == 48


def test_broken_rows(tmp_path: Path, no_shipped_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "voxforge"
    data = make_voxforge_tree(root, languages=["fr", "it"])
    monkeypatch.setattr(voxforge, "EVAR_BLOB_SHA1", voxforge.git_blob_sha1(data))
    lost = data.decode().splitlines()[3].split(",")[0]
    (root / lost).unlink()
    with pytest.raises(EvarError, match=f"1 bad row.*{lost}: file not found"):
        evar.prepare_task("voxforge", root)
    task = evar.prepare_task("voxforge", root, on_error="skip")
    assert len(task.meta) == 15 and task.info["skipped"] == [{"file": lost, "reason": "file not found"}]

    renamed = data.replace(b"file_name,", b"path,", 1)
    (root / "voxforge.csv").write_bytes(renamed)
    monkeypatch.setattr(voxforge, "EVAR_BLOB_SHA1", voxforge.git_blob_sha1(renamed))
    with pytest.raises(EvarError, match=r"missing column\(s\) \['file_name'\]"):
        evar.prepare_task("voxforge", root)


def test_linear_probe_end_to_end(tmp_path: Path, no_shipped_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "voxforge"
    data = make_voxforge_tree(root, languages=["de", "en", "ru"])
    monkeypatch.setattr(voxforge, "EVAR_BLOB_SHA1", voxforge.git_blob_sha1(data))
    evar.prepare_task("voxforge", root)
    result = probe("voxforge", "melspec", run=RunOptions(progress=False), record=False)
    assert result.metric == "accuracy" and result.rounds == ["test"]
    assert 1 / 3 < result.mean <= 1.0
