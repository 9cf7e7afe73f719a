"""Commands about tasks and models: list, prepare, download."""

from __future__ import annotations

import argparse

from evar.cli.args import POSITIVE_FLOAT
from evar.errors import EvarError


def add_list(sub) -> None:
    p = sub.add_parser("list", help="registered models or tasks")
    p.add_argument("what", choices=["models", "tasks"])
    p.add_argument("--cost", action="store_true",
                   help="models: parameters and GFLOPs per second of audio (counted on a 10-s clip; no weights needed)")
    p.set_defaults(handler=cmd_list)


def cmd_list(args: argparse.Namespace) -> None:
    if args.what == "models":
        from evar.encoders import list_encoders, list_prefixes
        from evar.encoders.weights import weights_status

        if args.cost:
            from evar.encoders import encoder_costs

            costs = encoder_costs()
            print(f"{'model':<17} {'rate':>6} {'dim':>6} {'params (M)':>10} {'GFLOPs/s':>9}  (per second of audio, "
                  "10-s clip, torch.utils.flop_counter)")
            for spec in list_encoders():
                cost = costs.get(spec.name)
                params, gflops = (f"{cost['params'] / 1e6:.2f}", f"{cost['gflops_per_audio_second']:.2f}") \
                    if cost else ("?", "?")
                print(f"{spec.name:<17} {spec.sample_rate or '?':>6} {spec.embed_dim or '?':>6} {params:>10} {gflops:>9}")
            return
        print(f"{'model':<17} {'rate':>6} {'dim':>6}  {'weights':<17} description")
        for spec in list_encoders():
            status = weights_status(spec.weights) if spec.weights else spec.packaged.status() if spec.packaged \
                else (spec.weights_note or "none needed")
            print(f"{spec.name:<17} {spec.sample_rate or '?':>6} {spec.embed_dim or '?':>6}  {status:<17} {spec.description}")
        for prefix, factory in list_prefixes().items():
            summary = (factory.__doc__ or "").strip().splitlines()[0] if factory.__doc__ else ""
            argument = "<module>" if prefix == "hear" else "<model>"
            print(f"{prefix + ':' + argument:<17} {'model':>6} {'model':>6}  {'model':<17} {summary}")
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


def add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="prepare a task's metadata from its official download layout")
    p.add_argument("task", help="task name, `custom` (with --csv/--name), `sed` (events CSV with --csv/--name) "
                   "or `hear` (a HEAR 2021 task folder, scene or event)")
    p.add_argument("--root", required=True, help="the dataset folder as downloaded (or the audio root for custom)")
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    p.add_argument("--csv", help="custom task: CSV with file,label,split or file,label,fold; "
                   "sed task: file,onset,offset,label,split (or fold), times in seconds")
    p.add_argument("--name", help="custom or hear task: its name")
    p.add_argument("--unit-sec", type=POSITIVE_FLOAT, help="custom task: clip duration in seconds")
    p.set_defaults(handler=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> None:
    from evar.tasks import prepare

    task = prepare(args.task, args.root, args.on_error, args.csv, args.name, args.unit_sec)
    print(f"prepared {task.name}: {len(task)} files, {len(task.classes)} classes, unit {task.spec.unit_sec:g} s, "
          f"root {task.root}")


def add_download(sub) -> None:
    p = sub.add_parser("download", help="download and extract a dataset from its official source")
    p.add_argument("task", nargs="?", help="task name (see --list)")
    p.add_argument("--to", help="folder to download into")
    p.add_argument("--keep-archives", action="store_true", help="keep the archives after extraction")
    p.add_argument("--list", action="store_true", help="show every download: URLs, checksums, folder to prepare")
    p.set_defaults(handler=cmd_download)


def cmd_download(args: argparse.Namespace) -> None:
    from evar.tasks.download import describe_downloads, download_task

    if args.list:
        print(describe_downloads())
        return
    if not args.task or not args.to:
        raise EvarError("usage: evar download TASK --to DIR (or evar download --list)")
    root = download_task(args.task, args.to, keep_archives=args.keep_archives)
    print(f"downloaded {args.task}; next: evar prepare {args.task} --root {root}")


COMMANDS = (("list", add_list), ("prepare", add_prepare), ("download", add_download),)
