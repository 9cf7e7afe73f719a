"""The leaderboard page: one self-contained HTML file (``evar leaderboard --format html``).

Every protocol with results gets a table (a selector shows one at a time); columns sort on a click; task-group
check boxes (SER, NOSS, Music, other) show or hide their tasks; each cell shows the reproduced score, its
spread, the published number beside it, and links to its run's record (``records/<run_id>.json``, beside the page
in the results folder); cost columns give parameters and GFLOPs per second of audio (the encoder table's,
:func:`evar.encoders.encoder_costs`, else the runs' records);
the bar charts are embedded as PNG. The numbers live in one JSON block that the page's script renders, and that
``evar results validate`` compares with the records. Nothing is fetched when the page is viewed.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from evar.errors import EvarError

DATA_ID = "evar-data"


def _number(value: Any, digits: int = 4) -> float | None:
    return None if value is None or pd.isna(value) else round(float(value), digits)


def _costs(runs: pd.DataFrame, folder: Path) -> dict[str, dict[str, Any]]:
    """Each model's cost: the built-in encoders' table (10-s clip, comparable across models), else the latest
    record (in ``folder``) of its runs that counted it (on the task's clip length)."""
    from evar.encoders import encoder_costs

    table = {m: {"params": c["params"], "gflops": c["gflops_per_audio_second"]} for m, c in encoder_costs().items()}
    costs: dict[str, dict[str, Any]] = {}
    for run in runs.sort_values("date").itertuples():
        path = folder / f"{run.run_id}.json"
        if not path.is_file():
            continue
        cost = (json.loads(path.read_text()).get("provenance") or {}).get("cost")
        if cost:
            costs[str(run.model)] = {"params": cost["params"], "gflops": cost["gflops_per_audio_second"]}
    return {**costs, **{m: c for m, c in table.items() if m in costs or m in set(runs["model"])}}


def page_tables(results: pd.DataFrame, records: Path, tasks: Sequence[str] | None = None,
                models: Sequence[str] | None = None, published_source: str | None = None,
                average: str = "plain") -> dict[str, Any]:
    """The page's numbers: per protocol with results, its tasks, rows, cells and notes; costs from ``records``."""
    from evar.results.leaderboard import build_leaderboard, task_title
    from evar.results.runs import load_published
    from evar.tasks import get_task_spec

    published = load_published(source=published_source)
    tables = {}
    for protocol in sorted(set(results["protocol"].astype(str))):
        try:
            board = build_leaderboard(results, protocol, tasks, models, False, True, published, average)
        except EvarError:  # e.g. only layer-wise runs of this protocol
            continue
        costs = _costs(board.runs, records)
        run_of = {(r.row, r.task): r for r in board.runs.itertuples()}
        average_values, complete = board.average()
        rows = []
        for row in board.rows:
            cells = {}
            for task in board.tasks:
                run = run_of.get((row, task))
                if run is not None:
                    cells[task] = {"score": _number(run.score_pct), "std": _number(run.std_pct),
                                   "published": _number(board._pub(row, task)), "run_id": str(run.run_id),
                                   "seeds": int(run.n_seeds)}
            cost = costs.get(board.base[row].split("+")[0], {})
            rows.append({"label": row, "cells": cells, "average": _number(average_values[row]),
                         "complete": bool(complete[row]), "params": cost.get("params"), "gflops": cost.get("gflops")})
        groups = {}
        for task in board.tasks:
            try:
                groups[task] = get_task_spec(task).group or "other"
            except EvarError:
                groups[task] = "other"
        tables[protocol] = {"caption": board.caption(), "metric": " / ".join(sorted(set(board.metrics.values()))),
                            "tasks": [{"name": t, "title": task_title(t), "group": groups[t]} for t in board.tasks],
                            "rows": rows, "notes": board.notes}
    if not tables:
        raise EvarError("no results to put on the leaderboard page yet; run: evar probe --task TASK --model MODEL")
    return tables


def _figures(results: pd.DataFrame, protocols: Sequence[str], tasks, models) -> dict[str, str]:
    """Each protocol's bar chart as a base64 PNG (none without matplotlib)."""
    from evar.results.plots import plot_bars

    figures = {}
    with tempfile.TemporaryDirectory() as folder:
        for protocol in protocols:
            try:
                path = plot_bars(results, protocol, tasks, models, out=Path(folder) / f"{protocol}.png")
            except EvarError:
                return figures
            figures[protocol] = base64.b64encode(path.read_bytes()).decode()
    return figures


def leaderboard_page(results: pd.DataFrame, records: Path, protocol: str = "linear",
                     tasks: Sequence[str] | None = None, models: Sequence[str] | None = None,
                     published_source: str | None = None, digits: int = 1, average: str = "plain") -> str:
    """The page's HTML (costs from the run records in ``records``); ``protocol`` is the table shown first."""
    tables = page_tables(results, records, tasks, models, published_source, average)
    selected = protocol if protocol in tables else next(iter(tables))
    data = {"tables": tables, "selected": selected, "digits": digits}
    figures = _figures(results, list(tables), tasks, models)
    images = "".join(f'<figure data-protocol="{html.escape(p)}"><img alt="{html.escape(p)} bar chart" '
                     f'src="data:image/png;base64,{b64}"></figure>' for p, b64 in figures.items())
    payload = json.dumps(data, sort_keys=True).replace("</", "<\\/")
    return PAGE.replace("@DATA@", payload).replace("@DATA_ID@", DATA_ID).replace("@FIGURES@", images)


def page_data(text: str) -> dict[str, Any]:
    """The numbers embedded in a page made by :func:`leaderboard_page`."""
    start = text.find(f'<script type="application/json" id="{DATA_ID}">')
    if start < 0:
        raise EvarError("not an evar leaderboard page (no embedded data)")
    start = text.index(">", start) + 1
    return json.loads(text[start:text.index("</script>", start)].replace("<\\/", "</"))


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>evar leaderboard</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem; color: #1d1d1f; }
h1 { font-size: 1.4rem; margin: 0 0 .5rem; }
.controls { display: flex; gap: 1.5rem; align-items: center; flex-wrap: wrap; margin: .75rem 0; }
table { border-collapse: collapse; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { cursor: pointer; background: #f3f3f5; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
td a { color: inherit; text-decoration: none; }
td a:hover { text-decoration: underline; }
.pub { color: #6b6b70; font-size: .85em; }
.std { color: #6b6b70; }
.missing { color: #aaa; }
.best { font-weight: 700; }
caption { caption-side: top; text-align: left; padding-bottom: .4rem; color: #444; }
.notes { color: #444; max-width: 70rem; }
figure { margin: 1rem 0; }
figure img { max-width: min(100%, 56rem); }
</style>
</head>
<body>
<h1>evar leaderboard</h1>
<div class="controls">
  <label>Protocol <select id="protocol"></select></label>
  <span id="groups"></span>
</div>
<table id="board"><caption></caption><thead></thead><tbody></tbody></table>
<ul class="notes" id="notes"></ul>
<div id="figures">@FIGURES@</div>
<script type="application/json" id="@DATA_ID@">@DATA@</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("@DATA_ID@").textContent);
const digits = data.digits;
const state = {protocol: data.selected, sortKey: null, descending: true, hidden: new Set()};
const fmt = (v) => v === null || v === undefined ? "" : v.toFixed(digits);

function text(tag, content, cls) {
  const el = document.createElement(tag);
  el.textContent = content;
  if (cls) el.className = cls;
  return el;
}

function sortValue(row, key) {
  if (key === "model") return row.label.toLowerCase();
  if (key === "average") return row.average;
  if (key === "params" || key === "gflops") return row[key];
  const cell = row.cells[key];
  return cell ? cell.score : null;
}

function render() {
  const table = data.tables[state.protocol];
  const tasks = table.tasks.filter((t) => !state.hidden.has(t.group));
  const board = document.getElementById("board");
  board.querySelector("caption").textContent = table.caption;
  const head = document.createElement("tr");
  const columns = [["model", "Model"], ...tasks.map((t) => [t.name, t.title]), ["average", "Avg."],
                   ["params", "Params (M)"], ["gflops", "GFLOPs / s audio"]];
  for (const [key, title] of columns) {
    const th = text("th", title);
    th.dataset.key = key;
    if (state.sortKey === key) th.setAttribute("aria-sort", state.descending ? "descending" : "ascending");
    th.addEventListener("click", () => {
      state.descending = state.sortKey === key ? !state.descending : key !== "model";
      state.sortKey = key;
      render();
    });
    head.appendChild(th);
  }
  board.tHead.replaceChildren(head);
  const rows = table.rows.slice();
  if (state.sortKey) {
    rows.sort((a, b) => {
      const x = sortValue(a, state.sortKey), y = sortValue(b, state.sortKey);
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      const order = x < y ? -1 : x > y ? 1 : 0;
      return state.descending ? -order : order;
    });
  }
  const best = {};
  for (const task of tasks) {
    const scores = rows.map((r) => r.cells[task.name] ? r.cells[task.name].score : null).filter((v) => v !== null);
    best[task.name] = scores.length ? Math.max(...scores) : null;
  }
  const body = document.createElement("tbody");
  for (const row of rows) {
    const tr = document.createElement("tr");
    tr.appendChild(text("td", row.label));
    for (const task of tasks) {
      const cell = row.cells[task.name];
      const td = document.createElement("td");
      td.dataset.task = task.name;
      if (!cell) { td.appendChild(text("span", "\\u2013", "missing")); tr.appendChild(td); continue; }
      const link = document.createElement("a");
      link.href = "records/" + cell.run_id + ".json";
      link.title = "run " + cell.run_id + ", " + cell.seeds + " seed(s)";
      link.appendChild(text("span", fmt(cell.score), cell.score === best[task.name] ? "best" : ""));
      if (cell.std !== null) link.appendChild(text("span", " \\u00b1 " + fmt(cell.std), "std"));
      td.appendChild(link);
      if (cell.published !== null) td.appendChild(text("div", "pub. " + fmt(cell.published), "pub"));
      tr.appendChild(td);
    }
    tr.appendChild(text("td", row.average === null ? "" : fmt(row.average) + (row.complete ? "" : " \\u2020")));
    tr.appendChild(text("td", row.params === null ? "\\u2013" : (row.params / 1e6).toFixed(2)));
    tr.appendChild(text("td", row.gflops === null ? "\\u2013" : row.gflops.toFixed(2)));
    body.appendChild(tr);
  }
  board.tBodies[0].replaceWith(body);
  document.getElementById("notes").replaceChildren(...table.notes.map((n) => text("li", n)));
  for (const fig of document.querySelectorAll("#figures figure")) {
    fig.hidden = fig.dataset.protocol !== state.protocol;
  }
}

function controls() {
  const select = document.getElementById("protocol");
  for (const name of Object.keys(data.tables)) {
    const option = text("option", name);
    option.value = name;
    select.appendChild(option);
  }
  select.value = state.protocol;
  select.addEventListener("change", () => { state.protocol = select.value; groupBoxes(); render(); });
  groupBoxes();
}

function groupBoxes() {
  const span = document.getElementById("groups");
  const groups = [...new Set(data.tables[state.protocol].tasks.map((t) => t.group))];
  span.replaceChildren(...groups.map((group) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = !state.hidden.has(group);
    box.dataset.group = group;
    box.addEventListener("change", () => {
      if (box.checked) state.hidden.delete(group); else state.hidden.add(group);
      render();
    });
    label.append(box, " " + group + " ");
    return label;
  }));
}

controls();
render();
</script>
</body>
</html>
"""
