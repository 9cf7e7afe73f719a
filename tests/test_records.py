"""Run records: written beside every row, validated against themselves and scores.csv; tampering is caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evar.cli import main
from evar.synth.trees import make_esc50_tree


@pytest.fixture
def recorded(tmp_path: Path, evar_dirs: Path) -> Path:
    root = make_esc50_tree(tmp_path / "ESC-50-master", n_classes=3, clips_per_class_per_fold=1, sample_rate=16000,
                           seconds=0.5)
    assert main(["prepare", "esc50", "--root", str(root)]) == 0
    assert main(["probe", "--task", "esc50", "--model", "melspec", "--max-epochs", "3", "--seeds", "1,2"]) == 0
    (record,) = (evar_dirs / "results" / "records").glob("*.json")
    return record


def test_a_probe_writes_its_record(recorded: Path, capsys: pytest.CaptureFixture) -> None:
    record = json.loads(recorded.read_text())
    assert record["schema"] == 2 and record["run"]["run_id"] == recorded.stem
    assert record["run"]["model"] == "melspec" and len(record["run"]["fold_scores"]) == 5
    assert record["task_data"]["clips"] == 15 and len(record["task_data"]["sha256"]) == 64
    assert {"evar", "python", "torch", "transformers", "numpy", "platform", "git_commit"} <= set(record["environment"])
    assert record["encoder"] == {"name": "melspec", "weights": "", "weights_sha256": "", "hub": None}
    run = record["provenance"]
    assert run["device"] == "cpu" and run["compute_dtype"] == "float32" and run["embedding_dtype"] == "float32"
    assert set(run["stages_sec"]) == {"decode", "embedding", "probe"}  # melspec needs no statistics pass
    assert all(0 <= t <= run["wall_sec"] for t in run["stages_sec"].values())
    assert run["clips_embedded"] == 15 and run["clips_per_sec"] > 0 and run["embeddings"] == {"cached": False}
    assert run["peak_rss_mb"] > 50 and run["peak_device_mb"] is None
    # a log-mel front end: the mel matrix product counted (2 FLOPs per multiply-add), no parameters
    frames, bins, mels = 1 + 5 * 16000 // 160, 400 // 2 + 1, 64  # ESC-50's 5-s unit, melspec's STFT and bank
    assert run["cost"]["params"] == 0 and run["cost"]["counted_on_sec"] == 5.0
    assert run["cost"]["gflops_per_audio_second"] == pytest.approx(2 * frames * bins * mels / 5 / 1e9, rel=0.01)
    capsys.readouterr()
    assert main(["results", "validate"]) == 0
    assert "records: 0 problem(s), 1 non-standard setting(s)" in capsys.readouterr().out  # max_epochs 3


def test_a_rerun_from_the_cache_says_so_with_what_computing_took(recorded: Path, evar_dirs: Path) -> None:
    assert main(["probe", "--task", "esc50", "--model", "melspec", "--max-epochs", "3"]) == 0
    (again,) = set((evar_dirs / "results" / "records").glob("*.json")) - {recorded}
    run = json.loads(again.read_text())["provenance"]
    assert run["embeddings"]["cached"] is True and run["embeddings"]["computed"]["clips"] == 15
    assert run["clips_embedded"] == 0 and set(run["stages_sec"]) == {"probe"}
    assert run["cost"] == json.loads(recorded.read_text())["provenance"]["cost"]


def test_an_autocast_run_records_its_compute_type(recorded: Path, evar_dirs: Path) -> None:
    assert main(["probe", "--task", "esc50", "--model", "melspec", "--max-epochs", "3", "--autocast", "bfloat16"]) == 0
    (again,) = set((evar_dirs / "results" / "records").glob("*.json")) - {recorded}
    record = json.loads(again.read_text())
    assert record["provenance"]["compute_dtype"] == "bfloat16" and record["run"]["settings"]["autocast"] == "bfloat16"
    assert record["provenance"]["embeddings"] == {"cached": False}  # not the float32 cache entry


@pytest.mark.parametrize("tamper, message", [
    (lambda r: r["run"].update(score=0.99), "does not follow from the fold scores"),
    (lambda r: r["run"]["fold_scores"].pop(), "4 round(s) of scores for n_folds 5"),
    (lambda r: (r["run"]["fold_scores"].pop(), r["run"].update(n_folds=4)), "4 round(s) recorded, but esc50 has 5"),
    (lambda r: r["provenance"].pop("cost"), "missing field(s) ['provenance.cost']"),
    (lambda r: r["run"]["fold_scores"][2].pop(), "a round lacks scores for some of the 2 seed(s)"),
    (lambda r: r["run"]["settings"].update(lr=0.01), "settings differs from its row"),
])
def test_a_tampered_record_fails_with_a_clear_line(recorded: Path, capsys: pytest.CaptureFixture, tamper,
                                                   message: str) -> None:
    record = json.loads(recorded.read_text())
    tamper(record)
    recorded.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["results", "validate", str(recorded.parent)]) == 1
    out = capsys.readouterr().out
    assert message in out and str(recorded) in out


def test_non_standard_settings_are_noted(tmp_path: Path, evar_dirs: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_esc50_tree(tmp_path / "ESC-50-master", n_classes=3, clips_per_class_per_fold=1, sample_rate=16000,
                           seconds=0.5)
    assert main(["prepare", "esc50", "--root", str(root)]) == 0
    assert main(["probe", "--task", "esc50", "--model", "melspec", "--max-epochs", "3", "--lr", "0.01"]) == 0
    capsys.readouterr()
    assert main(["results", "validate"]) == 0
    out = capsys.readouterr().out
    assert "non-standard linear setting lr=0.01 (standard 0.0003)" in out and "max_epochs=3" in out
    assert main(["results", "validate", "--strict"]) == 1


def test_export_then_import_into_another_results_folder(recorded: Path, tmp_path: Path, monkeypatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    shared = tmp_path / "shared"
    assert main(["results", "export", str(shared)]) == 0
    (exported,) = shared.glob("*.json")
    assert exported.name == "melspec__esc50__linear.json"
    monkeypatch.setenv("EVAR_RESULTS_DIR", str(tmp_path / "theirs"))
    assert main(["results", "import", str(shared)]) == 0
    assert main(["results", "import", str(shared)]) == 0  # again: nothing duplicated
    out = capsys.readouterr().out
    assert "imported 1 run(s)" in out and "imported 0 run(s)" in out and "1 already here" in out
    theirs = tmp_path / "theirs"
    assert len((theirs / "scores.csv").read_text().strip().splitlines()) == 2  # header + the one row
    assert json.loads((theirs / "records" / f"{recorded.stem}.json").read_text()) == json.loads(recorded.read_text())
    assert main(["results", "validate"]) == 0
    broken = json.loads(exported.read_text())
    broken["run"]["score"] = 0.5
    exported.write_text(json.dumps(broken))
    assert main(["results", "import", str(shared)]) == 2
    assert "refused, nothing imported" in capsys.readouterr().err


def test_a_sweep_job_records_its_embedding_and_probe_time(tmp_path: Path, evar_dirs: Path) -> None:
    root = make_esc50_tree(tmp_path / "ESC-50-master", n_classes=3, clips_per_class_per_fold=1, sample_rate=16000,
                           seconds=0.5)
    assert main(["prepare", "esc50", "--root", str(root)]) == 0
    assert main(["sweep", "--models", "melspec", "--tasks", "esc50", "--max-epochs", "3"]) == 0
    (path,) = (evar_dirs / "results" / "records").glob("*.json")
    run = json.loads(path.read_text())["provenance"]
    assert {"embedding", "probe"} <= set(run["stages_sec"]) and run["clips_embedded"] == 15
    assert run["wall_sec"] >= sum(run["stages_sec"].values()) - 1e-3 and run["cost"]["params"] == 0
    assert main(["results", "validate"]) == 0


def test_a_run_from_the_cache_does_not_import_transformers() -> None:
    """Building a log-mel encoder (its filter bank waits for the first forward) and recording a run leave
    transformers unimported (about 0.6 s of every warm probe); the first forward imports it for the bank."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from evar.options import ModelChoice\n"
            "from evar.results.records import environment\n"
            "encoder = ModelChoice('melspec').build('cpu')\n"
            "assert environment()['transformers']\n"
            "before = 'transformers' in sys.modules\n"
            "encoder.embed(torch.zeros(1, 16000))\n"
            "print(before, 'transformers' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
