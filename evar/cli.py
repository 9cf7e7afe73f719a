"""The ``evar`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import glob
import math
import sys
from pathlib import Path
from typing import Callable

from evar.errors import EvarError

COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


def command(name: str) -> Callable:
    def decorator(fn: Callable[[argparse.Namespace], int | None]) -> Callable:
        COMMANDS[name] = fn
        return fn

    return decorator


def _layers(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _json_dict(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"mel\": \"byola\"}'")
    return value


def _mean_std(text: str) -> tuple[float, float]:
    try:
        mean, std = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected MEAN,STD, e.g. -5.49,5.04") from exc
    if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: MEAN must be finite and STD a positive number, e.g. -5.49,5.04")
    return mean, std


def _seeds(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or not all(p.lstrip("-").isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 42,43,44")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: a seed is repeated (each seed counts once in the average)")
    return seeds


def _number(kind: type, minimum: float, inclusive: bool = True) -> Callable[[str], float]:
    """An argparse type: ``kind`` (int or float) at least ``minimum`` (or above it)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or value < minimum or (not inclusive and value == minimum):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {'at least' if inclusive else 'above'} {minimum:g}")
        return value

    return parse


POSITIVE_INT, NON_NEGATIVE_INT = _number(int, 1), _number(int, 0)
POSITIVE_FLOAT, NON_NEGATIVE_FLOAT = _number(float, 0, inclusive=False), _number(float, 0)


def _device(text: str) -> str:
    import re

    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps|xpu(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected cpu, cuda, cuda:N, mps or xpu")
    return text


def _run_options(p: argparse.ArgumentParser) -> None:
    """How the encoder runs and its embeddings are stored (embed, probe, sweep)."""
    p.add_argument("--device", type=_device, default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=None,
                   help="clips per encoder batch (default: about 32 s of audio, e.g. 8 clips of 4 s)")
    p.add_argument("--num-workers", type=NON_NEGATIVE_INT, default=0, help="DataLoader worker processes for audio decoding")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="storage type of cached task embeddings (float16: half the disk and memory)")
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                   help="bad audio: stop (fail) or skip it and report (skip)")


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registered encoder name (see `evar list models`)")
    p.add_argument("--weights", help="local checkpoint file (default: official weights from the cache)")
    p.add_argument("--layers", help="comma-separated layers to fuse (EUSIPCO 2022), e.g. 3,6; "
                   "with probe: `all` probes each layer separately")
    _run_options(p)
    p.add_argument("--model-options", type=_json_dict, default=None,
                   help='JSON keyword arguments for the encoder, e.g. \'{"mel": "byola"}\' or \'{"pooling": "mean"}\'')


class _Parser(argparse.ArgumentParser):
    """One line per mistake (``evar probe: error: ...``) and exit code 2, instead of the whole usage."""

    def error(self, message: str):  # type: ignore[override]
        import difflib
        import re

        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            close = difflib.get_close_matches(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)), n=2)
            if close:
                message += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="evar", description="Benchmark general-purpose audio representations under EVAR's fixed protocol.",
        epilog="Start with: evar list models; evar prepare esc50 --root DIR; evar probe --task esc50 --model byola")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more messages (debug)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="registered models or tasks")
    p.add_argument("what", choices=["models", "tasks"])

    p = sub.add_parser("prepare", help="prepare a task's metadata from its official download layout")
    p.add_argument("task", help="task name, `custom` (with --csv/--name), `sed` (events CSV with --csv/--name) "
                   "or `hear` (a HEAR 2021 task folder, scene or event)")
    p.add_argument("--root", required=True, help="the dataset folder as downloaded (or the audio root for custom)")
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    p.add_argument("--csv", help="custom task: CSV with file,label,split or file,label,fold; "
                   "sed task: file,onset,offset,label,split (or fold), times in seconds")
    p.add_argument("--name", help="custom or hear task: its name")
    p.add_argument("--unit-sec", type=POSITIVE_FLOAT, help="custom task: clip duration in seconds")

    p = sub.add_parser("download", help="download and extract a dataset from its official source")
    p.add_argument("task", nargs="?", help="task name (see --list)")
    p.add_argument("--to", help="folder to download into")
    p.add_argument("--keep-archives", action="store_true", help="keep the archives after extraction")
    p.add_argument("--list", action="store_true", help="show every download: URLs, checksums, folder to prepare")

    p = sub.add_parser("embed", help="compute (and cache) embeddings of a task or of audio files")
    _model_options(p)
    p.add_argument("files", nargs="*", help="audio files (globs allowed) instead of --task")
    p.add_argument("--task", help="a prepared task")
    p.add_argument("--out", help="with files: write the embeddings to this .npy")
    p.add_argument("--unit-sec", type=POSITIVE_FLOAT, help="with files: crop/pad every clip to this duration")
    p.add_argument("--stats", type=_mean_std, help="with files: normalisation MEAN,STD for encoders that need "
                   "dataset statistics (BYOL-A, AST, MSM-MAE); default: measured on the given files")
    p.add_argument("--shard", help="with --task: compute shard I/N only (I from 0, e.g. $SLURM_ARRAY_TASK_ID/16); "
                   "the last shard to finish assembles the embeddings")

    p = sub.add_parser("probe", help="linear evaluation (EVAR protocol); appends to results/scores.csv")
    _model_options(p)
    p.add_argument("--task", required=True)
    p.add_argument("--seeds", type=_seeds, help="comma-separated seeds (default 42); EVAR's papers average 42,43,44")
    p.add_argument("--lr", type=POSITIVE_FLOAT, help="default 3e-4 (evar.options.ProbeSettings)")
    p.add_argument("--max-epochs", type=POSITIVE_INT, help="default 200")
    p.add_argument("--patience", type=NON_NEGATIVE_INT, help="default 20")
    p.add_argument("--linear-mode", choices=["evar", "clean"],
                   help="evar (default): EVAR's classifier and random stream, seed for seed (its two-pass runner); "
                        "clean: each fold and seed seeded on its own, scaler on the training part, argmax of logits")
    p.add_argument("--loss", choices=["bce", "afl", "soft_f1"],
                   help="event (SED) tasks: frame loss (default bce); afl: asymmetric focal loss, soft_f1: soft F-measure")
    p.add_argument("--afl-gamma", type=float, help="event tasks, afl: focus on active frames (default 0)")
    p.add_argument("--afl-zeta", type=float, help="event tasks, afl: focus on inactive frames (default 1)")

    p = sub.add_parser("finetune", help="fine-tune an encoder on a task (EVAR protocol); appends to results/scores.csv")
    p.add_argument("--task", required=True)
    p.add_argument("--model", required=True, help="registered encoder name (see `evar list models`)")
    p.add_argument("--weights", help="local checkpoint file (default: official weights from the cache)")
    p.add_argument("--device", type=_device, default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--num-workers", type=NON_NEGATIVE_INT, default=0, help="DataLoader worker processes for audio decoding")
    g = p.add_argument_group("training (unset: the encoder's EVAR defaults, e.g. byola 0.001/256/200/5/0.5/30/100/rrc)")
    g.add_argument("--lr", type=POSITIVE_FLOAT)
    g.add_argument("--epochs", type=POSITIVE_INT)
    g.add_argument("--batch-size", type=POSITIVE_INT)
    g.add_argument("--warmup-epochs", type=NON_NEGATIVE_FLOAT)
    g.add_argument("--optimizer", choices=["sgd", "adamw"], help="default sgd (momentum 0.9, no weight decay)")
    g.add_argument("--mixup", type=NON_NEGATIVE_FLOAT, help="mixup alpha on waveforms; 0 turns it off")
    g.add_argument("--freq-mask", type=NON_NEGATIVE_INT, help="frequency mask width (log-mel bins); 0 turns it off")
    g.add_argument("--time-mask", type=NON_NEGATIVE_INT, help="time mask width (frames); 0 turns it off")
    g.add_argument("--rrc", action=argparse.BooleanOptionalAction, default=None, help="random resize crop")
    g.add_argument("--aug-shared", action="store_true", default=None,
                   help="one mask/crop per batch, as EVAR applies them (default: one per clip)")
    g.add_argument("--loss", choices=["ce", "wce", "bce", "afl", "soft_f1"],
                   help="ce: EVAR's (BCE for multi-label); wce: inverse-frequency weighted ce; afl: asymmetric focal")
    g.add_argument("--afl-gamma", type=float, help="asymmetric focal loss: focus on active targets (default 0)")
    g.add_argument("--afl-zeta", type=float, help="asymmetric focal loss: focus on inactive targets (default 1)")
    g.add_argument("--pos-weight", type=float, help="bce/ce multi-label: weight of active targets (simple re-weighting)")
    g.add_argument("--inverse-frequency", action="store_true", default=None,
                   help="bce/afl: weigh classes by inverse training frequency")
    g.add_argument("--mix-training", action="store_true", default=None,
                   help="first train on two-clip blends with the union of labels (BCE), then on unmixed clips")
    g.add_argument("--mix-epochs", type=float, help="fraction of --epochs in the mixed phase (default 0.5)")
    g.add_argument("--mix-ratio", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="blend weight a ~ U(LOW, HIGH) (default 0.3 0.7)")
    g.add_argument("--freeze", action="store_true", default=None, help="train the head only (encoder frozen, eval mode)")
    g.add_argument("--early-stop", type=NON_NEGATIVE_INT, help="stop N epochs after the best validation epoch (default off)")
    g.add_argument("--cv-protocol", choices=["holdout", "evar"],
                   help="folds without a valid split: holdout (10%% of training validates; test at the best epoch; "
                        "default) or evar (the test fold validates; best test score over epochs, optimistic)")
    g.add_argument("--no-epoch-test", dest="epoch_test", action="store_false", default=None,
                   help="test once with the best weights instead of every epoch")
    g.add_argument("--seed", type=int)
    g.add_argument("--amp", action="store_true", default=None, help="bfloat16 autocast (CUDA only)")
    p.add_argument("--resume", action="store_true", help="continue the latest unfinished run with the same settings")

    p = sub.add_parser("leaderboard", help="model x task table of results/scores.csv (Markdown, LaTeX, CSV, HTML)")
    p.add_argument("--format", choices=["md", "latex", "csv", "html"], default="md",
                   help="md (default), latex (booktabs), csv (numeric) or html")
    p.add_argument("--out", help="write the table to this file instead of printing it")
    p.add_argument("--protocol", default="linear", help="linear (default) or finetune")
    p.add_argument("--tasks", help="comma-separated tasks, in column order (default: every task with results)")
    p.add_argument("--models", help="comma-separated models or labels, in row order, e.g. byola,cnn14+2,5")
    p.add_argument("--groups", action="store_true", help="add SER / NOSS / Music average columns")
    p.add_argument("--compare-published", action="store_true",
                   help="beside each cell, the number the original paper reports (evar/published.csv)")
    p.add_argument("--published-source", help="prefer published rows whose source contains this text")
    p.add_argument("--all-runs", action="store_true", help="list every run, not only the latest of each")
    p.add_argument("--digits", type=NON_NEGATIVE_INT, default=1, help="decimals of the percentages (default 1)")

    p = sub.add_parser("plot", help="figures as PNG: layer-wise curve, t-SNE, leaderboard bars")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    q = kinds.add_parser("layers", help="probe score per layer (runs of probe --layers all)")
    q.add_argument("--model", required=True)
    q.add_argument("--task", required=True)
    q.add_argument("--protocol", default="linear")
    q.add_argument("--out", help="PNG path (default: results/plots/layers-MODEL-TASK.png)")
    q = kinds.add_parser("tsne", help="t-SNE of a task's cached embeddings, coloured by class")
    _model_options(q)
    q.add_argument("--task", required=True)
    q.add_argument("--fold", type=int, help="cross-validation tasks: only this fold's clips")
    q.add_argument("--split", choices=["train", "valid", "test"], help="fixed-split tasks: only this split")
    q.add_argument("--max-points", type=POSITIVE_INT, default=5000, help="random subset above this many clips")
    q.add_argument("--perplexity", type=POSITIVE_FLOAT, default=30.0)
    q.add_argument("--seed", type=int, default=42)
    q.add_argument("--out", help="PNG path (default: results/plots/tsne-MODEL-TASK[-foldK].png)")
    q = kinds.add_parser("bars", help="grouped bar chart of the leaderboard")
    q.add_argument("--protocol", default="linear")
    q.add_argument("--tasks", help="comma-separated tasks")
    q.add_argument("--models", help="comma-separated models or labels")
    q.add_argument("--out", help="PNG path (default: results/plots/bars-PROTOCOL.png)")

    p = sub.add_parser("pretrain", help="self-supervised pre-training (COLA) on a folder of audio")
    p.add_argument("method", choices=["cola"])
    p.add_argument("--audio-dir", required=True, help="folder of audio files (searched recursively)")
    p.add_argument("--out", required=True, help="weights file to write (.safetensors or .pt)")
    p.add_argument("--backbone", choices=["efficientnet_b0", "byola"], default="efficientnet_b0")
    p.add_argument("--epochs", type=POSITIVE_INT, default=100)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64)
    p.add_argument("--steps-per-epoch", type=POSITIVE_INT, help="default: one pass over the files")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=1e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--d", type=POSITIVE_INT, default=512, help="projection size")
    p.add_argument("--device", type=_device, default="cpu")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint beside --out")

    p = sub.add_parser("hear", help="HEAR 2021 module tools")
    hear_sub = p.add_subparsers(dest="hear_command", metavar="HEAR_COMMAND", required=True)
    v = hear_sub.add_parser("validate", help="run hear-validator's checks (and evar's) on a HEAR module")
    v.add_argument("module", help="importable module name implementing the HEAR API")
    v.add_argument("--model-file", default="", help="passed to load_model")
    v.add_argument("--device", type=_device, default="cpu")
    v.add_argument("--model-options", type=_json_dict, help="JSON dict of keyword arguments for load_model")
    v.add_argument("--hear-only", action="store_true", help="only hear-validator's own checks")
    v.add_argument("--verbose", action="store_true", help="list passing checks too")

    p = sub.add_parser("demo", help="smoke run: generate an ESC-50-shaped dataset, prepare, probe, leaderboard")
    p.add_argument("--dir", default="demo", help="where to write the generated dataset")
    p.add_argument("--byola-weights", help="BYOL-A 512-d checkpoint to include byola in the run")

    p = sub.add_parser("sweep", help="every model on every task (resumable: done jobs are skipped, failed ones retried)")
    p.add_argument("--models", required=True, help="comma-separated models, a layer fusion as name+layers: byola,cnn14+2,5")
    p.add_argument("--tasks", required=True, help="comma-separated prepared tasks, e.g. esc50,us8k,spcv2")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=POSITIVE_INT, default=1, help="number of seeds, 42 upwards (default 1; EVAR's papers: 3)")
    seeds.add_argument("--seed-list", type=_seeds, help="explicit comma-separated seeds, e.g. 42,43,44")
    p.add_argument("--protocol", choices=["linear", "finetune"], default="linear",
                   help="linear: one job per (model, task) over all seeds; finetune: one per (model, task, seed)")
    p.add_argument("--weights", help="checkpoints per model: MODEL=PATH,MODEL=PATH (default: official weights)")
    p.add_argument("--model-options", type=_json_dict, help='JSON per model, e.g. \'{"byola": {"mel": "byola"}}\'')
    p.add_argument("--backend", choices=["local", "ray"], default="local", help="local (this process) or ray")
    p.add_argument("--address", help="ray: cluster address, e.g. ray://head:10001 (default: start a local instance)")
    p.add_argument("--num-cpus", type=float, default=1, help="ray: CPUs per task")
    p.add_argument("--num-gpus", type=float, default=0, help="ray: GPUs per task (fractions allowed)")
    p.add_argument("--max-retries", type=NON_NEGATIVE_INT, default=3, help="ray: retries of a task whose worker died")
    _run_options(p)
    p.add_argument("--lr", type=POSITIVE_FLOAT, help="linear probe learning rate (default 3e-4)")
    p.add_argument("--max-epochs", type=POSITIVE_INT, help="linear probe epochs at most (default 200)")
    p.add_argument("--patience", type=NON_NEGATIVE_INT, help="linear probe early-stopping patience (default 20)")
    p.add_argument("--linear-mode", choices=["evar", "clean"], help="as for evar probe (default evar)")

    p = sub.add_parser("status", help="jobs of the last sweep (or --sweep ID): done, running, failed, with reasons")
    p.add_argument("--sweep", help="sweep id (or its start); default: the sweep run last")
    p.add_argument("--all", action="store_true", help="every job ever recorded, from all sweeps")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    return parser


@command("list")
def cmd_list(args: argparse.Namespace) -> None:
    if args.what == "models":
        from evar.encoders import list_encoders, list_prefixes
        from evar.encoders.weights import weights_status

        print(f"{'model':<17} {'rate':>6} {'dim':>6}  {'weights':<17} description")
        for spec in list_encoders():
            status = weights_status(spec.weights) if spec.weights else (spec.weights_note or "none needed")
            print(f"{spec.name:<17} {spec.sample_rate or '?':>6} {spec.embed_dim or '?':>6}  {status:<17} {spec.description}")
        for prefix, factory in list_prefixes().items():
            summary = (factory.__doc__ or "").strip().splitlines()[0] if factory.__doc__ else ""
            print(f"{prefix + ':<module>':<17} {'module':>6} {'module':>6}  {'module':<17} {summary}")
    else:
        from evar.tasks import is_prepared, list_tasks, load_task
        from evar.tasks.sed import is_event_task, primary_metric

        print(f"{'task':<10} {'classes':>7} {'unit s':>6} {'protocol':<9} {'metric':<8} status")
        for spec in list_tasks():
            protocol = f"{spec.folds}-fold" if spec.folds else "split"
            metric = primary_metric(spec.name) if is_event_task(spec.name) else spec.metric
            status = "not prepared"
            if is_prepared(spec.name):
                info = load_task(spec.name).info
                counts = ", ".join(f"{k}: {v}" for k, v in info.get("per_fold", info.get("per_split", {})).items())
                status = f"prepared: {info['n_files']} files, {len(info['per_class'])} classes ({counts})"
            print(f"{spec.name:<10} {spec.n_classes or '?':>7} {spec.unit_sec:>6} {protocol:<9} {metric:<8} {status}")


@command("prepare")
def cmd_prepare(args: argparse.Namespace) -> None:
    if args.task == "custom":
        from evar.tasks.custom import prepare_custom

        if not args.csv or not args.name:
            raise EvarError("prepare custom needs --csv FILE and --name NAME")
        task = prepare_custom(args.csv, args.root, args.name, args.unit_sec, args.on_error)
    elif args.task == "sed":
        from evar.tasks.sed import prepare_sed

        if not args.csv or not args.name:
            raise EvarError("prepare sed needs --csv FILE and --name NAME")
        task = prepare_sed(args.csv, args.root, args.name, args.unit_sec, args.on_error)
    elif args.task == "hear":
        from evar.tasks.hear import prepare_hear

        task = prepare_hear(args.root, name=args.name, unit_sec=args.unit_sec, on_error=args.on_error)
    else:
        from evar.tasks import prepare_task

        task = prepare_task(args.task, args.root, args.on_error)
    print(f"prepared {task.name}: {len(task)} files, {len(task.classes)} classes, unit {task.spec.unit_sec:g} s, "
          f"root {task.root}")


@command("download")
def cmd_download(args: argparse.Namespace) -> None:
    from evar.tasks.download import describe_downloads, download_task

    if args.list:
        print(describe_downloads())
        return
    if not args.task or not args.to:
        raise EvarError("usage: evar download TASK --to DIR (or evar download --list)")
    root = download_task(args.task, args.to, keep_archives=args.keep_archives)
    print(f"downloaded {args.task}; next: evar prepare {args.task} --root {root}")


def _model(args: argparse.Namespace):
    from evar.options import ModelChoice

    layers = _layers(args.layers)
    return ModelChoice(args.model, args.weights, tuple(layers) if layers and layers != ["all"] else (),
                       args.model_options or {})


def _run(args: argparse.Namespace, progress: bool = True):
    from evar.options import RunOptions

    return RunOptions(args.device, getattr(args, "batch_size", None), args.num_workers,
                      getattr(args, "on_error", "fail"), progress, getattr(args, "dtype", "float32"))


@command("embed")
def cmd_embed(args: argparse.Namespace) -> None:
    from evar.api import embed, embed_files_to

    if bool(args.task) == bool(args.files):
        raise EvarError("give either --task TASK or audio files")
    if args.files:
        if not args.out:
            raise EvarError("--out PATH.npy is required when embedding files")
        files = [f for pattern in args.files for f in (sorted(glob.glob(pattern)) or [pattern])]  # order kept
        emb, listing = embed_files_to(args.out, _model(args), files, _run(args), args.unit_sec, args.stats)
        print(f"wrote {args.out}: {emb.shape[0]} x {emb.shape[1]} (files in {listing})")
        return
    emb = embed(_model(args), task=args.task, run=_run(args), shard=args.shard)
    if emb is not None:  # None: a shard whose siblings are still running (embed_task said how many chunks are left)
        print(f"embeddings of {args.task}: {emb.shape[0]} x {emb.shape[1]} (cached)")


@command("probe")
def cmd_probe(args: argparse.Namespace) -> None:
    from evar.api import probe, probe_layers, probe_settings

    settings = probe_settings(args.task, lr=args.lr, max_epochs=args.max_epochs, patience=args.patience,
                              seeds=args.seeds, mode=args.linear_mode, loss=args.loss, afl_gamma=args.afl_gamma,
                              afl_zeta=args.afl_zeta)
    if args.layers == "all":
        for result in probe_layers(args.task, _model(args), settings, _run(args)):
            print(f"{result.label} ({result.settings['layer_name']}) on {result.task}: {result.metric} "
                  f"{100 * result.mean:.2f} ± {100 * result.std:.2f}")
        return
    result = probe(args.task, _model(args), settings, _run(args))
    if result.protocol == "sed":
        last = result.settings["sed"][-1]
        print(f"{result.summary()}; segment 1 s F1 {100 * last['segment_1s']['f_measure']:.2f}, "
              f"ER {last['segment_1s']['error_rate']:.3f} ({last['round']}, seed {last['seed']})")
        return
    per_round = ", ".join(f"{name} {100 * sum(s) / len(s):.2f}" for name, s in zip(result.rounds, result.scores))
    print(f"{result.summary()} ({per_round})")


@command("finetune")
def cmd_finetune(args: argparse.Namespace) -> None:
    from evar.api import finetune
    from evar.options import ModelChoice
    from evar.protocols.finetune import FineTuneSettings

    overrides = {f: getattr(args, f) for f in FineTuneSettings.__dataclass_fields__ if getattr(args, f, None) is not None}
    result = finetune(args.task, ModelChoice(args.model, args.weights), overrides, _run(args), resume=args.resume)
    per_round = ", ".join(f"{name} {100 * s[0]:.2f}" for name, s in zip(result.rounds, result.scores))
    print(f"{result.model} fine-tuned on {result.task}: {result.metric} {100 * result.mean:.2f} "
          f"± {100 * result.std:.2f} ({per_round}); run folder {result.settings['run_dir']}")


@command("leaderboard")
def cmd_leaderboard(args: argparse.Namespace) -> None:
    from evar.results.leaderboard import leaderboard_text, parse_names
    from evar.io import atomic_write_text

    text = leaderboard_text(fmt=args.format, protocol=args.protocol, tasks=parse_names(args.tasks),
                            models=parse_names(args.models), groups=args.groups,
                            compare_published=args.compare_published, published_source=args.published_source,
                            all_runs=args.all_runs, digits=args.digits)
    if args.out:
        atomic_write_text(Path(args.out), text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")


@command("plot")
def cmd_plot(args: argparse.Namespace) -> None:
    from evar.results.leaderboard import parse_names
    from evar.results import plots

    if args.kind == "layers":
        path = plots.plot_layers(args.model, args.task, protocol=args.protocol, out=args.out)
    elif args.kind == "tsne":
        path = plots.plot_tsne(_model(args), args.task, fold=args.fold, split=args.split, run=_run(args),
                               max_points=args.max_points, seed=args.seed, perplexity=args.perplexity, out=args.out)
    else:
        path = plots.plot_bars(protocol=args.protocol, tasks=parse_names(args.tasks), models=parse_names(args.models),
                               out=args.out)
    print(f"wrote {path}")


@command("pretrain")
def cmd_pretrain(args: argparse.Namespace) -> None:
    from evar.encoders.cola_pretrain import pretrain_cola

    result = pretrain_cola(args.audio_dir, args.out, backbone=args.backbone, epochs=args.epochs,
                           batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch, lr=args.lr,
                           seed=args.seed, d=args.d, device=args.device, resume=args.resume)
    model = "cola_byola" if args.backbone == "byola" else "cola"
    print(f"wrote {result.weights} (last epoch loss {result.losses[-1]:.4f}); "
          f"use: evar probe --model {model} --weights {result.weights} --task TASK")


@command("hear")
def cmd_hear(args: argparse.Namespace) -> int:
    from evar.hear.validator import validate_module

    report = validate_module(args.module, args.model_file, args.device, args.model_options,
                             extra_checks=not args.hear_only)
    print(report.format(verbose=args.verbose))
    return 0 if report.ok else 1


@command("demo")
def cmd_demo(args: argparse.Namespace) -> None:
    from evar.synth.demo import run_demo

    run_demo(Path(args.dir), args.byola_weights)


def _per_model(text: str | None) -> dict[str, str]:
    pairs = [part.partition("=") for part in (text or "").split(",") if part.strip()]
    if any(not sep or not name.strip() or not value.strip() for name, sep, value in pairs):
        raise EvarError(f"--weights expects MODEL=PATH,MODEL=PATH, got {text!r}")
    return {name.strip(): value.strip() for name, _, value in pairs}


@command("sweep")
def cmd_sweep(args: argparse.Namespace) -> int:
    from evar.sweep.jobs import LocalBackend, RayBackend, make_grid, parse_models, run_sweep

    seeds = args.seed_list or list(range(42, 42 + args.seeds))
    given = {"lr": args.lr, "max_epochs": args.max_epochs, "patience": args.patience, "mode": args.linear_mode}
    settings = {k: v for k, v in given.items() if v is not None} if args.protocol == "linear" else {}
    jobs = make_grid(parse_models(args.models), [t.strip() for t in args.tasks.split(",") if t.strip()], seeds,
                     args.protocol, weights=_per_model(args.weights), options=args.model_options, **settings)
    backend = (RayBackend(args.address, args.num_cpus, args.num_gpus, args.max_retries) if args.backend == "ray"
               else LocalBackend())
    report = run_sweep(jobs, backend, _run(args))
    print(report.summary())
    for job_id, reason in report.failed.items():
        print(f"  failed {job_id}: {reason}")
    print(f"details: evar status --sweep {report.sweep_id}")
    return 0 if report.ok else 1


@command("status")
def cmd_status(args: argparse.Namespace) -> None:
    from evar.sweep.jobs import status_text

    print(status_text(args.sweep, args.format, all_jobs=args.all), end="")


#: options whose value may start with "-" (a negative mean): ``--stats -5.49,5.04`` is read as ``--stats=-5.49,5.04``
_SIGNED_VALUE_OPTIONS = ("--stats",)


def _join_signed_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _SIGNED_VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1][:2].lstrip("-")[:1].isdigit():
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _check_device(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    device = getattr(args, "device", "cpu")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device {device}: this torch build has no CUDA device (torch {torch.__version__}); "
                         "use --device cpu or install a CUDA build of torch")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            parser.error(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")


_INTERRUPTED = {
    "embed": "finished chunks are kept; the same command resumes from them",
    "probe": "cached embeddings are kept (the same command reuses them); no result row was written",
    "sweep": "finished jobs are kept; the same command skips them",
    "finetune": "the last epoch checkpoint is kept; rerun with --resume to continue",
    "pretrain": "the last epoch checkpoint is kept; rerun with --resume to continue",
}


def main(argv: list[str] | None = None) -> int:
    from evar.log import install_cli_handler

    parser = build_parser()
    try:
        args = parser.parse_args(_join_signed_values(list(sys.argv[1:] if argv is None else argv)))
        _check_device(parser, args)
    except SystemExit as exc:  # --help, or a mistake already reported in one line
        return int(exc.code or 0)
    install_cli_handler(args.verbose - args.quiet)
    if args.version:
        from evar import __version__

        print(f"evar {__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args) or 0
    except EvarError as exc:
        print(f"evar: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`evar list tasks | head`): stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    except OSError as exc:  # a folder that cannot be written, a file that vanished: one line, not a traceback
        where = f" {exc.filename}" if exc.filename else ""
        print(f"evar: error: cannot access{where}: {exc.strerror or exc}; check the path and its permissions "
              "(or point EVAR_RESULTS_DIR / EVAR_EMBEDDINGS_DIR / EVAR_CACHE_DIR elsewhere)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        note = _INTERRUPTED.get(args.command, "nothing half-written was kept")
        print(f"evar: interrupted; {note}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
