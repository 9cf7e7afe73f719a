"""Argument types and shared option groups of the ``evar`` command."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def parse_layers(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def json_dict(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"mel\": \"byola\"}'")
    return value


def mean_std(text: str) -> tuple[float, float]:
    try:
        mean, std = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected MEAN,STD, e.g. -5.49,5.04") from exc
    if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: MEAN must be finite and STD a positive number, e.g. -5.49,5.04")
    return mean, std


def seed_list(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or not all(p.lstrip("-").isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 42,43,44")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: a seed is repeated (each seed counts once in the average)")
    return seeds


def size_list(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated positive integers, e.g. 1024,1024")
    return [int(p) for p in parts]


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


def device_name(text: str) -> str:
    import re

    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps|xpu(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected cpu, cuda, cuda:N, mps or xpu")
    return text


def add_run_options(p: argparse.ArgumentParser) -> None:
    """How the encoder runs and its embeddings are stored (embed, probe, sweep)."""
    p.add_argument("--device", type=device_name, default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=None,
                   help="clips per encoder batch (default: about 32 s of audio, e.g. 8 clips of 4 s)")
    p.add_argument("--num-workers", type=NON_NEGATIVE_INT, default=0, help="DataLoader worker processes for audio decoding")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="storage type of cached task embeddings (float16: half the disk and memory)")
    p.add_argument("--autocast", choices=["bfloat16", "float16"], default=None,
                   help="run the encoder under torch.autocast (e.g. bfloat16 on a GPU); cached apart from float32")
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                   help="bad audio: stop (fail) or skip it and report (skip)")


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registered encoder name (see `evar list models`)")
    p.add_argument("--weights", help="local checkpoint file (default: official weights from the cache)")
    p.add_argument("--layers", help="comma-separated layers to fuse (EUSIPCO 2022), e.g. 3,6; with probe: `all` "
                   "probes each layer separately, `weighted` a learnt softmax-weighted sum of all layers (SUPERB)")
    add_run_options(p)
    p.add_argument("--model-options", type=json_dict, default=None,
                   help='JSON keyword arguments for the encoder, e.g. \'{"mel": "byola"}\' or \'{"pooling": "mean"}\'')


class Parser(argparse.ArgumentParser):
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


def model_choice(args: argparse.Namespace):
    from evar.options import ModelChoice

    layers = parse_layers(args.layers)
    chosen = tuple(layers) if layers and layers not in (["all"], ["weighted"]) else ()
    return ModelChoice(args.model, args.weights, chosen, args.model_options or {})


def run_options(args: argparse.Namespace, progress: bool = True):
    from evar.options import RunOptions

    given = {name: getattr(args, name) for name in RunOptions.__dataclass_fields__ if hasattr(args, name)}
    return RunOptions(**{**given, "progress": progress})
