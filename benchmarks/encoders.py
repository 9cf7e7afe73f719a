"""Embedding throughput and peak memory of every registered encoder on CPU, as a Markdown table.

    python benchmarks/encoders.py                       # every encoder, 2 torch threads
    python benchmarks/encoders.py --models byola,ast --threads 4

Each encoder gets deterministic random weights in its official file format (tests/encoder_checkpoints.py;
speed does not depend on the weight values; the transformers encoders at their default checkpoint's full size) and is measured in a fresh subprocess, so encoders do not
contaminate each other's memory: ``encoder.embed`` on batches of 16 x 1-s and 8 x 10-s clips at the encoder's
sample rate, one warm-up batch, then timed batches until at least ``--min-iters`` batches AND
``--min-seconds`` have passed; clips/s is the batch size over the median batch time (the machine may be
shared; the JSON lines on stderr also give the mean). Checkpoints are written by another interpreter and
this script's own process never imports torch, because ``ru_maxrss`` is inherited through fork + exec.
Peak RSS is the rise of ``ru_maxrss`` from just before the encoder is built (torch and evar imported, inputs
allocated) to the end: loading the checkpoint plus inference.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: (clip seconds, batch size)
SETTINGS = ((1.0, 16), (10.0, 8))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def measure(name: str, weights: str | None, kwargs: dict, threads: int, min_iters: int, min_seconds: float) -> dict:
    """Run in the child process: build ``name`` and time ``embed`` for each of SETTINGS."""
    import torch

    from evar.encoders import create_encoder, get_encoder_spec

    torch.set_num_threads(threads)
    spec = get_encoder_spec(name)
    g = torch.Generator().manual_seed(0)
    inputs = [0.1 * torch.randn(batch, int(seconds * spec.sample_rate), generator=g) for seconds, batch in SETTINGS]
    baseline = _rss_mb()
    encoder = create_encoder(name, weights=weights, **kwargs)
    if encoder.needs_stats:
        encoder.set_stats(-5.0, 4.0)  # task statistics: any values time the same
    result = {"model": name, "dim": encoder.embed_dim, "threads": torch.get_num_threads(), "torch": torch.__version__}
    for (seconds, batch), wav in zip(SETTINGS, inputs):
        out = encoder.embed(wav)  # warm-up
        if out.shape != (batch, encoder.embed_dim):
            raise RuntimeError(f"{name}: embed gave {tuple(out.shape)}, expected {(batch, encoder.embed_dim)}")
        times: list[float] = []
        while len(times) < min_iters or sum(times) < min_seconds:
            start = time.perf_counter()
            encoder.embed(wav)
            times.append(time.perf_counter() - start)
        result[f"clips_per_s_{seconds:g}s"] = batch / statistics.median(times)  # robust to a busy shared machine
        result[f"mean_clips_per_s_{seconds:g}s"] = batch * len(times) / sum(times)
        result[f"iters_{seconds:g}s"] = len(times)
    result["peak_rss_mb"] = _rss_mb() - baseline
    return result


def _python(*argv: str, threads: int) -> dict | list:
    """Run this script in a fresh interpreter and return the JSON of its last output line."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step {argv} failed\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_one(name: str, args: argparse.Namespace) -> dict:
    """Write ``name``'s checkpoint in one interpreter, measure it in another.

    This process never imports torch: a child inherits its parent's ``ru_maxrss`` through fork + exec.
    """
    with tempfile.TemporaryDirectory(prefix=f"evar-bench-{name}-") as tmp:
        weights, kwargs = _python("--write", name, "--dir", tmp, threads=args.threads)
        argv = ["--child", name, "--kwargs", json.dumps(kwargs), "--threads", str(args.threads),
                "--min-iters", str(args.min_iters), "--min-seconds", str(args.min_seconds)]
        return _python(*argv, *(["--weights", weights] if weights else []), threads=args.threads)


def table(rows: list[dict]) -> str:
    lines = ["| model | dim | clips/s @1 s (batch 16) | clips/s @10 s (batch 8) | peak RSS MB |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['dim']} | {r['clips_per_s_1s']:.1f} | {r['clips_per_s_10s']:.2f} "
                     f"| {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated encoder names (default: every registered encoder)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--min-iters", type=int, default=3, help="timed batches per setting, at least")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per setting, at least")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--write", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--list", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.weights, json.loads(args.kwargs), args.threads,
                                 args.min_iters, args.min_seconds)))
    elif args.write:
        sys.path.insert(0, str(ROOT / "tests"))
        from encoder_checkpoints import write_checkpoint

        weights, kwargs = write_checkpoint(args.write, args.dir, full_size=True)
        print(json.dumps([str(weights) if weights else None, kwargs]))
    elif args.list:
        from evar.encoders import list_encoders

        print(json.dumps([spec.name for spec in list_encoders()]))
    else:
        names = args.models.split(",") if args.models else _python("--list", threads=args.threads)
        rows = []
        for name in names:
            rows.append(run_one(name, args))
            print(f"{name}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
        print(f"CPU, torch {rows[0]['torch']}, {args.threads} threads; throughput from the median batch time\n")
        print(table(rows))


if __name__ == "__main__":
    main()
