"""Plots rendered from a small results store and a generated ESC-50-shaped task; PNGs checked pixel by pixel."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from matplotlib import colormaps  # noqa: E402
from matplotlib.image import imread  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402  (a scikit-learn dependency)

from evar.errors import EvarError  # noqa: E402
from evar.results.plots import layer_scores, plot_bars, plot_layers, plot_tsne  # noqa: E402
from evar.results.store import append_result, read_results  # noqa: E402
from evar.synth.trees import make_esc50_tree  # noqa: E402
from evar.tasks import prepare_task  # noqa: E402

TAB10 = [np.round(np.array(colormaps["tab10"](i)[:3]) * 255).astype(int) for i in range(10)]


def add(date: str, model: str, task: str, score: float, std: float, layers: str = "", lr: float = 3e-4,
        **extra) -> None:
    settings = {"lr": lr, "unit_sec": 5.0, "device": "cpu",
                "encoder": {"class": model, "fusion_layers": [f"block{layers}"] if layers else [],
                            "embed_dim": 64 * (int(layers) + 1) if layers else 2048}, **extra}
    append_result({"date": date, "protocol": "linear", "model": model, "layers": layers, "task": task,
                   "metric": "accuracy", "score": score, "std": std, "n_folds": 5, "fold_scores": [[score]] * 5,
                   "seeds": [42], "weights": "", "weights_sha256": "c1", "settings": settings})


def colours(png: Path) -> np.ndarray:
    """Distinct RGB colours (0-255) of a PNG."""
    image = imread(png)[..., :3]
    return np.unique(np.round(image.reshape(-1, 3) * 255).astype(int), axis=0)


def has_colour(found: np.ndarray, rgb: np.ndarray, tolerance: int = 2) -> bool:
    return bool((np.abs(found - rgb).max(axis=1) <= tolerance).any())


def check_png(png: Path, min_colours: int = 30) -> np.ndarray:
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5000
    found = colours(png)
    assert len(found) > min_colours
    assert not list(png.parent.glob("*.tmp"))  # written through a temporary file, nothing left behind
    return found


def test_layer_curve(evar_dirs: Path) -> None:
    for layer, score in enumerate([0.42, 0.55, 0.71, 0.80, 0.77, 0.69]):
        add(f"2025-01-01T00:00:0{layer}+00:00", "cnn14", "esc50", score, 0.01 * (layer + 1), str(layer),
            layer_wise=True)
    add("2025-01-02T00:00:00+00:00", "cnn14", "esc50", 0.99, 0.01, "3", layer_wise=True)  # newer: replaces 0.80
    add("2025-01-02T00:00:01+00:00", "cnn14", "esc50", 0.883, 0.006)  # the final embedding
    add("2025-01-02T00:00:02+00:00", "cnn14", "us8k", 0.10, 0.01, "0", layer_wise=True)  # another task
    scores = layer_scores("cnn14", "esc50", read_results())
    assert scores["layer"].tolist() == [0, 1, 2, 3, 4, 5]
    assert scores["score"].round(1).tolist() == [42.0, 55.0, 71.0, 99.0, 77.0, 69.0]
    assert scores["std"].round(1).tolist() == [1.0, 2.0, 3.0, 1.0, 5.0, 6.0]
    assert set(scores["variant"]) == {""}  # per-layer fusion settings do not split the curve
    png = plot_layers("cnn14", "esc50")
    assert png == evar_dirs / "results" / "plots" / "layers-cnn14-esc50.png"
    found = check_png(png)
    assert has_colour(found, TAB10[0])  # the curve
    assert has_colour(found, np.array([102, 102, 102]))  # the dashed final-embedding line (grey 0.4)
    add("2025-01-03T00:00:00+00:00", "cnn14", "esc50", 0.50, 0.01, "0", lr=1e-3, layer_wise=True)
    variants = set(layer_scores("cnn14", "esc50")["variant"])
    assert len(variants) == 2 and all(re.fullmatch(r"s:[0-9a-f]{6}", v) for v in variants)
    found = check_png(plot_layers("cnn14", "esc50", out=evar_dirs / "two.png"))
    assert has_colour(found, TAB10[0]) and has_colour(found, TAB10[1])  # one curve per settings variant
    with pytest.raises(EvarError, match="no single-layer linear results for byola on esc50"):
        plot_layers("byola", "esc50")


def test_bars(evar_dirs: Path) -> None:
    for i, (model, scores) in enumerate({"byola": (0.83, 0.79, 0.89), "cnn14": (0.88, 0.82, 0.51),
                                         "melspec": (0.40, 0.55, 0.30)}.items()):
        for j, (task, score) in enumerate(zip(("esc50", "us8k", "spcv2"), scores)):
            add(f"2025-01-01T00:0{i}:0{j}+00:00", model, task, score, 0.02)
    out = evar_dirs / "figs" / "bars.png"
    found = check_png(plot_bars(out=out))
    assert all(has_colour(found, TAB10[i], tolerance=1) for i in range(3))  # one colour per model
    assert not has_colour(found, TAB10[3], tolerance=1)
    found = check_png(plot_bars(models=["cnn14"], tasks=["esc50"], out=out))
    assert has_colour(found, TAB10[0], tolerance=1) and not has_colour(found, TAB10[1], tolerance=1)


def test_tsne_of_cached_embeddings(evar_dirs: Path) -> None:
    root = make_esc50_tree(evar_dirs / "ESC-50-master", n_classes=5, clips_per_class_per_fold=3, sample_rate=16000,
                           seconds=1.0)
    prepare_task("esc50", root)
    with threadpool_limits(1):  # OpenMP threads spin badly on a busy shared machine; one is plenty for 15 points
        png = plot_tsne("melspec", "esc50", fold=4)
    assert png.name == "tsne-melspec-esc50-fold4.png"
    found = check_png(png)
    for i in range(5):  # every class drawn in its own colour (alpha 0.85 over white)
        assert has_colour(found, np.round(TAB10[i] * 0.85 + 255 * 0.15).astype(int), tolerance=3), i
    assert not has_colour(found, np.round(TAB10[5] * 0.85 + 255 * 0.15).astype(int), tolerance=1)
    assert list((evar_dirs / "embeddings" / "esc50").iterdir())  # the embeddings went through the cache
    with pytest.raises(EvarError, match="esc50 has folds 1..5, got --fold 6"):
        plot_tsne("melspec", "esc50", fold=6)
    with pytest.raises(EvarError, match="uses 5-fold cross-validation; use --fold K"):
        plot_tsne("melspec", "esc50", split="test")
