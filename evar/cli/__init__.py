"""The ``evar`` command: argparse over the Python API, one module per group of commands (``evar/cli/``).

Each command module defines ``add_<name>(sub)`` (its arguments, beside its handler ``cmd_<name>(args)``) and lists
them in ``COMMANDS``; this module builds the parser from them and runs the chosen handler with one-line errors.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from evar.cli import data, evaluate, report, sweep, tools
from evar.cli.args import Parser
from evar.errors import EvarError

#: command name -> handler, in the order of ``evar --help``
COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="evar", description="Benchmark general-purpose audio representations under EVAR's fixed protocol.",
        epilog="Start with: evar list models; evar prepare esc50 --root DIR; evar probe --task esc50 --model byola")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more messages (debug)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (data, evaluate, report, tools, sweep):
        for name, add in module.COMMANDS:
            add(sub)
            COMMANDS.setdefault(name, sub.choices[name].get_default("handler"))
    return parser


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

