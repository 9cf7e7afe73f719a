"""AudioSet (as20k, as): official segment lists + the clips you have, EVAR's rules; multi-label probe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import evar
from evar.api import probe
from evar.audio import write_audio
from evar.errors import EvarError
from evar.synth.trees import synth_clip
from evar.options import RunOptions

SR = 16000
#: two AudioSet classes (MIDs of class_labels_indices.csv: Speech, Music)
MIDS = ["/m/09x0r", "/m/04rlf"]


def _ytid(rng: np.random.Generator) -> str:
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"))
    return "".join(rng.choice(alphabet, 11))


def make_audioset_tree(root: Path, per_subset: dict[str, int], seed: int = 0) -> dict[str, list[str]]:
    """Official-format segment lists and one clip per listed segment (``<YTID>_<start>.wav``).

    Every fourth segment of a list carries both labels; each list also names a segment with no audio
    (gone from YouTube), and each folder holds a stray file that is not in its list. Returns the ids per list.
    """
    rng = np.random.default_rng(seed)
    ids = {}
    for subset, n in per_subset.items():
        lines = ["# Segments csv created Sun Mar  5 10:54:31 2017", f"# num_ytids={n + 1}, num_segs={n + 1}, "
                 "num_unique_labels=2, num_positive_labels=3",
                 "# YTID, start_seconds, end_seconds, positive_labels"]
        ids[subset] = []
        for k in range(n + 1):
            ytid = _ytid(rng)
            labels = MIDS if k % 4 == 3 else [MIDS[k % 2]]
            lines.append(f'{ytid}, 30.000, 40.000, "{",".join(labels)}"')
            if k < n:  # the last listed segment has no audio
                ids[subset].append(ytid)
                write_audio(root / subset / f"part{k % 2}" / f"{ytid}_30000.wav",
                            synth_clip(4 * (k % 2), rng, SR, 0.5), SR)
        (root / f"{subset}.csv").write_text("\n".join(lines) + "\n")
        write_audio(root / subset / f"{_ytid(rng)}_0.wav", synth_clip(0, rng, SR, 0.5), SR)  # not listed
    return ids


def test_as20k_follows_evar_rules_and_probes(tmp_path: Path, evar_dirs: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "as"
    ids = make_audioset_tree(root, {"balanced_train_segments": 16, "eval_segments": 8})
    task = evar.prepare_task("as20k", root)
    err = capsys.readouterr().err
    assert "balanced_train_segments: 16 of 17 listed segments have audio" in err
    assert "eval_segments: 8 of 9 listed segments have audio" in err
    assert task.info["per_split"] == {"test": 8, "train": 16}
    train = task.meta[task.meta["split"] == "train"]
    assert [Path(f).stem[:11] for f in train["file"]] == ids["balanced_train_segments"]
    assert train["label"].iloc[3] == "/m/09x0r;/m/04rlf" and train["label"].iloc[1] == "/m/04rlf"
    assert task.spec.multilabel and task.spec.unit_sec == 10.0 and task.classes == sorted(MIDS)
    result = probe("as20k", "melspec", run=RunOptions(progress=False), record=False)
    assert result.metric == "mAP" and result.rounds == ["test"] and 0.5 < result.mean <= 1.0


def test_as_adds_the_unbalanced_list_and_errors_name_the_file(tmp_path: Path, evar_dirs: Path) -> None:
    root = tmp_path / "as"
    make_audioset_tree(root, {"balanced_train_segments": 4, "unbalanced_train_segments": 6, "eval_segments": 4})
    assert evar.prepare_task("as", root).info["per_split"] == {"test": 4, "train": 10}
    assert evar.prepare_task("as20k", root).info["per_split"] == {"test": 4, "train": 4}
    with open(root / "eval_segments.csv", "a") as f:
        f.write("tooshort, 0.000, 10.000, \"/m/09x0r\"\n")
    with pytest.raises(EvarError, match=r"eval_segments.csv:9: expected 'YTID, start_seconds"):
        evar.prepare_task("as20k", root)
    (root / "eval_segments.csv").unlink()
    with pytest.raises(EvarError, match=r"eval_segments.csv \(not found\)"):
        evar.prepare_task("as20k", root)
