"""The Python API that the CLI calls: embed a task or files, probe, fine-tune — one call each.

Each takes what to evaluate (a registered name or a :class:`~evar.options.ModelChoice`), the protocol's settings
and the :class:`~evar.options.RunOptions`; a probe dispatches on the task spec's kind (scene: linear, event: SED).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from evar.embeddings.cache import embed_task, parse_shard, save_npy_atomic, skipped_clips
from evar.embeddings.datasets import SharedDecoding
from evar.embeddings.files import embed_files
from evar.encoders import model_label
from evar.encoders.base import Encoder, LayerFusion
from evar.errors import EvarError
from evar.io import atomic_write_text
from evar.log import log
from evar.options import (
    FewShotSettings, KnnSettings, LinearSettings, MlpSettings, ModelChoice, RetrievalSettings, RunOptions, SedSettings,
    ZeroShotSettings,
)
from evar.protocols.base import Result, layer_names, record as record_result, weights_field
from evar.results.provenance import timed_run
from evar.results.store import check_writable
from evar.tasks import Task, get_task_spec, load_task


def embed(model: str | ModelChoice, task: str | None = None, files: Sequence[str | Path] | None = None,
          run: RunOptions = RunOptions(), encoder: Encoder | None = None, unit_sec: float | None = None,
          stats: tuple[float, float] | None = None, shard: str | tuple[int, int] | None = None,
          decoded: SharedDecoding | None = None) -> np.ndarray | None:
    """Embeddings of a prepared task (cached under ``embeddings/``) or of files (``unit_sec`` optional).

    ``stats`` fixes the normalisation statistics of encoders that need them when embedding files. ``shard``
    (``"i/n"``) computes one shard of a task's embeddings (None is returned until all shards are done).
    ``decoded``: the task's clips decoded once for several encoders (:class:`SharedDecoding`, as sweeps do).
    """
    model = ModelChoice.of(model)
    encoder = encoder or model.build(run.device)
    if task is not None:
        if isinstance(shard, str):
            shard = parse_shard(shard)
        return embed_task(encoder, load_task(task), model_label(model.name, fused_layers(model, encoder)), run,
                          shard=shard, decoded=decoded)
    if shard is not None:
        raise EvarError("--shard applies to a task's embeddings, not to files")
    embeddings, _ = embed_files(encoder, files or [], unit_sec, run, stats)
    return embeddings


def embed_files_to(out: str | Path, model: str | ModelChoice, files: Sequence[str | Path],
                   run: RunOptions = RunOptions(), unit_sec: float | None = None,
                   stats: tuple[float, float] | None = None) -> tuple[np.ndarray, Path]:
    """Embed ``files`` into ``out`` (.npy, one row per file in the given order) and write the list of files
    beside it (``<out>.files.csv``: row, file, status — ``ok`` or why the row is NaN). Both files are
    written whole or not at all."""
    import pandas as pd

    out = Path(out)
    encoder = ModelChoice.of(model).build(run.device)
    embeddings, errors = embed_files(encoder, files, unit_sec, run, stats)
    listing = out.with_name(out.name.removesuffix(".npy") + ".files.csv")
    table = pd.DataFrame({"row": range(len(files)), "file": [str(f) for f in files],
                          "status": [e or "ok" for e in errors]})
    atomic_write_text(listing, table.to_csv(index=False))
    save_npy_atomic(out, embeddings)
    skipped = sum(bool(e) for e in errors)
    if skipped:
        log.warning("%d of %d file(s) could not be read; their rows are NaN and %s says why", skipped, len(files), listing)
    return embeddings, listing


#: the probes of clip-level tasks on cached embeddings: ``--protocol`` name → settings class
CLIP_PROTOCOLS = {"linear": LinearSettings, "mlp": MlpSettings, "knn": KnnSettings, "fewshot": FewShotSettings,
                  "zeroshot": ZeroShotSettings}


def protocol_name(settings: Any) -> str:
    """The results row's protocol of ``settings`` or its class (``sed`` for :class:`SedSettings`)."""
    kind = settings if isinstance(settings, type) else type(settings)
    if issubclass(kind, SedSettings):
        return "sed"
    if issubclass(kind, RetrievalSettings):
        return "retrieval"
    return next(name for name, cls in reversed(CLIP_PROTOCOLS.items()) if issubclass(kind, cls))


def probe_settings(task: str, protocol: str | None = None, **values: Any) -> Any:
    """The settings object for probing ``task`` with ``protocol`` (None: ``linear``, or the SED probe for an
    event task); ``values`` left None take the defaults, and one that does not apply is an error."""
    kind = get_task_spec(task).kind
    if kind == "event":
        if protocol not in (None, "sed"):
            raise EvarError(f"{task} is an event (SED) task: its probe is the frame-level SED probe, not {protocol}")
        cls = SedSettings
    elif kind == "captions" or protocol == "retrieval":
        if kind != "captions":
            raise EvarError(f"retrieval needs a caption task (clotho, audiocaps); {task} is a {kind} task")
        if protocol not in (None, "retrieval"):
            raise EvarError(f"{task} is a caption task: its protocol is retrieval, not {protocol}")
        cls = RetrievalSettings
    elif (protocol or "linear") in CLIP_PROTOCOLS:
        cls = CLIP_PROTOCOLS[protocol or "linear"]
    else:
        raise EvarError(f"unknown protocol {protocol!r} for {task}; choose from {', '.join(CLIP_PROTOCOLS)}")
    given = {k: v for k, v in values.items() if v is not None}
    fields = cls.__dataclass_fields__
    foreign = sorted(k for k in given if k not in fields)
    if foreign:
        names = ", ".join("--" + k.replace("_", "-") for k in foreign)
        raise EvarError(f"{names} do(es) not apply to the {protocol_name(cls)} probe of {task}; its "
                        f"settings: {', '.join(sorted(fields))}")
    return cls(**given)


@timed_run
def probe(task: str, model: str | ModelChoice, settings: Any = None,
          run: RunOptions = RunOptions(), encoder: Encoder | None = None, record: bool = True) -> Result:
    """Evaluate ``model`` on ``task`` with the protocol of the task's kind; appends a row to
    ``results/scores.csv`` when ``record``.

    Clip-level tasks, by the class of ``settings``: EVAR's linear evaluation (:class:`LinearSettings`,
    :class:`evar.protocols.linear.LinearProbe`; ``mode="evar"`` reproduces EVAR's classifier and random stream seed
    for seed), its MLP (:class:`MlpSettings`), kNN (:class:`KnnSettings`), few-shot (:class:`FewShotSettings`) or zero-shot
    (:class:`ZeroShotSettings`, encoders with a text tower), all on the one embedding cache. Event (SED) tasks: the frame-level probe of :func:`evar.protocols.sed.probe_sed`.
    ``settings`` None takes the linear protocol's defaults.
    """
    model = ModelChoice.of(model)
    settings = settings or probe_settings(task)
    if get_task_spec(task).kind == "event":
        from evar.protocols.sed import probe_sed

        if not isinstance(settings, SedSettings):
            raise EvarError(f"{task} is an event (SED) task: give SedSettings (see evar.api.probe_settings)")
        return probe_sed(task, model, settings, run, encoder, record)
    if isinstance(settings, RetrievalSettings) != (get_task_spec(task).kind == "captions"):
        raise EvarError(f"retrieval runs on caption tasks (clotho, audiocaps), and a caption task only with "
                        f"RetrievalSettings; got {type(settings).__name__} for {task}")
    if not isinstance(settings, (*CLIP_PROTOCOLS.values(), RetrievalSettings)):
        raise EvarError(f"{task} is a clip-level task: give the settings of one of {', '.join(CLIP_PROTOCOLS)} "
                        "(see evar.api.probe_settings)")
    if encoder is None:
        model.check_name()  # an unknown name fails before any work
    if record:
        check_writable()  # a read-only results folder fails now, not after the work
    prepared = load_task(task)
    encoder = encoder or model.build(run.device)
    layers = fused_layers(model, encoder)
    label = model_label(model.name, layers)
    X = embed_task(encoder, prepared, label, run)
    skipped = skipped_clips(prepared, encoder, label, run.dtype, autocast=run.autocast)
    names, scores, recorded = _clip_rounds(X, prepared, encoder, settings, run, skipped)
    result = Result(protocol_name(settings), task, model.name, layer_names(layers), prepared.spec.metric, names,
                    list(settings.seeds), scores, recorded, weights_field(model.name, model.weights),
                    encoder.weights_sha256 or "")
    if record:
        record_result(result, skipped)
    return result


@timed_run
def probe_layers(task: str, model: str | ModelChoice, settings: LinearSettings = LinearSettings(),
                 run: RunOptions = RunOptions()) -> list[Result]:
    """A linear probe per intermediate layer (time-averaged, as in layer fusion), from one embedding pass.

    Every layer's pooled embedding is cached once as one fused embedding, then sliced per layer; each layer
    gets its own row in ``results/scores.csv`` (``layers`` = its index), which `evar plot layers` reads.
    """
    model = ModelChoice.of(model)
    prepared, base, fused, X, bounds = _all_layers(task, model, settings, run)
    results = []
    for index, name in enumerate(base.layers):
        recorded = {**linear_settings(prepared, base.config(), settings, run), "layer_wise": True, "layer_name": name}
        names, scores, _ = _linear_rounds(X[:, bounds[index]:bounds[index + 1]], prepared, fused, settings, run)
        result = Result("linear", task, model.name, [str(index)], prepared.spec.metric, names, list(settings.seeds),
                        scores, recorded, weights_field(model.name, model.weights), base.weights_sha256 or "")
        record_result(result)
        results.append(result)
    return results


@timed_run
def probe_weighted_layers(task: str, model: str | ModelChoice, settings: LinearSettings = LinearSettings(),
                          run: RunOptions = RunOptions()) -> Result:
    """The linear (or MLP) probe on a learnt softmax-weighted sum of every layer (SUPERB's featuriser), from the
    same cached per-layer embeddings as :func:`probe_layers`; each layer standardised first. The weighting acts on
    the pooled layers (for mean-pooled encoders the same as pooling the weighted sum). The row's ``layers`` is
    ``weighted``; ``settings.layer_weights[round][seed]`` holds the softmax weights learnt."""
    from evar.protocols.base import score_rounds
    from evar.protocols.linear import LinearRounds

    model = ModelChoice.of(model)
    prepared, base, _, X, bounds = _all_layers(task, model, settings, run)
    widths = set(np.diff(bounds))
    if len(widths) != 1:
        raise EvarError(f"{model.name}'s layers differ in width ({sorted(widths)}): a weighted sum needs equal widths")
    rounds = LinearRounds(X, prepared, settings, run.device, weighted_layers=len(base.layers))
    names, scores = score_rounds(rounds, settings.seeds, run.progress)
    recorded = {**linear_settings(prepared, base.config(), settings, run), "layer_names": list(base.layers),
                "layer_weights": [[rounds.layer_weights[(r, seed)] for seed in settings.seeds] for r in range(len(names))],
                **rounds.class_results()}
    if isinstance(settings, MlpSettings):
        recorded.update(hidden=list(settings.hidden), dropout=settings.dropout, grid=settings.grid)
    result = Result(protocol_name(settings), task, model.name, ["weighted"], prepared.spec.metric, names,
                    list(settings.seeds), scores, recorded, weights_field(model.name, model.weights),
                    base.weights_sha256 or "")
    record_result(result)
    return result


def _all_layers(task: str, model: ModelChoice, settings: Any, run: RunOptions):
    """(task, the encoder, its fusion of every layer, their pooled embeddings side by side — cached as
    ``model+all`` — and the column bounds of each layer)."""
    if not isinstance(settings, LinearSettings):
        raise EvarError("--layers all|weighted probes the layers with the linear or mlp protocol")
    check_writable()
    prepared = load_task(task)
    base = ModelChoice(model.name, model.weights, (), model.options).build(run.device)
    if not base.layers:
        raise EvarError(f"{model.name} exposes no intermediate layers")
    fused = LayerFusion(base, list(range(len(base.layers)))).to(run.device)
    X = embed_task(fused, prepared, f"{model.name}+all", run)
    return prepared, base, fused, X, np.cumsum([0, *fused.layer_dims])


def fused_layers(model: ModelChoice, encoder: Encoder) -> list[int | str]:
    """The layers of a fusion as 0-based indices (names and negative indices resolved), else the choice's."""
    return encoder.indices if isinstance(encoder, LayerFusion) else list(model.layers)


def _clip_rounds(X: np.ndarray, task: Task, encoder: Encoder, settings: Any, run: RunOptions,
                 skipped: dict[str, str]) -> tuple[list[str], list[list[float]], dict]:
    """Round names, ``scores[round][seed]`` and the row's settings of a clip-level protocol on embeddings ``X``."""
    from evar.protocols.base import score_rounds
    from evar.protocols.fewshot import FewShotRounds
    from evar.protocols.knn import KnnRounds

    if isinstance(settings, LinearSettings):
        recorded = linear_settings(task, encoder.config(), settings, run, skipped)
        if isinstance(settings, MlpSettings):
            recorded.update(hidden=list(settings.hidden), dropout=settings.dropout, grid=settings.grid)
        names, scores, rounds = _linear_rounds(X, task, encoder, settings, run)
        if rounds.chosen:
            recorded["grid_chosen"] = [[rounds.chosen[(r, seed)] for seed in settings.seeds] for r in range(len(names))]
        return names, scores, {**recorded, **rounds.class_results()}
    recorded = {**{k: v for k, v in asdict(settings).items() if k != "seeds"}, "unit_sec": task.spec.unit_sec,
                "encoder": encoder.config(), "device": run.device, "skipped_files": sorted(skipped)}
    if isinstance(settings, RetrievalSettings):
        from evar.protocols.retrieval import RetrievalRounds, caption_embeddings as retrieval_captions

        rounds = RetrievalRounds(X, task, retrieval_captions(encoder, task, settings, run.progress))
        names, scores = score_rounds(rounds, settings.seeds, run.progress)
        return names, scores, {**recorded, **rounds.recorded()}
    if isinstance(settings, ZeroShotSettings):
        from evar.protocols.zeroshot import ZeroShotRounds, caption_embeddings

        captions, text = caption_embeddings(encoder, task, settings)
        rounds = ZeroShotRounds(X, task, text)
        recorded["captions"] = captions
    else:
        rounds = (KnnRounds if isinstance(settings, KnnSettings) else FewShotRounds)(X, task, settings)
    names, scores = score_rounds(rounds, settings.seeds, run.progress)
    recorded.update(rounds.class_results())
    if isinstance(rounds, FewShotRounds):
        recorded["draw_scores"] = [[rounds.draw_scores[(r, seed)] for seed in settings.seeds]
                                   for r in range(len(names))]
    if run.dtype != "float32":
        recorded["embedding_dtype"] = run.dtype
    if run.autocast:
        recorded["autocast"] = run.autocast
    return names, scores, recorded


def _linear_rounds(X: np.ndarray, task: Task, encoder: Encoder, settings: LinearSettings, run: RunOptions):
    """The linear (or MLP) rounds: names, ``scores[round][seed]`` and the :class:`LinearRounds` (its grid choices
    and predictions)."""
    from evar.protocols.base import score_rounds
    from evar.protocols.linear import LinearRounds, evar_row_orders

    orders = evar_row_orders(task, getattr(encoder, "evar_init_words", None), encoder.needs_stats) \
        if settings.mode == "evar" else None
    rounds = LinearRounds(X, task, settings, run.device, orders)
    names, scores = score_rounds(rounds, settings.seeds, run.progress)
    return names, scores, rounds


def linear_settings(task: Task, encoder_config: dict, settings: LinearSettings, run: RunOptions,
                    skipped: dict[str, str] | None = None) -> dict:
    """What a linear results row records to reproduce the probe (``evar probe`` and ``evar sweep`` rows alike)."""
    recorded = {"lr": settings.lr, "max_epochs": settings.max_epochs, "patience": settings.patience,
                "probe_batch_size": 200, "unit_sec": task.spec.unit_sec, "encoder": encoder_config,
                "device": run.device, "skipped_files": sorted(skipped or {}), "linear_mode": settings.mode}
    if run.dtype != "float32":  # float32 rows read as before
        recorded["embedding_dtype"] = run.dtype
    if run.autocast:
        recorded["autocast"] = run.autocast
    return recorded


@timed_run
def finetune(task: str, model: str | ModelChoice, settings: dict[str, Any] | None = None,
             run: RunOptions = RunOptions(), resume: bool = False, encoder: Encoder | None = None,
             epoch_hook: Callable | None = None, record: bool = True):
    """Fine-tune ``model`` on ``task`` under EVAR's protocol (:func:`evar.protocols.finetune.finetune`);
    ``settings`` are :class:`~evar.protocols.finetune.FineTuneSettings` fields, unset ones the encoder's defaults."""
    from evar.protocols.finetune import finetune as run_finetune

    return run_finetune(task, ModelChoice.of(model), settings or {}, run, resume, encoder, epoch_hook, record)
