"""Table rendering for the leaderboard: one grid written as Markdown, LaTeX (booktabs) or HTML, per-format styles."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Callable

import pandas as pd


@dataclass(frozen=True)
class Style:
    """How one output format writes text, bold, ±, minus, the incomplete-average mark and an empty cell."""

    escape: Callable[[str], str]
    bold: Callable[[str], str]
    pm: str
    minus: str
    dagger: str
    missing: str


def latex_escape(text: str) -> str:
    specials = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "±": r"$\pm$", "†": r"$^\dagger$", "−": r"$-$"}
    return "".join(specials.get(c, c) for c in text)


STYLES = {
    "md": Style(lambda s: s.replace("|", r"\|"), lambda s: f"**{s}**", " ± ", "−", "†", "–"),
    "latex": Style(latex_escape, lambda s: rf"\textbf{{{s}}}", r" $\pm$ ", "$-$", r"$^\dagger$", "--"),
    "html": Style(html.escape, lambda s: f"<strong>{s}</strong>", " ± ", "−", "†", "–"),
}


@dataclass
class Grid:
    """A table ready to print: header, body cells (already styled), optional task-group header."""

    header: list[str]
    body: list[list[str]]
    caption: str
    notes: list[str]
    align: str  # one of l/c/r per column
    spans: list[tuple[str, int, int]] | None = None  # (group title, first column, last column), 0-based


def render_markdown(grid: Grid) -> str:
    rule = {"l": ":---", "c": ":---:", "r": "---:"}
    lines = ["| " + " | ".join(grid.header) + " |", "|" + "|".join(rule[a] for a in grid.align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in grid.body]
    return "\n".join([grid.caption, "", *lines] + (["", *grid.notes] if grid.notes else [])) + "\n"


def render_latex(grid: Grid, label: str) -> str:
    n = len(grid.header)
    out = [r"% evar leaderboard; needs \usepackage{booktabs}", r"\begin{table}[t]", r"\centering",
           rf"\caption{{{grid.caption}}}", rf"\label{{{label}}}", rf"\begin{{tabular}}{{{grid.align}}}",
           r"\toprule"]
    if grid.spans:
        cells, rules, col = [""], [], 1
        for title, first, last in grid.spans:
            cells += [""] * (first - col)
            cells.append(rf"\multicolumn{{{last - first + 1}}}{{c}}{{{title}}}")
            rules.append(rf"\cmidrule(lr){{{first + 1}-{last + 1}}}")
            col = last + 1
        cells += [""] * (n - col)
        out += [" & ".join(cells) + r" \\", " ".join(rules)]
    out.append(" & ".join(grid.header) + r" \\")
    out.append(r"\midrule")
    out += [" & ".join(row) + r" \\" for row in grid.body]
    out += [r"\bottomrule", r"\end{tabular}"]
    if grid.notes:
        out += [r"\par\smallskip", r"{\footnotesize\raggedright " + r" \\ ".join(grid.notes) + r"\par}"]
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def render_html(grid: Grid) -> str:
    out = ['<table class="evar-leaderboard">', f"<caption>{grid.caption}</caption>", "<thead>"]
    if grid.spans:
        cells, col = ["<th></th>"], 1
        for title, first, last in grid.spans:
            cells += ["<th></th>"] * (first - col)
            cells.append(f'<th colspan="{last - first + 1}">{title}</th>')
            col = last + 1
        cells += ["<th></th>"] * (len(grid.header) - col)
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("<tr>" + "".join(f"<th>{h}</th>" for h in grid.header) + "</tr>")
    out += ["</thead>", "<tbody>"]
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in grid.body]
    out += ["</tbody>", "</table>"]
    out += [f'<p class="evar-note">{note}</p>' for note in grid.notes]
    return "\n".join(out) + "\n"


def format_number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def format_signed(value: float, digits: int, style: Style) -> str:
    text = f"{abs(value):.{digits}f}"
    return text if float(text) == 0 else ("+" if value > 0 else style.minus) + text


def best_rows(values: pd.Series, digits: int) -> set:
    """Index labels whose value, rounded for display, equals the column's best."""
    shown = values.dropna().round(digits)
    return set(shown.index[shown == shown.max()]) if len(shown) else set()
