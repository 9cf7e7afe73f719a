"""Commands of sweeps: run a grid of jobs, show their state."""

from __future__ import annotations

import argparse

from evar.cli.args import (
    NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, add_run_options, json_dict, run_options, seed_list,
)
from evar.errors import EvarError


def _per_model(text: str | None) -> dict[str, str]:
    pairs = [part.partition("=") for part in (text or "").split(",") if part.strip()]
    if any(not sep or not name.strip() or not value.strip() for name, sep, value in pairs):
        raise EvarError(f"--weights expects MODEL=PATH,MODEL=PATH, got {text!r}")
    return {name.strip(): value.strip() for name, _, value in pairs}


def add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="every model on every task (resumable: done jobs are skipped, failed ones retried)")
    p.add_argument("--models", required=True, help="comma-separated models, a layer fusion as name+layers: byola,cnn14+2,5")
    p.add_argument("--tasks", required=True, help="comma-separated prepared tasks, e.g. esc50,us8k,spcv2")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=POSITIVE_INT, default=1, help="number of seeds, 42 upwards (default 1; EVAR's papers: 3)")
    seeds.add_argument("--seed-list", type=seed_list, help="explicit comma-separated seeds, e.g. 42,43,44")
    p.add_argument("--protocol", choices=["linear", "finetune"], default="linear",
                   help="linear: one job per (model, task) over all seeds; finetune: one per (model, task, seed)")
    p.add_argument("--weights", help="checkpoints per model: MODEL=PATH,MODEL=PATH (default: official weights)")
    p.add_argument("--model-options", type=json_dict, help='JSON per model, e.g. \'{"byola": {"mel": "byola"}}\'')
    p.add_argument("--backend", choices=["local", "ray"], default="local", help="local (this process) or ray")
    p.add_argument("--address", help="ray: cluster address, e.g. ray://head:10001 (default: start a local instance)")
    p.add_argument("--num-cpus", type=float, default=1, help="ray: CPUs per task")
    p.add_argument("--num-gpus", type=float, default=0, help="ray: GPUs per task (fractions allowed)")
    p.add_argument("--max-retries", type=NON_NEGATIVE_INT, default=3, help="ray: retries of a task whose worker died")
    add_run_options(p)
    p.add_argument("--lr", type=POSITIVE_FLOAT, help="linear probe learning rate (default 3e-4)")
    p.add_argument("--max-epochs", type=POSITIVE_INT, help="linear probe epochs at most (default 200)")
    p.add_argument("--patience", type=NON_NEGATIVE_INT, help="linear probe early-stopping patience (default 20)")
    p.add_argument("--linear-mode", choices=["evar", "clean"], help="as for evar probe (default evar)")
    p.set_defaults(handler=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from evar.sweep.backends import LocalBackend, RayBackend, run_sweep
    from evar.sweep.jobs import make_grid, parse_models

    seeds = args.seed_list or list(range(42, 42 + args.seeds))
    given = {"lr": args.lr, "max_epochs": args.max_epochs, "patience": args.patience, "mode": args.linear_mode}
    settings = {k: v for k, v in given.items() if v is not None} if args.protocol == "linear" else {}
    jobs = make_grid(parse_models(args.models), [t.strip() for t in args.tasks.split(",") if t.strip()], seeds,
                     args.protocol, weights=_per_model(args.weights), options=args.model_options, **settings)
    backend = (RayBackend(args.address, args.num_cpus, args.num_gpus, args.max_retries) if args.backend == "ray"
               else LocalBackend())
    report = run_sweep(jobs, backend, run_options(args))
    print(report.summary())
    for job_id, reason in report.failed.items():
        print(f"  failed {job_id}: {reason}")
    print(f"details: evar status --sweep {report.sweep_id}")
    return 0 if report.ok else 1


def add_status(sub) -> None:
    p = sub.add_parser("status", help="jobs of the last sweep (or --sweep ID): done, running, failed, with reasons")
    p.add_argument("--sweep", help="sweep id (or its start); default: the sweep run last")
    p.add_argument("--all", action="store_true", help="every job ever recorded, from all sweeps")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> None:
    from evar.sweep.status import status_text

    print(status_text(args.sweep, args.format, all_jobs=args.all), end="")


COMMANDS = (("sweep", add_sweep), ("status", add_status),)
