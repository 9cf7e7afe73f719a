"""FSD50K and VocalSound from their official layouts: EVAR's splits and labels, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import evar
from evar.audio import write_audio
from evar.errors import EvarError

RATE = 16000


def _clip(path: Path, seed: int) -> None:
    write_audio(path, 0.1 * np.random.default_rng(seed).standard_normal(RATE // 4).astype(np.float32), RATE)


def make_fsd50k_tree(root: Path) -> None:
    (root / "FSD50K.ground_truth").mkdir(parents=True)
    dev = [("101", "Bark,Dog,Animal", "/m/05tny_,/m/0bt9lr,/m/0jbk", "train"),
           ("102", "Guitar,Music", "/m/0342h,/m/04rlf", "train"), ("103", "Bark,Dog,Animal", "x", "val")]
    evaluation = [("201", "Guitar,Music", "x"), ("202", "Dog,Animal", "x")]
    (root / "FSD50K.ground_truth/dev.csv").write_text(
        "fname,labels,mids,split\n" + "".join(f'{f},"{l}","{m}",{s}\n' for f, l, m, s in dev))
    (root / "FSD50K.ground_truth/eval.csv").write_text(
        "fname,labels,mids\n" + "".join(f'{f},"{l}","{m}"\n' for f, l, m in evaluation))
    for i, (name, *_rest) in enumerate(dev):
        _clip(root / f"FSD50K.dev_audio/{name}.wav", i)
    for i, (name, *_rest) in enumerate(evaluation):
        _clip(root / f"FSD50K.eval_audio/{name}.wav", 10 + i)


def test_fsd50k_official_splits_and_label_sets(tmp_path: Path) -> None:
    make_fsd50k_tree(tmp_path / "FSD50K")
    task = evar.prepare_task("fsd50k", tmp_path / "FSD50K")
    assert list(task.meta["file"]) == ["FSD50K.dev_audio/101.wav", "FSD50K.dev_audio/102.wav", "FSD50K.dev_audio/103.wav",
                                       "FSD50K.eval_audio/201.wav", "FSD50K.eval_audio/202.wav"]
    assert list(task.meta["split"]) == ["train", "train", "valid", "test", "test"]
    assert task.meta["label"][0] == "Bark;Dog;Animal" and task.spec.multilabel and task.spec.metric == "mAP"
    assert task.classes == ["Animal", "Bark", "Dog", "Guitar", "Music"]
    assert task.labels().shape == (5, 5) and task.labels()[4].tolist() == [1, 0, 1, 0, 0]
    (tmp_path / "FSD50K/FSD50K.ground_truth/dev.csv").write_text("fname,labels,mids,split\n101,Bark,x,holdout\n")
    with pytest.raises(EvarError, match="split must be train or val"):
        evar.prepare_task("fsd50k", tmp_path / "FSD50K")


def make_vocalsound_tree(root: Path, folder: str = "audio_16k", revised: bool = False) -> dict[str, tuple[str, str]]:
    mids = {"/m/01j3sz": "Laughter", "/m/07plz5l": "Sigh", "/m/01b_21": "Cough"}
    (root / "datafiles").mkdir(parents=True)
    (root / "class_labels_indices_vs.csv").write_text(
        "index,mid,display_name\n" + "".join(f"{i},{m},{n}\n" for i, (m, n) in enumerate(mids.items())))
    expected, seed = {}, 0
    for split, stem, speakers in (("train", "tr", ["f0001", "m0002"]), ("valid", "val", ["f0003"]),
                                  ("test", "te", ["m0004"])):
        data = []
        for speaker in speakers:
            for mid, name in mids.items():
                wav = f"{speaker}_0_{name.lower()}.wav"
                _clip(root / folder / wav, seed)
                seed += 1
                data.append({"wav": f"/data/sls/scratch/vocalsound/{folder}/{wav}", "labels": mid, "spk_id": speaker})
                expected[f"{folder}/{wav}"] = (name, split)
        (root / "datafiles" / f"{stem}{'_rev' if revised else ''}.json").write_text(json.dumps({"data": data}))
    return expected


@pytest.mark.parametrize("folder, revised", [("audio_16k", False), ("data_44k", True)])
def test_vocalsound_official_lists(tmp_path: Path, folder: str, revised: bool) -> None:
    expected = make_vocalsound_tree(tmp_path / "vs", folder, revised)
    task = evar.prepare_task("vocalsound", tmp_path / "vs")
    assert {f: (l, s) for f, l, s in task.meta[["file", "label", "split"]].itertuples(index=False)} == expected
    assert task.classes == ["Cough", "Laughter", "Sigh"] and task.spec.unit_sec == 4.18


def test_vocalsound_bad_label_is_named(tmp_path: Path) -> None:
    make_vocalsound_tree(tmp_path / "vs")
    path = tmp_path / "vs/datafiles/te.json"
    data = json.loads(path.read_text())
    data["data"][0]["labels"] = "/m/unknown"
    path.write_text(json.dumps(data))
    with pytest.raises(EvarError, match=r"te.json: .*label '/m/unknown' is not in class_labels_indices_vs.csv"):
        evar.prepare_task("vocalsound", tmp_path / "vs")
