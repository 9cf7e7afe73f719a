"""How many CPU threads the linear probe should use: one fit timed with 1 and with all threads, on a quiet
machine and beside a process that keeps one core busy (a sweep, a laptop doing anything else), and the count
``LinearProbe`` chooses there (``evar.protocols.linear.ThreadChooser``: one thread below 10 M rows x dims x classes,
else the faster of an epoch on all cores and one on one thread, after a warm-up epoch), with its time per epoch over a whole fit.

    python benchmarks/probe_threads.py     # prints a table; exits 1 when the fit is >15% slower than the best

Small problems are fastest on one thread; larger ones on all cores of a quiet machine, but on one when another
process holds a core (extra threads then wait on it).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
import torch

from evar.protocols.linear import LinearProbe, ProbeStream, cpu_threads

SHAPES = ((1716, 512, 3), (1440, 512, 50), (1600, 8192, 50), (20000, 2048, 35))  # NSynth-like, ESC-50, a fusion on ESC-50, SPCV2-like


def time_fit(n: int, d: int, c: int, threads: int | None, epochs: int) -> float:
    """Seconds per epoch with ``threads`` fixed, or (None) as LinearProbe chooses."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((n, d)).astype(np.float32), np.arange(n) % c
    probe = LinearProbe(max_epochs=epochs, patience=epochs, n_classes=c)
    start = time.perf_counter()
    if threads is None:
        probe.fit(X, y, X[:200], y[:200], ProbeStream(42))
    else:
        with cpu_threads(threads, "cpu"), _fixed_threads():
            probe._fit(X, y, X[:200], y[:200], ProbeStream(42))
    return (time.perf_counter() - start) / epochs


class _fixed_threads:
    """Keep the thread count the benchmark set (the probe's own choice switched off)."""

    def __enter__(self):
        self._set, torch.set_num_threads = torch.set_num_threads, lambda n: None

    def __exit__(self, *exc):
        torch.set_num_threads = self._set


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()
    all_threads = torch.get_num_threads()
    time_fit(200, 64, 3, 1, 2)  # warm-up
    print(f"| rows x dim x classes | load | ms/epoch, 1 thread | ms/epoch, {all_threads} threads | LinearProbe |")
    print("|---|---|---:|---:|---:|")
    ok = True
    for load in ("quiet", "one core busy"):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load != "quiet" else None
        try:
            for n, d, c in SHAPES:
                one, many, chosen = (1000 * time_fit(n, d, c, t, args.epochs) for t in (1, all_threads, None))
                ok &= chosen <= 1.15 * min(one, many)
                print(f"| {n} x {d} x {c} | {load} | {one:.0f} | {many:.0f} | {chosen:.0f} |")
        finally:
            if busy is not None:
                busy.kill()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
