"""Tasks EVAR derives from datasets evar already reads: NSynth pitch and velocity, CREMA-D speaker sex, and
Speech Commands V1 — each in its official layout, with EVAR's labels and the published splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import evar
from evar.synth.trees import make_nsynth_tree
from evar.tasks.cremad import actor_sex, speaker_splits

from .layouts import make_spcv2_tree
from .layouts_b import cremad_speakers, make_cremad_tree


def test_nsynth_pitch_and_velocity_label_the_same_notes(tmp_path: Path) -> None:
    root = make_nsynth_tree(tmp_path / "nsynth")
    family = evar.prepare_task("nsynth", root)
    for name, key in (("nsynth_pitch", "pitch"), ("nsynth_velocity", "velocity")):
        task = evar.prepare_task(name, root)
        assert list(task.meta["file"]) == list(family.meta["file"]) and list(task.meta["split"]) == list(family.meta["split"])
        for split in ("train", "valid", "test"):
            examples = json.loads((root / f"nsynth-{split}/examples.json").read_text())
            rows = task.meta[task.meta["split"] == split]
            assert list(rows["label"]) == [str(e[key]) for e in examples.values()]
        assert task.spec.unit_sec == 4.0 and task.spec.group == "Music"
    velocity = evar.load_task("nsynth_velocity")
    assert velocity.classes == sorted({str(v) for v in velocity.meta.loc[velocity.meta["split"] == "train", "label"]})


def test_cremad_gender_is_the_actors_sex_on_the_emotion_split(tmp_path: Path) -> None:
    table = actor_sex()
    assert sorted(table) == sorted(speaker_splits()) and Counter(table.values()) == {"Male": 48, "Female": 43}
    assert table["1001"] == "Male" and table["1002"] == "Female"  # EVAR's cremad_gender.csv (VideoDemographics.csv)
    speakers = [actor for actors in cremad_speakers().values() for actor in actors]
    make_cremad_tree(tmp_path / "CREMA-D", speakers)
    emotion = evar.prepare_task("cremad", tmp_path / "CREMA-D")
    gender = evar.prepare_task("cremad_gender", tmp_path / "CREMA-D")
    assert list(gender.meta["file"]) == list(emotion.meta["file"]) and list(gender.meta["split"]) == list(emotion.meta["split"])
    actors = gender.meta["file"].str.extract(r"(\d{4})_")[0]
    assert list(gender.meta["label"]) == [table[a] for a in actors]
    assert set(gender.classes) <= {"Female", "Male"} and gender.spec.n_classes == 2


def test_spcv1_reads_the_v1_release_with_its_lists(tmp_path: Path) -> None:
    root = tmp_path / "speech_commands_v0.01"
    expected = make_spcv2_tree(root)  # the two releases share the layout
    task = evar.prepare_task("spcv1", root)
    assert dict(zip(task.meta["file"], task.meta["split"])) == expected
    assert task.spec.n_classes == 30 and task.spec.unit_sec == 1.0
    assert task.spec.download.root == "speech_commands_v0.01"
