"""GTZAN: the shipped fault-filtered lists, .au/.wav matching, layouts, broken trees."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import evar
from evar.api import probe
from evar.errors import EvarError
from evar.paths import task_data_dir
from evar.tasks.gtzan import GENRES, read_split_lists
from evar.options import RunOptions

from .layouts_b import gtzan_entries, make_gtzan_tree

# git blob ids of GTZAN_split/*_filtered.txt in jongpillee/music_dataset_split@07e8557 (= coreyker/dnn-mgr gtzan/)
UPSTREAM_BLOBS = {"train_filtered.txt": "a79e19d3ec0433e90c8ed65e7ae7fe75597c5e9f",
                  "valid_filtered.txt": "6ebc11b3e4eb37117127618ba3469b92329475dc",
                  "test_filtered.txt": "5708b74bfead28a0ebf12b4fdb339f67d1490d4a"}
PER_GENRE = {"blues": 100, "classical": 99, "country": 98, "disco": 93, "hiphop": 92, "jazz": 87, "metal": 91,
             "pop": 84, "reggae": 86, "rock": 100}


def test_shipped_lists_are_the_upstream_files() -> None:
    for name, blob in UPSTREAM_BLOBS.items():
        data = (task_data_dir() / "gtzan" / name).read_bytes()
        assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob, name
    lists = read_split_lists()
    assert lists["split"].value_counts().to_dict() == {"train": 443, "test": 290, "valid": 197}
    assert lists["entry"].is_unique
    assert lists["entry"].str.split("/").str[0].value_counts().to_dict() == PER_GENRE
    assert lists["entry"].str.fullmatch(r"([a-z]+)/\1\.000\d\d\.wav").all()


def test_full_archive_gives_the_protocol_split(tmp_path: Path) -> None:
    lists = read_split_lists()
    entries = dict(zip(lists["entry"], lists["split"]))
    make_gtzan_tree(tmp_path, entries, seconds=0.2)
    unlisted = next(f"jazz/jazz.{n:05d}.au" for n in range(100) if f"jazz/jazz.{n:05d}.wav" not in entries)
    make_gtzan_tree(tmp_path, {unlisted: "none"}, seconds=0.2)  # a faulty excerpt of GTZAN: in no list
    task = evar.prepare_task("gtzan", tmp_path)
    assert len(task.meta) == 930
    assert task.info["per_split"] == {"test": 290, "train": 443, "valid": 197}
    assert task.classes == GENRES
    assert f"genres/{unlisted}" not in set(task.meta["file"])
    for file, label, split in task.meta[["file", "label", "split"]].itertuples(index=False):
        entry = file.removeprefix("genres/").removesuffix(".au") + ".wav"
        assert entries[entry] == split and entry.split("/")[0] == label

    broken = tmp_path / "genres/rock/rock.00042.au"
    broken.write_bytes(b"garbage, not an .au header" * 10)  # libsndfile would read this as RAW u-law
    with pytest.raises(EvarError, match=r"1 bad row\(s\) .*genres/rock/rock\.00042\.au: unreadable audio \(no audio header\)"):
        evar.prepare_task("gtzan", tmp_path)
    task = evar.prepare_task("gtzan", tmp_path, on_error="skip")
    assert len(task.meta) == 929 and "genres/rock/rock.00042.au" not in set(task.meta["file"])
    assert [p["file"] for p in task.info["skipped"]] == ["genres/rock/rock.00042.au"]


def test_subset_gets_listed_splits_and_reports_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    chosen = gtzan_entries(per_genre_split=1, genres=["blues", "jazz", "rock"])
    make_gtzan_tree(tmp_path, chosen, suffix=".wav", in_genres_folder=False)  # EVAR's converted copy: <genre>/*.wav
    task = evar.prepare_task("gtzan", tmp_path, on_error="skip")
    assert dict(zip(task.meta["file"], task.meta["split"])) == chosen
    assert task.classes == ["blues", "jazz", "rock"]
    assert len(task.info["skipped"]) == 930 - 9
    assert {p["reason"] for p in task.info["skipped"]} == {"file not found"}
    assert all(p["file"].endswith(".wav") for p in task.info["skipped"])  # named as the tree names its files
    assert "the protocol has 10" in capsys.readouterr().err


def test_layout_errors_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "music").mkdir()
    with pytest.raises(EvarError, match="GTZAN genre folders"):
        evar.prepare_task("gtzan", tmp_path)
    chosen = gtzan_entries(per_genre_split=1, genres=["pop"])
    make_gtzan_tree(tmp_path, chosen)
    with pytest.raises(EvarError, match=r"genres/blues/blues\.\d{5}\.au: file not found"):
        evar.prepare_task("gtzan", tmp_path)
    task = evar.prepare_task("gtzan", tmp_path, on_error="skip")
    assert set(task.meta["file"]) == {f"genres/{e.removesuffix('.wav')}.au" for e in chosen}


def test_linear_probe_end_to_end(tmp_path: Path) -> None:
    make_gtzan_tree(tmp_path, gtzan_entries(per_genre_split=2, genres=["blues", "jazz", "rock"]))
    evar.prepare_task("gtzan", tmp_path, on_error="skip")
    result = probe("gtzan", "melspec", run=RunOptions(progress=False), record=False)
    assert result.metric == "accuracy" and result.rounds == ["test"]
    assert 1 / 3 < result.mean <= 1.0
