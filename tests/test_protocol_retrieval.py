"""Audio↔text retrieval: the metrics against a per-query count written from their definitions (WavCaps' a2t/t2a),
Clotho and AudioCaps from their official layouts, and `evar probe --protocol retrieval` end to end with the tiny
CLAP, its scores recomputed from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import evar
from evar.audio import write_audio
from evar.cli import main
from evar.errors import EvarError
from evar.metrics.retrieval import audio_to_text, cosine_similarity, text_to_audio
from evar.options import ModelChoice
from evar.tasks import load_task
from fixture_support import clap_with_char_tokenizer


def reference_scores(similarity: np.ndarray, owner: np.ndarray) -> dict[str, dict[str, float]]:
    """One query at a time: sort the candidates, find the relevant ones (the definitions, no vectorising)."""
    def summary(ranks, ap):
        ranks = np.array(ranks)
        out = {f"R@{k}": float(np.mean(ranks < k)) for k in (1, 5, 10, 50)}
        return {**out, "mAP@10": float(np.mean(ap)), "medR": float(np.floor(np.median(ranks)) + 1),
                "meanR": float(ranks.mean() + 1)}

    a2t_ranks, a2t_ap = [], []
    for a in range(similarity.shape[0]):
        order = list(np.argsort(-similarity[a], kind="stable"))
        positions = sorted(order.index(t) for t in np.flatnonzero(owner == a))
        a2t_ranks.append(positions[0])
        hits = [p + 1 for p in positions if p < 10]
        a2t_ap.append(sum((i + 1) / p for i, p in enumerate(hits)) / len(positions))
    t2a_ranks = [list(np.argsort(-similarity[:, t], kind="stable")).index(owner[t]) for t in range(len(owner))]
    t2a_ap = [1 / (r + 1) if r < 10 else 0.0 for r in t2a_ranks]
    return {"a2t": summary(a2t_ranks, a2t_ap), "t2a": summary(t2a_ranks, t2a_ap)}


@pytest.mark.parametrize("captions_per_clip", [5, None])
def test_metrics_match_the_per_query_definition(captions_per_clip: int | None) -> None:
    rng = np.random.default_rng(0)
    n_audio = 60
    counts = np.full(n_audio, 5) if captions_per_clip else rng.integers(1, 7, n_audio)
    owner = np.repeat(np.arange(n_audio), counts)
    audio = rng.standard_normal((n_audio, 16))
    text = audio[owner] + 2.5 * rng.standard_normal((len(owner), 16))  # related, far from perfect
    similarity = cosine_similarity(audio, text)
    expected = reference_scores(similarity, owner)
    assert audio_to_text(similarity, owner) == pytest.approx(expected["a2t"], abs=1e-12)
    assert text_to_audio(similarity, owner) == pytest.approx(expected["t2a"], abs=1e-12)
    assert 0.0 < expected["t2a"]["R@1"] < 1.0 and expected["t2a"]["medR"] > 1  # neither trivial nor perfect


def test_metrics_by_hand() -> None:
    # clip 0 owns captions 0, 1; clip 1 owns caption 2
    similarity = np.array([[0.1, 0.9, 0.5],
                           [0.8, 0.2, 0.3]])
    owner = np.array([0, 0, 1])
    a2t = audio_to_text(similarity, owner)
    # clip 0: caption order 1, 2, 0 -> its captions at positions 1 and 3: rank 0, AP = (1/1 + 2/3) / 2
    # clip 1: caption order 0, 2, 1 -> its caption at position 2: rank 1, AP = (1/2) / 1
    assert a2t["R@1"] == 0.5 and a2t["R@5"] == 1.0
    assert a2t["mAP@10"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    assert a2t["medR"] == 1.0 and a2t["meanR"] == 1.5
    t2a = text_to_audio(similarity, owner)
    # caption 0 ranks clip 1 first (rank 1), caption 1 its clip first (0), caption 2 clip 0 first (1)
    assert t2a["R@1"] == pytest.approx(1 / 3)
    assert t2a["mAP@10"] == pytest.approx((0.5 + 1 + 0.5) / 3)


def _clip(path: Path, seed: int, rate: int = 48000, seconds: float = 1.0) -> None:
    tone = np.sin(2 * np.pi * (200 + 150 * seed) * np.arange(int(rate * seconds)) / rate)
    write_audio(path, (0.3 * tone + 0.01 * np.random.default_rng(seed).standard_normal(len(tone))).astype(np.float32),
                rate)


def make_clotho_tree(root: Path, n_valid: int = 3, n_test: int = 6) -> Path:
    for name, count, offset in (("validation", n_valid, 0), ("evaluation", n_test, 100)):
        rows = []
        for i in range(count):
            file = f"clip {offset + i}.wav"  # Clotho's names have spaces
            _clip(root / name / file, offset + i)
            rows.append([file, *(f"sound {offset + i} number {j}, heard" for j in range(5))])
        pd.DataFrame(rows, columns=["file_name", *(f"caption_{j}" for j in range(1, 6))]).to_csv(
            root / f"clotho_captions_{name}.csv", index=False)
    (root / "development").mkdir()  # not read: retrieval uses validation and evaluation only
    return root


def test_clotho_official_layout(tmp_path: Path, evar_dirs: Path) -> None:
    root = make_clotho_tree(tmp_path / "clotho")
    task = evar.prepare_task("clotho", root)
    assert task.spec.kind == "captions" and task.spec.metric == "t2a_mAP@10"
    assert list(task.meta["split"]) == ["valid"] * 3 + ["test"] * 6
    assert task.meta["file"].iloc[3] == "evaluation/clip 100.wav"
    assert load_task("clotho").captions()[3] == [f"sound 100 number {j}, heard" for j in range(5)]
    assert list(task.first_train_rows()) == [0, 1, 2]  # calibration on valid, as EVAR's retrieval
    (root / "clotho_captions_evaluation.csv").write_text("file_name,caption_1\nclip 100.wav,a\n")
    with pytest.raises(EvarError, match="missing column.*caption_2"):
        evar.prepare_task("clotho", root)
    make_clotho_tree(tmp_path / "blank", n_test=1)
    table = pd.read_csv(tmp_path / "blank/clotho_captions_evaluation.csv")
    table.loc[0, "caption_3"] = " "
    table.to_csv(tmp_path / "blank/clotho_captions_evaluation.csv", index=False)
    with pytest.raises(EvarError, match="clip 100.wav: needs one or more non-empty captions"):
        evar.prepare_task("clotho", tmp_path / "blank")


def test_audiocaps_official_layout_leaves_out_missing_clips(tmp_path: Path, evar_dirs: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "audiocaps"
    ids = ["abcdefghijk", "Yxcvbnmasdf", "-0123456789", "zzzzzzzzzzz"]
    lists = {"val": [(1, ids[0], 30, "a dog barks"), (2, ids[0], 30, "barking")],
             "test": [(3, ids[1], 0, "rain falls"), (4, ids[2], 10, "a car passes"), (5, ids[1], 0, "rain"),
                      (6, ids[3], 0, "never downloaded")]}
    root.mkdir()
    for split, rows in lists.items():
        pd.DataFrame(rows, columns=["audiocap_id", "youtube_id", "start_time", "caption"]).to_csv(
            root / f"{split}.csv", index=False)
    _clip(root / "val" / f"Y{ids[0]}_30000.wav", 0)  # ACT's naming: Y + id
    _clip(root / "test" / f"Y{ids[1]}.wav", 1)
    _clip(root / "test" / f"{ids[2]}.wav", 2)  # plain id
    task = evar.prepare_task("audiocaps", root)
    assert list(task.meta["file"]) == [f"val/Y{ids[0]}_30000.wav", f"test/{ids[2]}.wav", f"test/Y{ids[1]}.wav"]
    assert task.captions() == [["a dog barks", "barking"], ["a car passes"], ["rain falls", "rain"]]
    assert "audiocaps test: 1 of 3 clips have no audio" in capsys.readouterr().err


def test_retrieval_probe_scores_the_cached_embeddings(tmp_path: Path, evar_dirs: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    clap = clap_with_char_tokenizer(tmp_path)
    root = make_clotho_tree(tmp_path / "clotho", n_valid=2, n_test=6)
    assert main(["prepare", "clotho", "--root", str(root)]) == 0
    assert main(["probe", "--task", "clotho", "--model", "clap", "--weights", str(clap),
                 "--protocol", "retrieval", "--text-batch", "7"]) == 0
    out = capsys.readouterr().out
    assert "clap on clotho (6 clips, 30 captions)" in out and "t2a: R@1" in out
    row = pd.read_csv(evar_dirs / "results" / "scores.csv").iloc[0]
    settings = json.loads(row["settings"])
    assert row["protocol"] == "retrieval" and row["metric"] == "t2a_mAP@10" and row["n_folds"] == 1
    task = load_task("clotho")
    X = evar.api.embed(ModelChoice("clap", weights=str(clap)), task="clotho")  # the cache
    test = np.flatnonzero(task.meta["split"] == "test")
    captions = [c for r in test for c in task.captions()[r]]
    text = evar.create_encoder("clap", weights=str(clap)).embed_text(captions).numpy()
    expected = reference_scores(cosine_similarity(X[test], text), np.repeat(np.arange(6), 5))
    assert settings["retrieval"]["a2t"] == pytest.approx(expected["a2t"], abs=1e-6)
    assert settings["retrieval"]["t2a"] == pytest.approx(expected["t2a"], abs=1e-6)
    assert row["score"] == pytest.approx(expected["t2a"]["mAP@10"], abs=1e-6)
    assert main(["leaderboard", "--protocol", "retrieval"]) == 0
    table = capsys.readouterr().out
    assert "Clotho" in table and f"{100 * expected['t2a']['mAP@10']:.1f}" in table and "t2a_mAP@10" in table
    assert main(["probe", "--task", "clotho", "--model", "melspec", "--protocol", "retrieval"]) == 2
    assert "retrieval needs an encoder with a text tower" in capsys.readouterr().err
    assert main(["probe", "--task", "clotho", "--model", "clap", "--protocol", "knn"]) == 2
    assert "caption task: its protocol is retrieval" in capsys.readouterr().err


def test_a_clip_without_embedding_is_left_out_with_its_captions(tmp_path: Path, evar_dirs: Path) -> None:
    from evar.protocols.retrieval import RetrievalRounds, test_captions

    task = evar.prepare_task("clotho", make_clotho_tree(tmp_path / "clotho", n_valid=1, n_test=4))
    rows, owner, captions = test_captions(task)
    assert list(rows) == [1, 2, 3, 4] and len(captions) == 20 and list(owner[:6]) == [0] * 5 + [1]
    rng = np.random.default_rng(1)
    X, text = rng.standard_normal((5, 8)), rng.standard_normal((20, 8))
    X[2] = np.nan  # the second test clip failed to decode
    rounds = RetrievalRounds(X, task, text)
    score = rounds.fit_score(0, 42)
    kept = np.r_[0:5, 10:20]
    expected = reference_scores(cosine_similarity(X[[1, 3, 4]], text[kept]), np.repeat(np.arange(3), 5))
    assert score == pytest.approx(expected["t2a"]["mAP@10"]) and rounds.recorded()["test_captions"] == 15
