"""Other tools: COLA pre-training, the HEAR validator, the smoke run."""

from __future__ import annotations

import argparse
from pathlib import Path

from evar.cli.args import POSITIVE_FLOAT, POSITIVE_INT, device_name, json_dict


def add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pre-training (COLA) on a folder of audio")
    p.add_argument("method", choices=["cola"])
    p.add_argument("--audio-dir", required=True, help="folder of audio files (searched recursively)")
    p.add_argument("--out", required=True, help="weights file to write (.safetensors or .pt)")
    p.add_argument("--backbone", choices=["efficientnet_b0", "byola"], help="default efficientnet_b0")
    p.add_argument("--epochs", type=POSITIVE_INT, help="default 100")
    p.add_argument("--batch-size", type=POSITIVE_INT, help="default 64")
    p.add_argument("--steps-per-epoch", type=POSITIVE_INT, help="default: one pass over the files")
    p.add_argument("--lr", type=POSITIVE_FLOAT, help="default 1e-4")
    p.add_argument("--seed", type=int, help="default 42")
    p.add_argument("--d", type=POSITIVE_INT, help="projection size (default 512)")
    p.add_argument("--device", type=device_name, default="cpu")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint beside --out")
    p.set_defaults(handler=cmd_pretrain)


def cmd_pretrain(args: argparse.Namespace) -> None:
    from evar.encoders.cola_pretrain import ColaSettings, pretrain_cola

    given = {name: getattr(args, name) for name in ColaSettings.__dataclass_fields__ if getattr(args, name, None) is not None}
    settings = ColaSettings(**given)
    result = pretrain_cola(args.audio_dir, args.out, settings, resume=args.resume, device=args.device)
    model = "cola_byola" if settings.backbone == "byola" else "cola"
    print(f"wrote {result.weights} (last epoch loss {result.losses[-1]:.4f}); "
          f"use: evar probe --model {model} --weights {result.weights} --task TASK")


def add_hear(sub) -> None:
    p = sub.add_parser("hear", help="HEAR 2021 module tools")
    hear_sub = p.add_subparsers(dest="hear_command", metavar="HEAR_COMMAND", required=True)
    v = hear_sub.add_parser("validate", help="run hear-validator's checks (and evar's) on a HEAR module")
    v.add_argument("module", help="importable module name implementing the HEAR API")
    v.add_argument("--model-file", default="", help="passed to load_model")
    v.add_argument("--device", type=device_name, default="cpu")
    v.add_argument("--model-options", type=json_dict, help="JSON dict of keyword arguments for load_model")
    v.add_argument("--hear-only", action="store_true", help="only hear-validator's own checks")
    v.add_argument("--verbose", action="store_true", help="list passing checks too")
    p.set_defaults(handler=cmd_hear)


def cmd_hear(args: argparse.Namespace) -> int:
    from evar.hear.validator import validate_module

    report = validate_module(args.module, args.model_file, args.device, args.model_options,
                             extra_checks=not args.hear_only)
    print(report.format(verbose=args.verbose))
    return 0 if report.ok else 1


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="smoke run: generate an ESC-50-shaped dataset, prepare, probe, leaderboard")
    p.add_argument("--dir", default="demo", help="where to write the generated dataset")
    p.add_argument("--byola-weights", help="BYOL-A 512-d checkpoint to include byola in the run")
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> None:
    from evar.synth.demo import run_demo

    print(run_demo(Path(args.dir), args.byola_weights), end="")


COMMANDS = (("pretrain", add_pretrain), ("hear", add_hear), ("demo", add_demo),)
