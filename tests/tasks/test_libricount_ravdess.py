"""LibriCount (HEAR's five folds) and RAVDESS speech (four actor folds) from their official layouts; both fetched
through `evar download` from a local server."""

from __future__ import annotations

import hashlib
import io
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
from http_server import serve

import evar
from evar.audio import write_audio
from evar.errors import EvarError
from evar.tasks import DownloadSpec, RemoteFile, get_task_spec
from evar.tasks.download import download_task
from evar.tasks.libricount import hear_folds

RATE = 16000


def _clip(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_audio(path, 0.1 * np.random.default_rng(seed).standard_normal(RATE // 4).astype(np.float32), RATE)


def make_libricount_tree(root: Path, per_count: int = 20) -> list[str]:
    names = []
    for count in range(11):
        for i in range(per_count):
            name = f"{count}_{hashlib.md5(f'{count}-{i}'.encode()).hexdigest()[:12]}"
            _clip(root / "test" / f"{name}.wav", 100 * count + i)
            (root / "test" / f"{name}.json").write_text("[]")
            names.append(name)
    return names


def test_libricount_labels_and_hears_folds(tmp_path: Path, evar_dirs: Path) -> None:
    names = make_libricount_tree(tmp_path / "LibriCount10-0dB")
    task = evar.prepare_task("libricount", tmp_path / "LibriCount10-0dB")
    assert len(task) == 220 and task.classes == sorted(str(c) for c in range(11)) and task.spec.folds == 5
    # HEAR's split_k_folds as its source states it: sorted stems, random.Random(seed).shuffle, array_split in 5,
    # the next seed while a fold lacks a class
    for seed in ["split_k_folds", *(f"split_k_folds_retry_{i}" for i in range(999))]:
        keys = sorted(names)
        random.Random(seed).shuffle(keys)
        parts = np.array_split(keys, 5)
        if all(len({k.split("_")[0] for k in part}) == 11 for part in parts):
            break
    expected = {key: j + 1 for j, part in enumerate(parts) for key in part}
    assert dict(zip(task.meta["file"].str[5:-4], task.meta["fold"])) == expected
    assert task.meta["file"].iloc[0].startswith("test/") and set(task.meta["fold"].value_counts()) == {44}


def test_libricount_fold_seed_retry_and_errors(tmp_path: Path) -> None:
    keys = [f"{c}_{i}" for c in "ab" for i in range(5)]  # 2 classes x 5 clips in 5 folds: a fold often lacks one
    first = sorted(keys)
    random.Random("split_k_folds").shuffle(first)
    first_folds = np.array_split(first, 5)
    folds = hear_folds(keys, [k[0] for k in keys])
    assert all({k[0] for k, f in folds.items() if f == j} == {"a", "b"} for j in range(1, 6))
    if not all(len({k[0] for k in part}) == 2 for part in first_folds):  # the first seed fails here: a retry was used
        assert folds != {k: j + 1 for j, part in enumerate(first_folds) for k in part}
    (tmp_path / "test").mkdir()
    _clip(tmp_path / "test" / "three_x.wav", 0)
    with pytest.raises(EvarError, match="not named <count>_<id>.wav, e.g. three_x.wav"):
        evar.prepare_task("libricount", tmp_path)
    with pytest.raises(EvarError, match="expected test"):
        evar.prepare_task("libricount", tmp_path / "test")


def make_ravdess_tree(root: Path) -> None:
    for actor in range(1, 25):
        for emotion in (1, 5, 8):
            _clip(root / f"Actor_{actor:02d}" / f"03-01-{emotion:02d}-01-01-01-{actor:02d}.wav", actor * 10 + emotion)
    _clip(root / "Actor_01" / "03-02-05-01-01-01-01.wav", 999)  # song: not this task
    _clip(root / "Actor_01" / "01-01-05-01-01-01-01.wav", 998)  # audio-visual modality code: not audio-only


def test_ravdess_emotions_and_actor_folds(tmp_path: Path, evar_dirs: Path) -> None:
    make_ravdess_tree(tmp_path / "RAVDESS")
    task = evar.prepare_task("ravdess", tmp_path / "RAVDESS")
    assert len(task) == 72 and task.classes == ["angry", "neutral", "surprised"]
    actor = task.meta["file"].str[-6:-4].astype(int)
    assert (task.meta["fold"] == (actor - 1) // 6 + 1).all() and set(task.meta["fold"]) == {1, 2, 3, 4}
    assert task.meta.groupby("fold").apply(lambda f: set(f["file"].str[:8])).map(len).tolist() == [6, 6, 6, 6]
    _clip(tmp_path / "RAVDESS" / "Actor_02" / "03-01-09-01-01-01-02.wav", 1)
    with pytest.raises(EvarError, match="emotion 09 or actor 02 is outside"):
        evar.prepare_task("ravdess", tmp_path / "RAVDESS")
    with pytest.raises(EvarError, match="no Actor_"):
        evar.prepare_task("ravdess", tmp_path)


def _zip(root: Path, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(root).as_posix())
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["libricount", "ravdess"])
def test_download_then_prepare(name: str, tmp_path: Path, evar_dirs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "src"
    make_libricount_tree(source) if name == "libricount" else make_ravdess_tree(source)
    data = _zip(source)
    site = tmp_path / "site"
    site.mkdir()
    official = get_task_spec(name).download
    remote = official.archives[0]
    (site / remote.filename).write_bytes(data)
    with serve(site) as (url, _log):
        local = RemoteFile(f"{url}/{remote.filename}", remote.filename, md5=hashlib.md5(data).hexdigest(),
                           into=remote.into)
        monkeypatch.setattr(get_task_spec(name), "download", DownloadSpec(root=official.root, archives=(local,),
                                                                         checksums=official.checksums))
        root = download_task(name, tmp_path / "data", progress=False)
    assert root == tmp_path / "data" / official.root
    assert len(evar.prepare_task(name, root)) == (220 if name == "libricount" else 72)
