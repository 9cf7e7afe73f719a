"""Leaderboards for papers: model x task tables from ``results/scores.csv`` (Markdown, LaTeX, CSV, HTML).

Which runs count: of each (model, layers, weights sha256, task, protocol, settings), the run resting on
the most seeds, the latest among equals (``all_runs`` lists every run instead): a later one-seed run
does not hide a three-seed average. A note names the cells resting on fewer seeds than the others.
Runs with different settings or weights are never merged: when one (model, task) cell holds several,
the model's row is split into one row per variant, labelled with a short hash, and a footnote names the
settings that differ. Runs recorded by a layer-wise probe (``settings["layer_wise"]``) are left to ``evar plot layers``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from evar.errors import EvarError
from evar.results.runs import (
    RUN_ONLY_SETTINGS, TASK_SETTINGS, best_founded, compared_settings, load_published, prepare_runs, test_clips,
)
from evar.results.store import read_results
from evar.results.tables import (
    STYLES, Grid, Style, best_rows, format_number, format_signed, render_html, render_latex, render_markdown,
)

#: Display names of the tasks, in the order of the papers' tables (EUSIPCO 2022 Table III, EVAR README)
#: Column order of EVAR's papers (titles and groups are facts of each task's spec)
PAPER_ORDER = ("esc50", "us8k", "spcv2", "vc1", "voxforge", "cremad", "gtzan", "nsynth", "surge", "as20k", "as")
#: Task groups of EVAR's papers: sound event recognition, non-semantic speech, music
GROUP_ORDER = ("SER", "NOSS", "Music")


@functools.lru_cache(maxsize=None)
def task_title(name: str) -> str:
    """The task's name in tables (its spec's title: ``ESC-50``); the name itself for unknown tasks."""
    from evar.tasks import get_task_spec

    try:
        return get_task_spec(name).display_title
    except EvarError:
        return name


@functools.lru_cache(maxsize=None)
def task_groups() -> dict[str, tuple[str, ...]]:
    """Each group of EVAR's papers and its tasks (from the specs' ``group``), in paper order."""
    from evar.tasks import get_task_spec

    return {g: tuple(t for t in PAPER_ORDER if get_task_spec(t).group == g) for g in GROUP_ORDER}


FORMATS = ("md", "latex", "csv", "html")


def parse_names(text: str | None) -> list[str] | None:
    """Comma-separated names; a part made of digits belongs to the label before it (``byola,cnn14+3,6``)."""
    if not text:
        return None
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if part.lstrip("-").isdigit() and names and "+" in names[-1]:
            names[-1] += f",{part}"
        elif part:
            names.append(part)
    return names


def task_order(tasks: Sequence[str]) -> list[str]:
    """The papers' task order, then other tasks alphabetically."""
    known = [t for t in PAPER_ORDER if t in tasks]
    return known + sorted(set(tasks) - set(known))


def _filter(runs: pd.DataFrame, tasks: Sequence[str] | None, models: Sequence[str] | None) -> pd.DataFrame:
    if tasks:
        unknown = [t for t in tasks if t not in set(runs["task"])]
        if unknown:
            raise EvarError(f"no results for task(s) {', '.join(unknown)}; tasks with results: "
                            f"{', '.join(task_order(sorted(set(runs['task']))))}")
        runs = runs[runs["task"].isin(tasks)]
    if models:
        names = set(runs["model"]) | set(runs["label"])
        unknown = [m for m in models if m not in names]
        if unknown:
            raise EvarError(f"no results for model(s) {', '.join(unknown)}; models with results: "
                            f"{', '.join(sorted(set(runs['label'])))}")
        runs = runs[runs["model"].isin(models) | runs["label"].isin(models)]
    return runs


@dataclass
class Leaderboard:
    """Model x task scores in percent: ``mean`` and ``std`` (rows x tasks), with what to print beside them.

    ``rows`` are display labels (a model, its fusion layers, and a variant tag where runs with
    different settings or weights share a cell); ``base`` maps each row to its model label.
    """

    protocol: str
    tasks: list[str]
    rows: list[str]
    base: dict[str, str]
    mean: pd.DataFrame
    std: pd.DataFrame
    metrics: dict[str, str]
    runs: pd.DataFrame
    groups: list[str] = field(default_factory=list)
    published: pd.DataFrame | None = None
    published_sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: averages weighted by each task's test clips (X-ARES) instead of plain (EVAR); None: plain
    task_weights: dict[str, float] | None = None

    def average(self, tasks: Sequence[str] | None = None) -> tuple[pd.Series, pd.Series]:
        """Mean over ``tasks`` (default: all shown) per row, and whether the row has every one of them."""
        tasks = list(tasks or self.tasks)
        values = self.mean[tasks]
        if self.task_weights is None:
            return values.mean(axis=1, skipna=True), values.notna().all(axis=1)
        weights = pd.Series({t: self.task_weights[t] for t in tasks})
        present = values.notna()
        weighted = (values.fillna(0) * weights).sum(axis=1) / (present * weights).sum(axis=1).replace(0, float("nan"))
        return weighted, present.all(axis=1)

    def group_tasks(self) -> dict[str, list[str]]:
        """The shown tasks of each requested group."""
        return {g: [t for t in task_groups()[g] if t in self.tasks] for g in self.groups}

    def published_average(self, row: str, tasks: Sequence[str]) -> float | None:
        """The published mean over ``tasks`` when every one of them has a published number."""
        if self.published is None or self.base[row] not in self.published.index:
            return None
        values = self.published.loc[self.base[row], list(tasks)]
        return float(values.mean()) if values.notna().all() else None

    def to_frame(self) -> pd.DataFrame:
        """Numeric wide table: per task its mean, ``_std`` (and ``_published``), then averages."""
        frame = pd.DataFrame(index=pd.Index(self.rows, name="model"))
        for task in self.tasks:
            frame[task] = self.mean[task]
            frame[f"{task}_std"] = self.std[task]
            if self.published is not None:
                frame[f"{task}_published"] = [self._pub(r, task) for r in self.rows]
        average, complete = self.average()
        frame["average"] = average
        frame["average_n_tasks"] = self.mean[self.tasks].notna().sum(axis=1)
        for group, tasks in self.group_tasks().items():
            if tasks:
                frame[f"{group}_average"] = self.average(tasks)[0]
        return frame

    def _pub(self, row: str, task: str) -> float | None:
        if self.published is None or self.base[row] not in self.published.index or task not in self.published:
            return None
        value = self.published.loc[self.base[row], task]
        return None if pd.isna(value) else float(value)

    def _grid(self, style: Style, digits: int, compare: bool) -> Grid:
        average, complete = self.average()
        average_columns = [("Avg.", list(self.tasks))] if len(self.tasks) > 1 else []
        average_columns += [(f"{g} avg.", tasks) for g, tasks in self.group_tasks().items() if tasks]
        header = ["Model"] + [style.escape(task_title(t)) for t in self.tasks]
        header += [style.escape(title) for title, _ in average_columns]
        bold = {t: best_rows(self.mean[t], digits) for t in self.tasks}
        averages = {title: self.average(tasks) for title, tasks in average_columns}
        for title, (values, full) in averages.items():
            bold[title] = best_rows(values[full], digits)
        body, incomplete = [], False
        for row in self.rows:
            cells = [style.escape(row)]
            for task in self.tasks:
                mean, std = self.mean.at[row, task], self.std.at[row, task]
                if pd.isna(mean):
                    cells.append(style.missing)
                    continue
                text = format_number(mean, digits) + ("" if pd.isna(std) else style.pm + format_number(std, digits))
                text = style.bold(text) if row in bold[task] else text
                pub = self._pub(row, task) if compare else None
                if pub is not None:
                    text += f" (pub. {format_number(pub, digits)}, {format_signed(mean - pub, digits, style)})"
                cells.append(text)
            for title, tasks in average_columns:
                values, full = averages[title]
                if pd.isna(values[row]):
                    cells.append(style.missing)
                    continue
                text = format_number(values[row], digits)
                text = style.bold(text) if row in bold[title] else text
                if not full[row]:
                    text += style.dagger
                    incomplete = True
                pub = self.published_average(row, tasks) if compare else None
                if pub is not None and full[row]:
                    text += f" (pub. {format_number(pub, digits)}, {format_signed(values[row] - pub, digits, style)})"
                cells.append(text)
            body.append(cells)
        notes = [style.escape(n) for n in self.notes]
        if incomplete:
            lacking = [f"{row} lacks {', '.join(t for t in self.tasks if pd.isna(self.mean.at[row, t]))}"
                       for row in self.rows if not complete[row]]
            notes.append(style.dagger + style.escape(" average over the tasks this model has (" + "; ".join(lacking)
                                                     + "); not ranked."))
        if compare and self.published_sources:
            notes.append(style.escape("pub.: the original paper's number and our difference; sources: " + "; ".join(
                f"{m}: {s}" for m, s in self.published_sources.items()) + "."))
        return Grid(header, body, style.escape(self.caption()), notes, "l" + "c" * (len(header) - 1), self._spans())

    def _spans(self) -> list[tuple[str, int, int]] | None:
        """Column spans of task groups when the shown tasks fall into contiguous known groups."""
        spans, col = [], 1
        for group, tasks in task_groups().items():
            shown = [t for t in self.tasks if t in tasks]
            if not shown:
                continue
            if self.tasks[col - 1:col - 1 + len(shown)] != shown:
                return None
            spans.append((group, col, col + len(shown) - 1))
            col += len(shown)
        return spans if col - 1 == len(self.tasks) else None

    def caption(self) -> str:
        """One sentence saying what the numbers are."""
        metrics = sorted({m for m in self.metrics.values()})
        metric = " / ".join(metrics) if metrics else "score"
        kind = "Linear evaluation (EVAR protocol)" if self.protocol == "linear" else f"{self.protocol} protocol"
        return (f"{kind}: {metric} (%), mean ± std over folds (cross-validation tasks) or seeds; "
                "best per column in bold.")

    def render(self, fmt: str = "md", digits: int = 1, compare: bool = False) -> str:
        """The table as ``md``, ``latex`` (booktabs), ``csv`` (numeric) or ``html``."""
        if fmt not in FORMATS:
            raise EvarError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        if fmt == "csv":
            return self.to_frame().round(4).to_csv(lineterminator="\n")
        grid = self._grid(STYLES[fmt], digits, compare)
        if fmt == "md":
            return render_markdown(grid)
        if fmt == "latex":
            return render_latex(grid, f"tab:evar-{self.protocol}")
        return render_html(grid)


def _variant_tags(runs: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Short tags for the variants of one model label: weights (``w:``) and/or settings (``s:``) hashes."""
    variants = runs[["weights_sha256", "shash"]].drop_duplicates()
    show_w = variants["weights_sha256"].nunique() > 1
    show_s = variants["shash"].nunique() > 1
    tags = {}
    for w, s in variants.itertuples(index=False):
        parts = ([f"w:{(w or 'none')[:6]}"] if show_w else []) + ([f"s:{s}"] if show_s else [])
        tags[(w, s)] = " ".join(parts)
    return tags


def _difference_note(label: str, runs: pd.DataFrame, tags: dict[tuple[str, str], str], cells: list[str]) -> str:
    """Which settings (or weights) tell the variants of ``label`` apart."""
    firsts = runs.drop_duplicates(["weights_sha256", "shash"])
    compared = [compared_settings(d, RUN_ONLY_SETTINGS | TASK_SETTINGS) for d in firsts["settings_dict"]]
    keys = sorted({k for d in compared for k in d})
    differing = [k for k in keys if len({json.dumps(d.get(k), sort_keys=True, default=str) for d in compared}) > 1]
    described = []
    for _, run in firsts.iterrows():
        what = [f"{k}={json.dumps(run['settings_dict'].get(k), default=str)}" for k in differing[:4]]
        if tags[(run["weights_sha256"], run["shash"])].startswith("w:"):
            what.insert(0, f"weights {run['weights'] or '(path not recorded)'} sha256 {run['weights_sha256'][:12]}")
        described.append(f"[{tags[(run['weights_sha256'], run['shash'])]}] {', '.join(what) or 'other settings'}")
    return (f"{label} has runs with different settings or weights on {', '.join(cells)}; they are separate rows, "
            f"never averaged: " + "; ".join(described) + ".")


AVERAGES = ("plain", "weighted")


def build_leaderboard(results: pd.DataFrame | None = None, protocol: str = "linear",
                      tasks: Sequence[str] | None = None, models: Sequence[str] | None = None,
                      groups: bool = False, compare_published: bool = False,
                      published: pd.DataFrame | None = None, average: str = "plain") -> Leaderboard:
    """The leaderboard of ``results`` (default: ``read_results()``) for ``protocol``.

    ``tasks``/``models`` select and order columns and rows (a model matches by name, e.g.
    ``cnn14``, or by label, e.g. ``cnn14+3,6``). ``groups`` adds SER/NOSS/Music averages.
    ``compare_published`` attaches ``published`` (default: :func:`load_published`). ``average``: ``plain``
    (EVAR's mean over tasks) or ``weighted`` by each task's test clips (X-ARES; the tasks must be prepared).
    """
    if average not in AVERAGES:
        raise EvarError(f"average must be one of {AVERAGES}, got {average!r}")
    results = read_results() if results is None else results
    runs = _filter(prepare_runs(results, protocol), tasks, models)
    layer_wise = runs["settings_dict"].map(lambda d: bool(d.get("layer_wise")))
    if layer_wise.all():
        raise EvarError(f"only layer-wise {protocol} probes match; plot them with: evar plot layers")
    notes: list[str] = []
    if layer_wise.any():
        notes.append(f"{int(layer_wise.sum())} layer-wise probe run(s) are not shown; "
                     "plot them with: evar plot layers.")
    runs = best_founded(runs[~layer_wise], ["model", "layers", "weights_sha256", "task", "shash"])
    if runs["n_seeds"].nunique() > 1:
        most = int(runs["n_seeds"].max())
        fewer = runs[runs["n_seeds"] < most]
        notes.append(f"Seeds per number: {most}, except " + "; ".join(
            f"{r.label} on {r.task}: {r.n_seeds}" for r in fewer.itertuples()) + ".")
    elif len(runs):
        notes.append(f"Each number rests on {int(runs['n_seeds'].iloc[0])} seed(s) per fold or split.")
    row_of: dict[int, str] = {}
    base: dict[str, str] = {}
    for label, group in runs.groupby("label", sort=False):
        per_cell = group.groupby("task")[["weights_sha256", "shash"]].apply(lambda g: len(g.drop_duplicates()))
        if per_cell.max() == 1:
            row_of.update({i: label for i in group.index})
            base[label] = label
            continue
        tags = _variant_tags(group)
        for i, run in group.iterrows():
            row = f"{label} [{tags[(run['weights_sha256'], run['shash'])]}]"
            row_of[i] = row
            base[row] = label
        notes.append(_difference_note(label, group, tags, task_order(list(per_cell.index[per_cell > 1]))))
    runs = runs.assign(row=pd.Series(row_of))
    shown_tasks = list(tasks) if tasks else task_order(sorted(set(runs["task"])))
    rows = _row_order(runs, models)
    mean = runs.pivot(index="row", columns="task", values="score_pct").reindex(index=rows, columns=shown_tasks)
    std = runs.pivot(index="row", columns="task", values="std_pct").reindex(index=rows, columns=shown_tasks)
    metrics = dict(zip(runs["task"], runs["metric"].astype(str)))
    weights = test_clips(shown_tasks) if average == "weighted" else None
    if weights:
        notes.append("Averages weighted by each task's test clips (X-ARES): " + ", ".join(
            f"{t} {n:,}" for t, n in weights.items()) + ".")
    elif len(shown_tasks) > 1:
        notes.append("Averages: the plain mean over tasks (EVAR).")
    board = Leaderboard(protocol, shown_tasks, rows, base, mean, std, metrics, runs,
                        groups=list(GROUP_ORDER) if groups else [], notes=notes, task_weights=weights)
    if compare_published:
        _attach_published(board, load_published() if published is None else published)
    return board


def _row_order(runs: pd.DataFrame, models: Sequence[str] | None) -> list[str]:
    rows = sorted(set(runs["row"]))
    if not models:
        return rows
    rank = {}
    for _, run in runs.iterrows():
        for i, m in enumerate(models):
            if m in (run["model"], run["label"]):
                rank[run["row"]] = min(rank.get(run["row"], i), i)
    return sorted(rows, key=lambda r: (rank[r], r))


def _attach_published(board: Leaderboard, published: pd.DataFrame) -> None:
    wanted = published[published["model"].isin(set(board.base.values())) & published["task"].isin(board.tasks)]
    board.published = wanted.pivot(index="model", columns="task", values="score").reindex(columns=board.tasks)
    for model, group in wanted.groupby("model", sort=True):
        board.published_sources[model] = " / ".join(dict.fromkeys(group["source"]))
    if wanted.empty:
        board.notes.append("No published numbers for these models and tasks in evar's published.csv.")


def run_list(results: pd.DataFrame | None = None, protocol: str = "linear", tasks: Sequence[str] | None = None,
             models: Sequence[str] | None = None) -> pd.DataFrame:
    """Every run of ``protocol``, oldest first: date, run, model, task, score and std (%), folds, seeds,
    settings hash."""
    results = read_results() if results is None else results
    runs = _filter(prepare_runs(results, protocol), tasks, models)
    return pd.DataFrame({"date": runs["date"], "run": runs["run_id"], "model": runs["label"], "task": runs["task"],
                         "score": runs["score_pct"], "std": runs["std_pct"], "n_folds": runs["n_folds"],
                         "seeds": runs["seeds"], "settings": runs["shash"],
                         "weights_sha256": runs["weights_sha256"].str[:12]}).reset_index(drop=True)


def render_run_list(runs: pd.DataFrame, fmt: str = "md", digits: int = 1) -> str:
    """A run list (from :func:`run_list`) as ``md``, ``latex``, ``csv`` or ``html``."""
    if fmt not in FORMATS:
        raise EvarError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "csv":
        return runs.round(4).to_csv(index=False, lineterminator="\n")
    style = STYLES[fmt]
    header = [style.escape(h) for h in ("Date", "Run", "Model", "Task", "Score", "Folds", "Seeds", "Settings")]
    body = []
    for run in runs.itertuples(index=False):
        score = style.missing if pd.isna(run.score) else format_number(run.score, digits) + (
            "" if pd.isna(run.std) else style.pm + format_number(run.std, digits))
        body.append([style.escape(str(v)) for v in (run.date, run.run, run.model, task_title(run.task))]
                    + [score] + [style.escape(str(v)) for v in (run.n_folds, run.seeds, run.settings)])
    caption = style.escape(f"Every recorded run ({len(runs)}), oldest first; score in % as mean ± std.")
    grid = Grid(header, body, caption, [], "llllrrll")
    if fmt == "md":
        return render_markdown(grid)
    return render_latex(grid, "tab:evar-runs") if fmt == "latex" else render_html(grid)


def leaderboard_text(results: pd.DataFrame | None = None, fmt: str = "md", protocol: str = "linear",
                     tasks: Sequence[str] | None = None, models: Sequence[str] | None = None, groups: bool = False,
                     compare_published: bool = False, published_source: str | None = None,
                     all_runs: bool = False, digits: int = 1, average: str = "plain",
                     records: str | Path | None = None) -> str:
    """What ``evar leaderboard`` prints: the table (or every run) in ``fmt``; ``html`` is the self-contained page
    (:mod:`evar.results.page`, cost from the run records in ``records``, default the results folder's)."""
    if all_runs:
        return render_run_list(run_list(results, protocol, tasks, models), fmt, digits)
    if fmt == "html":
        from evar.paths import results_dir
        from evar.results.page import leaderboard_page

        return leaderboard_page(read_results() if results is None else results,
                                Path(records or results_dir() / "records"), protocol, tasks, models,
                                published_source, digits, average)
    published = load_published(source=published_source) if compare_published else None
    board = build_leaderboard(results, protocol, tasks, models, groups, compare_published, published, average)
    return board.render(fmt, digits, compare_published)


MARKER = "evar leaderboard "
COMMENTS = {"md": ("<!-- ", " -->"), "html": ("<!-- ", " -->"), "latex": ("% ", "")}


def write_leaderboard(out: str | Path, **options: Any) -> Path:
    """:func:`leaderboard_text` with ``options``, written atomically to ``out``; Markdown, LaTeX and HTML files
    start with a comment holding the options, so ``evar results validate`` can rebuild them from the records."""
    from evar.io import atomic_write_text

    text = leaderboard_text(**options)
    fmt = options.get("fmt", "md")
    if fmt in COMMENTS:
        opening, closing = COMMENTS[fmt]
        text = f"{opening}{MARKER}{json.dumps(options, sort_keys=True)}{closing}\n{text}"
    return atomic_write_text(out, text)


def stored_options(text: str) -> dict[str, Any] | None:
    """The options a leaderboard file written by :func:`write_leaderboard` was made with (None: not one)."""
    first = text.split("\n", 1)[0]
    for opening, closing in COMMENTS.values():
        if first.startswith(opening + MARKER) and first.endswith(closing):
            return json.loads(first[len(opening + MARKER):len(first) - len(closing)])
    return None
