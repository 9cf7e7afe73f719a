"""Leaderboard tables from a results store built here: cells, bold, averages, variants, formats, published numbers."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest

from evar.errors import EvarError
from evar.results.leaderboard import build_leaderboard, leaderboard_text, parse_names, run_list, task_groups
from evar.results.page import page_data
from evar.results.runs import load_published, published_path
from evar.results.store import append_result, read_results


def add(date: str, model: str, task: str, score: float, std: float | str, layers: str = "", lr: float = 3e-4,
        sha: str = "w1", protocol: str = "linear", device: str = "cpu", **extra) -> None:
    """One recorded run; ``settings`` as evar.api.probe writes them (plus ``extra``)."""
    settings = {"lr": lr, "max_epochs": 200, "patience": 20, "unit_sec": {"esc50": 5.0}.get(task, 4.0),
                "encoder": {"class": model, "weights_sha256": sha}, "device": device, **extra}
    append_result({"date": date, "protocol": protocol, "model": model, "layers": layers, "task": task,
                   "metric": "accuracy", "score": score, "std": std, "n_folds": 5, "fold_scores": [[score]] * 5,
                   "seeds": [42], "weights": "", "weights_sha256": sha, "settings": settings})


@pytest.fixture
def results() -> pd.DataFrame:
    """Several models, tasks, fusion, superseded runs, two settings, layer-wise and fine-tuning rows."""
    add("2025-01-01T10:00:00+00:00", "byola", "esc50", 0.801, 0.010)  # superseded by the next
    add("2025-01-02T10:00:00+00:00", "byola", "esc50", 0.8321, 0.0042)
    add("2025-01-02T10:00:01+00:00", "byola", "us8k", 0.785, 0.031)
    add("2025-01-02T10:00:02+00:00", "byola", "spcv2", 0.889, 0.0, device="cuda")
    add("2025-01-01T09:00:00+00:00", "byola", "spcv2", 0.700, 0.0)  # recorded later, but older: loses
    add("2025-01-02T11:00:00+00:00", "cnn14", "esc50", 0.883, 0.006, sha="c1")
    add("2025-01-02T11:00:01+00:00", "cnn14", "us8k", 0.820, 0.020, sha="c1")
    add("2025-01-02T11:00:02+00:00", "cnn14", "spcv2", 0.514, 0.002, sha="c1")
    add("2025-01-02T12:00:00+00:00", "cnn14", "esc50", 0.930, 0.005, layers="2,5", sha="c1")
    add("2025-01-02T12:00:01+00:00", "cnn14", "us8k", 0.858, 0.010, layers="2,5", sha="c1")
    add("2025-01-02T13:00:00+00:00", "my_model", "esc50", 0.600, 0.010, sha="m1")
    add("2025-01-02T13:00:01+00:00", "my_model", "esc50", 0.650, 0.010, lr=1e-3, sha="m1")
    add("2025-01-02T13:00:02+00:00", "my_model", "us8k", 0.700, "", lr=1e-3, sha="m1")
    for layer in range(3):
        add(f"2025-01-03T10:00:0{layer}+00:00", "cnn14", "esc50", 0.5 + 0.1 * layer, 0.01, layers=str(layer),
            sha="c1", layer_wise=True)
    add("2025-01-04T10:00:00+00:00", "byola", "esc50", 0.950, 0.001, protocol="finetune")
    return read_results()


def md_table(text: str) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """Header, {row label: cells}, and the lines after the table."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    split = lambda line: [c.strip() for c in line.strip().strip("|").split(" | ")]  # noqa: E731
    header = split(lines[start])
    rows = {split(line)[0]: split(line)[1:] for line in lines[start + 2:end]}
    return header, rows, [line for line in lines[end:] if line]


def test_markdown_cells_bold_average_latest(results: pd.DataFrame) -> None:
    header, rows, notes = md_table(leaderboard_text(results))
    assert header == ["Model", "ESC-50", "US8K", "SPCV2", "Avg."]
    assert list(rows)[:3] == ["byola", "cnn14", "cnn14+2,5"]
    # latest run wins (80.1 and the older-dated 70.0 are superseded); the cuda run is not a separate setting
    assert rows["byola"] == ["83.2 ± 0.4", "78.5 ± 3.1", "**88.9 ± 0.0**", "**83.5**"]
    assert rows["cnn14"] == ["88.3 ± 0.6", "82.0 ± 2.0", "51.4 ± 0.2", "73.9"]
    # best per column in bold; an average over fewer tasks is marked and not ranked
    assert rows["cnn14+2,5"] == ["**93.0 ± 0.5**", "**85.8 ± 1.0**", "–", "89.4†"]
    assert any(n.startswith("† average over the tasks this model has (cnn14+2,5 lacks spcv2") for n in notes)
    # layer-wise probes and fine-tuning rows stay out of the linear table
    assert not any(r.startswith("cnn14+0") or r.startswith("cnn14+1") for r in rows)
    assert "3 layer-wise probe run(s) are not shown; plot them with: evar plot layers." in notes


def test_different_settings_are_separate_rows(results: pd.DataFrame) -> None:
    _, rows, notes = md_table(leaderboard_text(results))
    variants = sorted(r for r in rows if r.startswith("my_model"))
    assert len(variants) == 2 and all(re.fullmatch(r"my_model \[s:[0-9a-f]{6}\]", r) for r in variants)
    cells = {tuple(rows[r][:2]) for r in variants}
    assert cells == {("60.0 ± 1.0", "–"), ("65.0 ± 1.0", "70.0")}  # us8k ran with lr 1e-3 only; no std recorded
    note = next(n for n in notes if n.startswith("my_model has runs with different settings or weights on esc50"))
    assert "lr=0.0003" in note and "lr=0.001" in note and "never averaged" in note


def test_different_weights_are_separate_rows() -> None:
    add("2025-01-01T00:00:00+00:00", "byola", "esc50", 0.80, 0.01, sha="aaaaaaaa11")
    add("2025-01-01T00:00:01+00:00", "byola", "esc50", 0.70, 0.01, sha="bbbbbbbb22")
    _, rows, notes = md_table(leaderboard_text())
    assert rows == {"byola [w:aaaaaa]": ["**80.0 ± 1.0**"], "byola [w:bbbbbb]": ["70.0 ± 1.0"]}
    assert any("[w:aaaaaa] weights (path not recorded) sha256 aaaaaaaa11; [w:bbbbbb] weights" in n for n in notes)


def test_latex_booktabs_bold_escaping(results: pd.DataFrame) -> None:
    tex = leaderboard_text(results, fmt="latex", groups=True)
    lines = tex.splitlines()
    assert [tex.count(rule) for rule in (r"\toprule", r"\midrule", r"\bottomrule")] == [1, 1, 1]
    assert r"\begin{tabular}{lcccccc}" in tex and r"\end{table}" in tex and r"(\%)" in tex
    assert r" & \multicolumn{2}{c}{SER} & \multicolumn{1}{c}{NOSS} &  &  &  \\" in lines
    assert r"Model & ESC-50 & US8K & SPCV2 & Avg. & SER avg. & NOSS avg. \\" in lines
    assert (r"cnn14+2,5 & \textbf{93.0 $\pm$ 0.5} & \textbf{85.8 $\pm$ 1.0} & -- & 89.4$^\dagger$ & \textbf{89.4} & -- \\"
            in lines)
    assert r"byola & 83.2 $\pm$ 0.4 & 78.5 $\pm$ 3.1 & \textbf{88.9 $\pm$ 0.0} & \textbf{83.5} & 80.9 & \textbf{88.9} \\" \
        in lines
    body = [line for line in lines if line.startswith("my") or line.startswith("byola") or line.startswith("cnn14")]
    assert len(body) == 5 and all(line.count(" & ") == 6 for line in body)
    assert all(line.startswith(r"my\_model [s:") for line in body if line.startswith("my"))


def test_compare_published(results: pd.DataFrame) -> None:
    _, rows, notes = md_table(leaderboard_text(results, compare_published=True))
    assert rows["cnn14"][0] == "88.3 ± 0.6 (pub. 90.1, −1.8)"  # EUSIPCO 2022 Table III, the file's first source
    assert rows["cnn14"][1] == "82.0 ± 2.0 (pub. 82.0, 0.0)"
    assert rows["cnn14"][3] == "73.9 (pub. 74.5, −0.6)"  # published mean over the same three tasks
    assert rows["cnn14+2,5"][0] == "**93.0 ± 0.5** (pub. 93.0, 0.0)"
    assert rows["byola"][:3] == ["83.2 ± 0.4", "78.5 ± 3.1 (pub. 78.2, +0.3)", "**88.9 ± 0.0** (pub. 88.9, 0.0)"]
    assert all("pub." not in cell for r in rows if r.startswith("my_model") for cell in rows[r])  # none published
    assert any("cnn14: Niizumi et al., EUSIPCO 2022, Table III" in n for n in notes)
    _, readme, _ = md_table(leaderboard_text(results, compare_published=True, published_source="row 'PANNs CNN14'"))
    assert readme["cnn14"][0] == "88.3 ± 0.6 (pub. 90.7, −2.4)"


def test_groups_filters_and_order(results: pd.DataFrame) -> None:
    header, rows, _ = md_table(leaderboard_text(results, groups=True))
    assert header[-3:] == ["Avg.", "SER avg.", "NOSS avg."]  # no music task has results: no Music column
    assert rows["byola"][-2:] == ["80.9", "**88.9**"]
    header, rows, _ = md_table(leaderboard_text(results, tasks=["us8k", "esc50"], models=parse_names("cnn14+2,5,byola")))
    assert header == ["Model", "US8K", "ESC-50", "Avg."]
    assert list(rows) == ["cnn14+2,5", "byola"]
    assert rows["cnn14+2,5"] == ["**85.8 ± 1.0**", "**93.0 ± 0.5**", "**89.4**"]
    _, rows, _ = md_table(leaderboard_text(results, models=["cnn14"]))
    assert list(rows) == ["cnn14", "cnn14+2,5"]  # a model name matches its fusion labels too
    _, rows, _ = md_table(leaderboard_text(results, protocol="finetune"))
    assert rows == {"byola": ["**95.0 ± 0.1**"]}
    with pytest.raises(EvarError, match="no results for task\\(s\\) gtzan; tasks with results: esc50, us8k, spcv2"):
        build_leaderboard(results, tasks=["gtzan"])
    with pytest.raises(EvarError, match="no results for model\\(s\\) ast"):
        build_leaderboard(results, models=["ast"])


def test_all_runs_csv_html(results: pd.DataFrame) -> None:
    runs = run_list(results)
    assert len(runs) == 16 and list(runs["score"].round(2))[:3] == [70.0, 80.1, 83.21]  # oldest first
    _, rows, _ = md_table(leaderboard_text(results, all_runs=True))
    assert len(rows) == 16 and rows[runs["date"][1]][3] == "80.1 ± 1.0"
    table = pd.read_csv(io.StringIO(leaderboard_text(results, fmt="csv")), index_col="model")
    assert table.loc["byola", "esc50"] == pytest.approx(83.21) and table.loc["byola", "esc50_std"] == pytest.approx(0.42)
    assert table.loc["cnn14+2,5", "average"] == pytest.approx(89.4) and table.loc["cnn14+2,5", "average_n_tasks"] == 2
    page = page_data(leaderboard_text(results, fmt="html"))["tables"]["linear"]  # the page (browser-tested elsewhere)
    cells = {row["label"]: row["cells"] for row in page["rows"]}
    assert any(c.get("esc50", {}).get("score") == 93.0 and c["esc50"]["std"] == 0.5 for c in cells.values())
    assert any(label.startswith("my_model [s:") for label in cells)
    assert "<td>" in leaderboard_text(results, fmt="html", all_runs=True)  # the run list stays an HTML table
    with pytest.raises(EvarError, match="unknown format 'docx'"):
        leaderboard_text(results, fmt="docx")


def test_empty_store_is_a_clear_error() -> None:
    with pytest.raises(EvarError, match="no linear results yet; run: evar probe"):
        leaderboard_text()


# Every number of the protocol note's tables (EUSIPCO 2022 Table III; BYOL-A README for the 512-d model), and the
# rows read from the EVAR README (BYOL-A v2, TASLP 2023) and the MSM-MAE README (the paper's weight)
PROTOCOL_NUMBERS = {
    "vggish": [68.2, 75.1, 14.3, 9.0, 75.7, 44.4, 75.3, 53.9, 8.8],
    "cnn14": [90.1, 82.0, 51.4, 8.0, 75.0, 50.7, 79.7, 66.0, 10.4],
    "ast": [93.5, 85.5, 71.8, 16.5, 81.2, 57.9, 84.3, 73.2, 25.8],
    "vggish+9,14": [86.5, 80.9, 91.4, 54.5, 91.6, 59.3, 70.8, 73.6, 33.3],
    "cnn14+2,5": [93.0, 85.8, 91.3, 50.6, 90.5, 59.0, 77.4, 73.8, 32.4],
    "ast+4,11": [94.2, 85.5, 80.4, 24.9, 87.6, 60.7, 82.9, 77.6, 34.6],
    "byola": [None, 78.2, 88.9, 33.4, 83.5, None, None, 69.1, None],
    "byola2": [83.2, 79.7, 93.1, 57.6, 93.3, 63.8, 70.1, 73.1, 37.6],
    "msm_mae_paper": [89.1, 84.3, 93.1, 56.1, 97.5, 70.1, 79.3, 76.9, 37.5],
}


def test_published_file_matches_the_protocol_numbers() -> None:
    raw = pd.read_csv(published_path(), dtype=str, keep_default_na=False)
    assert list(raw.columns) == ["model", "task", "score", "source"]
    assert (raw["source"].str.len() > 10).all() and not raw.duplicated(["model", "task", "source"]).any()
    tasks = [t for group in task_groups().values() for t in group]
    assert set(raw["task"]) <= set(tasks)
    assert raw["score"].astype(float).between(0, 100).all()
    published = load_published().set_index(["model", "task"])["score"]
    for model, numbers in PROTOCOL_NUMBERS.items():
        for task, number in zip(tasks, numbers):
            assert published.get((model, task)) == number, (model, task)
    # the 9-task average of EUSIPCO 2022 Table III is reproduced from the per-task numbers
    assert round(sum(PROTOCOL_NUMBERS["cnn14+2,5"]) / 9, 1) == 72.6


def test_load_published_errors(tmp_path) -> None:
    bad = tmp_path / "published.csv"
    bad.write_text("model,task,score\nx,esc50,1\n")
    with pytest.raises(EvarError, match="missing column\\(s\\) source"):
        load_published(bad)
    bad.write_text("model,task,score,source\nx,esc50,n/a,paper\n")
    with pytest.raises(EvarError, match="row 2 has no numeric score"):
        load_published(bad)
    with pytest.raises(EvarError, match="no row has a source containing 'nowhere'"):
        load_published(source="nowhere")


def test_finetune_outcomes_are_not_settings(tmp_path) -> None:
    """Two fine-tuning runs with the same settings are one variant even though their best epochs differ."""
    from evar.results.runs import settings_hash

    base = {"lr": 0.001, "epochs": 200, "device": "cuda"}
    first = {**base, "best_epochs": [3, 4], "run_dir": "results/finetune/esc50/byola-a"}
    second = {**base, "best_epochs": [7, 1], "run_dir": "results/finetune/esc50/byola-b", "device": "cpu"}
    assert settings_hash(first) == settings_hash(second) != settings_hash({**base, "lr": 0.01})


def test_weighted_average_uses_each_tasks_test_clips(tmp_path) -> None:
    import evar
    from evar.synth.trees import make_esc50_tree, make_nsynth_tree

    evar.prepare_task("esc50", make_esc50_tree(tmp_path / "ESC-50-master", n_classes=2, clips_per_class_per_fold=2,
                                               sample_rate=16000, seconds=0.3))  # 20 test clips over the folds
    evar.prepare_task("nsynth", make_nsynth_tree(tmp_path / "nsynth"))  # 6 test notes
    add("2025-01-02T10:00:00+00:00", "byola", "esc50", 0.80, 0.01)
    add("2025-01-02T10:00:01+00:00", "byola", "nsynth", 0.50, 0.01)
    plain = build_leaderboard(read_results())
    weighted = build_leaderboard(read_results(), average="weighted")
    assert plain.average()[0]["byola"] == pytest.approx(65.0)
    assert weighted.average()[0]["byola"] == pytest.approx((20 * 80 + 6 * 50) / 26)
    assert any("weighted by each task's test clips (X-ARES): esc50 20, nsynth 6" in n for n in weighted.notes)
    assert any("plain mean over tasks (EVAR)" in n for n in plain.notes)
    add("2025-01-02T10:00:02+00:00", "byola", "us8k", 0.50, 0.01)  # not prepared: its size is unknown
    with pytest.raises(EvarError, match="--average weighted needs each task's test size"):
        build_leaderboard(read_results(), average="weighted")
