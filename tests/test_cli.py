"""The evar command end to end: list, prepare, embed, probe (real BYOL-A weights), leaderboard, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import evar
from evar.cli import main
from evar.encoders.byola import BYOLAEncoder
from evar.results.plots import layer_scores
from evar.synth.trees import make_esc50_tree


@pytest.fixture
def esc50_root(tmp_path: Path) -> Path:
    return make_esc50_tree(tmp_path / "ESC-50-master", n_classes=3, clips_per_class_per_fold=2, sample_rate=22050, seconds=1.0)


def test_probe_byola_end_to_end_and_cache_reuse(esc50_root: Path, evar_dirs: Path, byola512_weights: Path,
                                                 monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    calls = []
    original = BYOLAEncoder.forward_frames
    monkeypatch.setattr(BYOLAEncoder, "forward_frames", lambda self, wav: calls.append(len(wav)) or original(self, wav))
    assert main(["prepare", "esc50", "--root", str(esc50_root)]) == 0
    args = ["probe", "--task", "esc50", "--model", "byola", "--weights", str(byola512_weights), "--max-epochs", "30"]
    assert main(args) == 0
    assert sum(calls) == 30 + 1  # every clip embedded once, and one clip's FLOPs counted for the record's cost
    assert main(args) == 0
    assert sum(calls) == 30 + 1  # second run: cached embeddings and cost (in the manifest), no encoder call
    out = capsys.readouterr().out
    assert "byola on esc50: accuracy" in out
    rows = pd.read_csv(evar_dirs / "results" / "scores.csv")
    assert len(rows) == 2 and set(rows["model"]) == {"byola"} and (rows["n_folds"] == 5).all()
    assert rows["weights_sha256"][0] == "6cc64226318494f06ef41d7e5810be7d37abfd6490da45abdab48f188c5332e2"
    assert rows["score"][0] == rows["score"][1] > 1 / 3  # same seed, same embeddings, better than chance
    assert main(["leaderboard"]) == 0
    assert "| byola |" in capsys.readouterr().out


def test_list_and_embed_files(esc50_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert "melspec" in out and "byola" in out and "not downloaded" in out
    main(["prepare", "esc50", "--root", str(esc50_root)])
    assert main(["list", "tasks"]) == 0
    assert "prepared: 30 files, 3 classes" in capsys.readouterr().out
    out_file = tmp_path / "x.npy"
    assert main(["embed", "--model", "melspec", str(esc50_root / "audio" / "1-*.wav"), "--out", str(out_file)]) == 0
    whole = np.load(out_file)
    assert whole.shape == (6, 128) and np.isfinite(whole).all()
    # cropped to a unit: batched (default batch size from the duration), every row filled
    assert main(["embed", "--model", "melspec", str(esc50_root / "audio" / "1-*.wav"), "--out", str(out_file),
                 "--unit-sec", "0.5"]) == 0
    cropped = np.load(out_file)
    assert cropped.shape == (6, 128) and np.isfinite(cropped).all() and not np.allclose(cropped, whole)


@pytest.mark.parametrize("argv, message", [
    (["probe", "--task", "esc50", "--model", "nope"], "unknown model 'nope'"),
    (["probe", "--task", "esc50", "--model", "melspec"], "task 'esc50' is not prepared; run: evar prepare esc50"),
    (["prepare", "esc50", "--root", "/no/such/dir"], "--root /no/such/dir: not a directory"),
    (["embed", "--model", "byola", "--weights", "/no/w.pth", "x.wav", "--out", "x.npy"], "weights file not found: /no/w.pth"),
    (["embed", "--model", "melspec"], "give either --task TASK or audio files"),
])
def test_user_mistakes_get_one_line_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evar: error: ") and message in err[0]


def test_layerwise_probe_one_embedding_pass(esc50_root: Path, evar_dirs: Path, byola512_weights: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = BYOLAEncoder.forward_layers
    monkeypatch.setattr(BYOLAEncoder, "forward_layers", lambda self, wav: calls.append(len(wav)) or original(self, wav))
    main(["prepare", "esc50", "--root", str(esc50_root)])
    assert main(["probe", "--task", "esc50", "--model", "byola", "--weights", str(byola512_weights),
                 "--layers", "all", "--max-epochs", "5"]) == 0
    assert sum(calls) == 30 + 1 + 1  # all clips once (+ the one-second probe that sizes the fusion, + the cost count)
    rows = pd.read_csv(evar_dirs / "results" / "scores.csv", dtype={"layers": str})
    assert list(rows["layers"]) == ["0", "1", "2", "3", "4"]
    scores = layer_scores("byola", "esc50")
    assert scores["layer"].tolist() == [0, 1, 2, 3, 4] and scores["variant"].nunique() == 1  # one curve
    assert main(["plot", "layers", "--model", "byola", "--task", "esc50", "--out", str(evar_dirs / "layers.png")]) == 0
    assert (evar_dirs / "layers.png").stat().st_size > 5000
    assert [json.loads(s)["layer_name"] for s in rows["settings"]] == ["conv1", "conv2", "conv3", "fc1", "fc2"]


def test_prepare_custom_and_download_usage(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_esc50_tree(tmp_path / "esc", n_classes=2, clips_per_class_per_fold=1, sample_rate=16000, seconds=0.5)
    rows = pd.read_csv(root / "meta" / "esc50.csv")
    pd.DataFrame({"file": "audio/" + rows["filename"], "label": rows["category"], "fold": rows["fold"]}).to_csv(
        tmp_path / "mine.csv", index=False)
    assert main(["prepare", "custom", "--csv", str(tmp_path / "mine.csv"), "--root", str(root), "--name", "mine"]) == 0
    assert main(["list", "tasks"]) == 0
    assert "prepared: 10 files, 2 classes" in capsys.readouterr().out
    assert main(["prepare", "custom", "--root", str(root)]) == 2
    assert "needs --csv FILE and --name NAME" in capsys.readouterr().err
    assert main(["download", "vc1", "--to", str(tmp_path)]) == 2
    assert "registration" in capsys.readouterr().err.lower()


def test_model_options_reach_the_encoder(esc50_root: Path, evar_dirs: Path, byola512_weights: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    main(["prepare", "esc50", "--root", str(esc50_root)])
    base = ["probe", "--task", "esc50", "--model", "byola", "--weights", str(byola512_weights), "--max-epochs", "3"]
    assert main(base + ["--model-options", '{"mel": "byola"}']) == 0
    rows = pd.read_csv(evar_dirs / "results" / "scores.csv")
    assert json.loads(rows["settings"][0])["encoder"]["mel"] == "byola"  # the HTK convention was used and recorded
    assert main(base + ["--model-options", '{"colour": "red"}']) == 2
    assert "byola takes no option colour; its options: mel, allow_download" in capsys.readouterr().err


def test_embed_files_with_fixed_statistics(esc50_root: Path, tmp_path: Path, byola512_weights: Path) -> None:
    wavs = sorted((esc50_root / "audio").glob("1-*.wav"))[:2]
    out = tmp_path / "fixed.npy"
    assert main(["embed", "--model", "byola", "--weights", str(byola512_weights), *map(str, wavs),
                 "--stats=-5.0,4.0", "--out", str(out)]) == 0
    encoder = evar.load_encoder("byola", weights=str(byola512_weights))
    encoder.set_stats(-5.0, 4.0)
    expected = np.concatenate([encoder.embed(evar.audio.load_audio(w, 16000)).numpy() for w in wavs])
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-4)
    measured = tmp_path / "measured.npy"
    assert main(["embed", "--model", "byola", "--weights", str(byola512_weights), *map(str, wavs),
                 "--out", str(measured)]) == 0
    assert not np.allclose(np.load(measured), expected)  # statistics from the files themselves differ


def test_embed_in_shards_from_the_command_line(esc50_root: Path, evar_dirs: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    import evar.embeddings.cache

    monkeypatch.setattr(evar.embeddings.cache, "CHUNK_ROWS", 8)  # 30 clips: 4 chunks
    assert main(["prepare", "esc50", "--root", str(esc50_root)]) == 0
    assert main(["embed", "--model", "melspec", "--task", "esc50", "--shard", "1/2"]) == 0
    assert "2 of 4 chunks still to compute" in capsys.readouterr().err
    assert main(["embed", "--model", "melspec", "--task", "esc50", "--shard", "0/2"]) == 0
    assert "esc50: 30 x 128 (cached)" in capsys.readouterr().out
    assert main(["embed", "--model", "melspec", "--task", "esc50", "--shard", "2/2"]) == 2
    assert "0..N-1" in capsys.readouterr().err


def test_cli_starts_without_torch_or_pandas() -> None:
    """`evar --help` answers fast: importing the CLI loads neither torch nor pandas (the commands import them)."""
    import subprocess
    import sys

    code = "import sys, evar.cli; print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
