"""The high-level Python API that the CLI calls: embed a task or files, probe, one call each."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .extract import embed_files, embed_task, parse_shard, save_npy_atomic, skipped_clips
from .encoders import create_encoder, get_encoder_spec, get_spec_weights, model_label
from .encoders.base import Encoder, LayerFusion
from .errors import EvarError
from .linear import ProbeResult, evaluate_embeddings, evar_row_orders
from .paths import results_dir
from .results import append_result, check_writable
from .tasks import Task, load_task
from .tasks.base import atomic_write_text
from .log import log


def _encoder(model: str, weights: str | None, layers, device: str, **encoder_kwargs) -> Encoder:
    return create_encoder(model, weights=weights, layers=layers, device=device, **encoder_kwargs)


def embed(model: str, task: str | None = None, files: Sequence[str | Path] | None = None, weights: str | None = None,
          layers: Sequence[int | str] | None = None, device: str = "cpu", batch_size: int | None = None,
          num_workers: int = 0, on_error: str = "fail", unit_sec: float | None = None, progress: bool = True,
          encoder: Encoder | None = None, options: dict | None = None,
          stats: tuple[float, float] | None = None, shard: str | tuple[int, int] | None = None,
          dtype: str = "float32") -> np.ndarray | None:
    """Embeddings of a prepared task (cached under ``embeddings/``) or of files (``unit_sec`` optional).

    ``options`` are the encoder factory's keyword arguments (e.g. ``{"mel": "byola"}``); ``stats``
    fixes the normalisation statistics of encoders that need them when embedding files. ``shard``
    (``"i/n"``) computes one shard of a task's embeddings (None is returned until all shards are done);
    ``dtype="float16"`` stores them at half the size.
    """
    encoder = encoder or _encoder(model, weights, layers, device, **(options or {}))
    if task is not None:
        if isinstance(shard, str):
            shard = parse_shard(shard)
        return embed_task(encoder, load_task(task), model_label(model, layers), batch_size, num_workers, on_error,
                          progress=progress, shard=shard, dtype=dtype)
    if shard is not None:
        raise EvarError("--shard applies to a task's embeddings, not to files")
    embeddings, _ = embed_files(encoder, files or [], unit_sec, batch_size, num_workers, on_error, progress, stats)
    return embeddings


def embed_files_to(out: str | Path, model: str, files: Sequence[str | Path], weights: str | None = None,
                   layers: Sequence[int | str] | None = None, device: str = "cpu", batch_size: int | None = None,
                   num_workers: int = 0, on_error: str = "fail", unit_sec: float | None = None,
                   options: dict | None = None, stats: tuple[float, float] | None = None,
                   progress: bool = True) -> tuple[np.ndarray, Path]:
    """Embed ``files`` into ``out`` (.npy, one row per file in the given order) and write the list of files
    beside it (``<out>.files.csv``: row, file, status — ``ok`` or why the row is NaN). Both files are
    written whole or not at all."""
    import pandas as pd

    out = Path(out)
    encoder = _encoder(model, weights, layers, device, **(options or {}))
    embeddings, errors = embed_files(encoder, files, unit_sec, batch_size, num_workers, on_error, progress, stats)
    listing = out.with_name(out.name.removesuffix(".npy") + ".files.csv")
    table = pd.DataFrame({"row": range(len(files)), "file": [str(f) for f in files],
                          "status": [e or "ok" for e in errors]})
    atomic_write_text(listing, table.to_csv(index=False))
    save_npy_atomic(out, embeddings)
    skipped = sum(bool(e) for e in errors)
    if skipped:
        log.warning("%d of %d file(s) could not be read; their rows are NaN and %s says why", skipped, len(files), listing)
    return embeddings, listing


def probe(task: str, model: str, weights: str | None = None, layers: Sequence[int | str] | None = None,
          seeds: Sequence[int] = (42,), device: str = "cpu", batch_size: int | None = None, num_workers: int = 0,
          on_error: str = "fail", lr: float = 3e-4, max_epochs: int = 200, patience: int = 20,
          record: bool = True, progress: bool = True, encoder: Encoder | None = None,
          options: dict | None = None, dtype: str = "float32", mode: str = "evar") -> ProbeResult:
    """EVAR linear evaluation of ``model`` on ``task``; appends a row to ``results/scores.csv`` when ``record``.

    ``mode="evar"`` reproduces EVAR's classifier and random stream seed for seed (:class:`evar.linear.LinearProbe`);
    ``"clean"`` seeds every fold and seed on its own.

    An event (SED) task runs the frame-level probe of :func:`evar.sed.probe_sed` instead (BCE loss).
    """
    from .tasks.sed import is_event_task

    if is_event_task(task):
        from .sed import probe_sed

        return probe_sed(task, model, weights, layers, seeds, device, batch_size, on_error, lr=lr,
                         max_epochs=max_epochs, patience=patience, record=record, progress=progress,
                         encoder=encoder, options=options)
    if encoder is None and ":" not in model:
        get_encoder_spec(model)  # an unknown name fails before any work
    if record:
        check_writable()  # a read-only results folder fails now, not after the work
    prepared = load_task(task)
    encoder = encoder or _encoder(model, weights, layers, device, **(options or {}))
    if isinstance(encoder, LayerFusion):
        layers = encoder.indices  # names and negative indices become 0-based indices in labels and rows
    label = model_label(model, layers)
    X = embed_task(encoder, prepared, label, batch_size, num_workers, on_error, progress=progress, dtype=dtype)
    skipped = skipped_clips(prepared, encoder, label, dtype)
    settings = linear_settings(prepared, encoder.config(), device, lr, max_epochs, patience, dtype, skipped, mode)
    orders = evar_row_orders(prepared, getattr(encoder, "evar_init_words", None), encoder.needs_stats) \
        if mode == "evar" else None
    rounds, scores = evaluate_embeddings(X, prepared, seeds, progress, row_orders=orders, lr=lr,
                                         max_epochs=max_epochs, patience=patience, device=device, mode=mode)
    result = ProbeResult(task, label, prepared.spec.metric, rounds, list(seeds), scores, settings)
    if record:
        _record(result, model, layers, weights, encoder, skipped)
    return result


def probe_layers(task: str, model: str, weights: str | None = None, seeds: Sequence[int] = (42,),
                 device: str = "cpu", batch_size: int | None = None, num_workers: int = 0, on_error: str = "fail",
                 lr: float = 3e-4, max_epochs: int = 200, patience: int = 20, progress: bool = True,
                 options: dict | None = None) -> list[ProbeResult]:
    """A probe per intermediate layer (time-averaged, as in layer fusion), from one embedding pass.

    Every layer's pooled embedding is cached once as one fused embedding, then sliced per layer; each layer
    gets its own row in ``results/scores.csv`` (``layers`` = its index), which `evar plot layers` reads.
    """
    check_writable()
    prepared = load_task(task)
    base = _encoder(model, weights, None, device, **(options or {}))
    if not base.layers:
        raise EvarError(f"{model} exposes no intermediate layers")
    fused = LayerFusion(base, list(range(len(base.layers)))).to(device)
    X = embed_task(fused, prepared, model_label(model, ["all"]), batch_size, num_workers, on_error, progress=progress)
    bounds = np.cumsum([0, *fused.layer_dims])
    orders = evar_row_orders(prepared, fused.evar_init_words, fused.needs_stats)
    results = []
    for index, name in enumerate(base.layers):
        X_layer = X[:, bounds[index]:bounds[index + 1]]
        settings = {**linear_settings(prepared, base.config(), device, lr, max_epochs, patience), "layer_wise": True,
                    "layer_name": name}
        rounds, scores = evaluate_embeddings(X_layer, prepared, seeds, progress, row_orders=orders, lr=lr,
                                             max_epochs=max_epochs, patience=patience, device=device)
        result = ProbeResult(task, model_label(model, [index]), prepared.spec.metric, rounds, list(seeds), scores, settings)
        _record(result, model, [index], weights, base)
        results.append(result)
    return results


def linear_settings(task: Task, encoder_config: dict, device: str, lr: float, max_epochs: int, patience: int,
                    dtype: str = "float32", skipped: dict[str, str] | None = None, mode: str = "evar") -> dict:
    """Everything a results row needs to reproduce the probe (``evar probe`` and ``evar sweep`` rows alike)."""
    settings = {"lr": lr, "max_epochs": max_epochs, "patience": patience, "probe_batch_size": 200,
                "unit_sec": task.spec.unit_sec, "encoder": encoder_config, "device": device,
                "skipped_files": sorted(skipped or {}), "linear_mode": mode}
    if dtype != "float32":  # float32 rows read as before
        settings["embedding_dtype"] = dtype
    return settings


def result_row(result: ProbeResult, model: str, layers: Sequence[int | str] | None, weights: str | None,
               weights_sha256: str | None) -> dict:
    """The ``results/scores.csv`` row of a linear probe."""
    return {
        "protocol": "linear", "model": model, "layers": ",".join(str(l) for l in layers or []), "task": result.task,
        "metric": result.metric, "score": round(result.mean, 6), "std": round(result.std, 6),
        "n_folds": len(result.rounds), "fold_scores": result.scores, "seeds": result.seeds,
        "weights": str(weights) if weights else ("official" if get_spec_weights(model) else ""),
        "weights_sha256": weights_sha256 or "", "settings": result.settings,
    }


def _record(result: ProbeResult, model: str, layers: Sequence[int | str] | None, weights: str | None,
            encoder: Encoder, skipped: dict[str, str] | None = None) -> None:
    """Append the results row; files left out (``--on-error skip``) go to ``results/skipped/<run_id>.log`` too."""
    try:
        row = append_result(result_row(result, model, layers, weights, encoder.weights_sha256))
    except EvarError as exc:  # the folder turned unwritable during the run: the score must not be lost
        raise EvarError(f"{exc} — the score of this run: {result.model} on {result.task}: {result.metric} "
                        f"{100 * result.mean:.2f} ± {100 * result.std:.2f} (embeddings are cached; rerun to record it)"
                        ) from exc
    if skipped:
        path = results_dir() / "skipped" / f"{row['run_id']}.log"
        atomic_write_text(path, "".join(f"{file}\t{reason}\n" for file, reason in sorted(skipped.items())))
        log.warning("%d file(s) left out of %s; listed in %s", len(skipped), result.task, path)
