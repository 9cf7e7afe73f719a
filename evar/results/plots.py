"""Figures for papers: layer-wise probe curves, t-SNE of embeddings, grouped bars of the leaderboard.

matplotlib and scikit-learn are imported lazily (the ``plots`` extra). Figures are drawn on
matplotlib's Agg canvas without pyplot (no global backend change) and written atomically as PNG.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from evar.errors import EvarError
from evar.options import ModelChoice, RunOptions
from evar.paths import results_dir
from evar.results.leaderboard import build_leaderboard, task_title
from evar.results.runs import RUN_ONLY_SETTINGS, TASK_SETTINGS, best_founded, prepare_runs
from evar.results.store import read_results

#: Settings that differ between the runs of one layer-wise probe only because the layer differs
LAYER_SETTINGS = frozenset({"encoder.fusion_layers", "encoder.embed_dim", "layer", "layer_name", "layer_wise"})
DPI = 150


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise EvarError("plots need matplotlib: pip install 'evar-bench[plots]'") from exc
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_png(fig: Any, out: str | Path) -> Path:
    """Write ``fig`` to ``out`` as PNG through a temporary file and a rename."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # created with the user's default permissions
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def default_path(kind: str, *parts: str | int) -> Path:
    """``<results>/plots/<kind>-<parts>.png`` with unsafe characters replaced."""
    name = "-".join([kind, *(re.sub(r"[^A-Za-z0-9_.,+-]", "_", str(p)) for p in parts)])
    return results_dir() / "plots" / f"{name}.png"


def _title(task: str) -> str:
    return task_title(task)


def layer_scores(model: str, task: str, results: pd.DataFrame | None = None, protocol: str = "linear"
                 ) -> pd.DataFrame:
    """Latest single-layer runs of ``model`` on ``task``: columns layer, score, std (%), variant, n_folds.

    A run counts when its ``layers`` holds one integer index (what ``probe --layers all`` records
    per layer, or a manual ``--layers 3``); runs with other settings or weights form another variant.
    """
    results = read_results() if results is None else results
    runs = prepare_runs(results, protocol, RUN_ONLY_SETTINGS | TASK_SETTINGS | LAYER_SETTINGS)
    runs = runs[(runs["model"] == model) & (runs["task"] == task) & runs["layers"].str.fullmatch(r"-?\d+")]
    if runs.empty:
        raise EvarError(f"no single-layer {protocol} results for {model} on {task}; "
                        f"run: evar probe --task {task} --model {model} --layers all")
    runs = runs.assign(layer=runs["layers"].astype(int))
    runs = best_founded(runs, ["layer", "weights_sha256", "shash"])
    variants = runs[["weights_sha256", "shash"]].drop_duplicates()
    names = {}
    for w, s in variants.itertuples(index=False):
        parts = ([f"w:{(w or 'none')[:6]}"] if variants["weights_sha256"].nunique() > 1 else []) + (
            [f"s:{s}"] if variants["shash"].nunique() > 1 else [])
        names[(w, s)] = " ".join(parts)
    return pd.DataFrame({"layer": runs["layer"], "score": runs["score_pct"], "std": runs["std_pct"],
                         "variant": [names[(w, s)] for w, s in zip(runs["weights_sha256"], runs["shash"])],
                         "n_folds": runs["n_folds"]}).sort_values(["variant", "layer"]).reset_index(drop=True)


def plot_layers(model: str, task: str, results: pd.DataFrame | None = None, protocol: str = "linear",
                out: str | Path | None = None) -> Path:
    """Probe score against layer index (error bars: std over folds or seeds), with the model's
    final-embedding score as a dashed line when it was probed too. Returns the PNG path."""
    results = read_results() if results is None else results
    scores = layer_scores(model, task, results, protocol)
    metric = _metric(results, protocol, task)
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    for variant, group in scores.groupby("variant", sort=True):
        ax.errorbar(group["layer"], group["score"], yerr=group["std"].fillna(0), marker="o", capsize=3,
                    label=f"{model} {variant}".strip() + " per layer")
    final = _final_score(results, protocol, model, task)
    if final is not None:
        score, n_seeds = final
        ax.axhline(score, linestyle="--", color="0.4",
                   label=f"{model} final embedding ({score:.1f}%, {n_seeds} seed{'s' if n_seeds > 1 else ''})")
    ax.set_xlabel("layer index (0 = first exposed layer)")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_xticks(sorted(scores["layer"].unique()))
    ax.set_title(f"{model} on {_title(task)}: {protocol} probe per layer")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return save_png(fig, out or default_path("layers", model, task))


def _metric(results: pd.DataFrame, protocol: str, task: str) -> str:
    rows = results[(results["protocol"].astype(str) == protocol) & (results["task"] == task)]
    return str(rows["metric"].iloc[-1]) if len(rows) else "score"


def _final_score(results: pd.DataFrame, protocol: str, model: str, task: str) -> tuple[float, int] | None:
    """The final embedding's score (and its seed count), chosen as the leaderboard chooses: most seeds, then latest."""
    runs = prepare_runs(results, protocol)
    runs = runs[(runs["model"] == model) & (runs["task"] == task) & (runs["layers"] == "")]
    if runs.empty:
        return None
    best = best_founded(runs, ["task"]).iloc[-1]
    return float(best["score_pct"]), int(best["n_seeds"])


def plot_bars(results: pd.DataFrame | None = None, protocol: str = "linear", tasks: Sequence[str] | None = None,
              models: Sequence[str] | None = None, out: str | Path | None = None) -> Path:
    """Grouped bar chart of the leaderboard: tasks on x (plus the average), one bar per model,
    error bars = std. Returns the PNG path."""
    board = build_leaderboard(results, protocol, tasks, models)
    mean, std = board.mean.copy(), board.std.copy()
    labels = [_title(t) for t in board.tasks]
    if len(board.tasks) > 1:
        average, complete = board.average()
        mean["average"], std["average"] = average.where(complete), np.nan
        labels.append("Average\n(models with all tasks)")
    n_rows, n_cols = len(board.rows), len(labels)
    width = min(0.8 / n_rows, 0.3)
    fig = _figure(max(7.5, 2.5 + n_cols * (0.35 + 0.18 * n_rows)), 4.2)
    ax = fig.add_subplot()
    x = np.arange(n_cols)
    colours = _colours(n_rows)
    for i, row in enumerate(board.rows):
        values = mean.loc[row].to_numpy(dtype=float)
        errors = std.loc[row].fillna(0).to_numpy(dtype=float)
        shown = np.isfinite(values)  # no bar where the model has no score
        ax.bar(x[shown] + (i - (n_rows - 1) / 2) * width, values[shown], width, yerr=errors[shown], capsize=2,
               label=row, color=colours[i], error_kw={"elinewidth": 0.8})
    ax.set_xticks(x, labels)
    metrics = " / ".join(sorted(set(board.metrics.values())))
    ax.set_ylabel(f"{metrics} (%)")
    ax.set_xlabel("task")
    ax.set_ylim(0, 100)
    ax.set_title(f"{protocol} evaluation: mean ± std over folds or seeds")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(title="model", fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_png(fig, out or default_path("bars", protocol))


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    return [cmap(i) if n <= 20 else cmap(i / max(n - 1, 1)) for i in range(n)]


def tsne_points(embeddings: np.ndarray, seed: int = 42, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE of standardised embeddings (PCA to 50 dimensions first when wider)."""
    try:
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE
    except ImportError as exc:
        raise EvarError("t-SNE needs scikit-learn: pip install 'evar-bench[plots]'") from exc
    X = np.asarray(embeddings, dtype=np.float64)
    if len(X) < 5:
        raise EvarError(f"t-SNE needs at least 5 clips, got {len(X)}")
    X = (X - X.mean(axis=0)) / np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
    if X.shape[1] > 50:
        X = PCA(n_components=min(50, len(X)), random_state=seed).fit_transform(X)
    perplexity = min(perplexity, (len(X) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=seed).fit_transform(X)


def plot_tsne(model: str | ModelChoice, task: str, fold: int | None = None, split: str | None = None,
              run: RunOptions | None = None, max_points: int = 5000, seed: int = 42, perplexity: float = 30.0,
              out: str | Path | None = None) -> Path:
    """t-SNE of ``model``'s embeddings of ``task`` (from the cache, computed when missing), coloured by
    class. ``fold`` keeps that fold's clips (the test rows of cross-validation round k), ``split``
    one split (train/valid/test) of a fixed-split task; neither keeps every clip. At most
    ``max_points`` clips, drawn at random with ``seed``. Returns the PNG path."""
    from evar.api import embed
    from evar.tasks import load_task

    prepared = load_task(task)
    rows = _subset_rows(prepared, fold, split)
    model = ModelChoice.of(model)
    X = np.asarray(embed(model, task=task, run=run or RunOptions()))
    labels = prepared.meta["label"].astype(str).str.split(";").str[0].to_numpy()
    rows = rows[np.isfinite(X[rows]).all(axis=1)]
    total = len(rows)
    if total > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_points, replace=False))
    points = tsne_points(X[rows], seed, perplexity)
    classes = sorted(set(labels[rows]))
    colours = _colours(len(classes))
    fig = _figure(7.5 if len(classes) <= 20 else 6.4, 5.6)
    ax = fig.add_subplot()
    for colour, name in zip(colours, classes):
        keep = labels[rows] == name
        ax.scatter(points[keep, 0], points[keep, 1], s=12, color=colour, label=name, alpha=0.85, linewidths=0)
    where = f"fold {fold}" if fold is not None else f"{split} split" if split else "all clips"
    count = f"random {len(rows)} of {total}" if len(rows) < total else f"n = {total}"
    ax.set_title(f"t-SNE of {model} embeddings, {_title(task)} ({where}, {count})")
    ax.set_xlabel("t-SNE dimension 1 (arbitrary units)")
    ax.set_ylabel("t-SNE dimension 2 (arbitrary units)")
    if len(classes) <= 20:
        ax.legend(title="class" + (" (first label)" if prepared.spec.multilabel else ""), fontsize="small",
                  loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=1.5)
    else:
        ax.text(0.01, 0.01, f"{len(classes)} classes, one colour each (legend omitted)", transform=ax.transAxes,
                fontsize="small")
    parts = [model.name + (f"+{','.join(map(str, model.layers))}" if model.layers else ""), task] + (
        [f"fold{fold}"] if fold is not None else [split] if split else [])
    return save_png(fig, out or default_path("tsne", *parts))


def _subset_rows(task: Any, fold: int | None, split: str | None) -> np.ndarray:
    meta = task.meta
    if fold is not None and split is not None:
        raise EvarError("give --fold or --split, not both")
    if fold is not None:
        if not task.spec.folds:
            raise EvarError(f"{task.name} has a fixed train/valid/test split, not folds; use --split test")
        if not 1 <= fold <= task.spec.folds:
            raise EvarError(f"{task.name} has folds 1..{task.spec.folds}, got --fold {fold}")
        return np.flatnonzero(meta["fold"].astype(int).to_numpy() == fold)
    if split is not None:
        if task.spec.folds:
            raise EvarError(f"{task.name} uses {task.spec.folds}-fold cross-validation; use --fold K")
        rows = np.flatnonzero(meta["split"].astype(str).to_numpy() == split)
        if not len(rows):
            raise EvarError(f"{task.name} has no {split!r} rows (splits: {', '.join(sorted(set(meta['split'])))})")
        return rows
    return np.arange(len(meta))


def plot_confusion(model: str, task: str, results: pd.DataFrame | None = None, protocol: str = "linear",
                   normalise: bool = True, out: str | Path | None = None) -> Path:
    """The confusion matrix of the latest ``protocol`` run of ``model`` on ``task`` (every fold and seed's test
    predictions; rows: true class), as counts or each row's fractions, with the class-wise accuracies."""
    results = read_results() if results is None else results
    rows = results[(results["protocol"].astype(str) == protocol) & (results["model"] == model)
                   & (results["task"] == task)]
    settings = [s if isinstance(s, dict) else {} for s in (_settings(v) for v in rows.get("settings", []))]
    found = [s for s in settings if "confusion" in s]
    if not found:
        raise EvarError(f"no {protocol} run of {model} on {task} with a confusion matrix (single-label tasks; "
                        "rows written by this version of evar)")
    confusion = np.asarray(found[-1]["confusion"], dtype=float)
    classes = list(found[-1]["class_accuracy"])
    shown = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1) if normalise else confusion
    size = max(4.0, 0.22 * len(classes) + 2)
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else None)
    fig.colorbar(image, ax=ax, label="fraction of the true class" if normalise else "clips")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes, rotation=90, fontsize=max(4, 9 - len(classes) // 10))
    ax.set_yticks(ticks, [f"{c} ({100 * (a or 0):.0f}%)" for c, a in found[-1]["class_accuracy"].items()],
                  fontsize=max(4, 9 - len(classes) // 10))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (class-wise accuracy)")
    ax.set_title(f"{model} on {_title(task)}: {protocol} probe, {int(confusion.sum())} test predictions")
    return save_png(fig, out or default_path("confusion", model, task, protocol))


def _settings(value: Any) -> Any:
    import json

    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return {}
    return value


def plot_layer_weights(model: str, task: str, results: pd.DataFrame | None = None, protocol: str = "linear",
                       out: str | Path | None = None) -> Path:
    """The softmax layer weights that the latest ``--layers weighted`` run of ``model`` on ``task`` learnt: their
    mean over rounds and seeds per layer, with the spread as error bars."""
    results = read_results() if results is None else results
    rows = results[(results["protocol"].astype(str) == protocol) & (results["model"] == model)
                   & (results["task"] == task) & (results["layers"].astype(str) == "weighted")]
    if rows.empty:
        raise EvarError(f"no weighted-layer {protocol} run of {model} on {task}; run: evar probe --task {task} "
                        f"--model {model} --layers weighted")
    settings = _settings(rows["settings"].iloc[-1])
    weights = np.asarray(settings["layer_weights"], dtype=float).reshape(-1, len(settings["layer_names"]))
    fig = _figure(max(4.0, 0.35 * weights.shape[1] + 2), 3.2)
    ax = fig.add_subplot()
    ax.bar(range(weights.shape[1]), weights.mean(axis=0), yerr=weights.std(axis=0), color="tab:blue", capsize=2)
    ax.axhline(1 / weights.shape[1], color="grey", linestyle="--", linewidth=0.8, label="equal weights")
    ax.set_xticks(range(weights.shape[1]), settings["layer_names"], rotation=45, ha="right")
    ax.set_ylabel("softmax weight")
    ax.set_title(f"{model} on {_title(task)}: learnt layer weights ({len(weights)} fits)")
    ax.legend(fontsize=8)
    return save_png(fig, out or default_path("layer-weights", model, task, protocol))
