"""How close each encoder's CPU inference comes to this machine's FLOP bound, as a Markdown table.

    python benchmarks/flop_bound.py --models byola,cnn14,ast      # default: every encoder with a checkpoint maker
    python benchmarks/flop_bound.py --seconds 10 --batch 8 --threads 2
    python benchmarks/flop_bound.py --device cuda --autocast bfloat16 --batch 64   # a GPU: bf16 bound

In one run: the machine's float32 throughput for matrix products (``torch.mm`` / ``bmm`` at transformer-like
shapes) and for convolutions (3 × 3 ``conv2d`` at CNN-like shapes), each the best of several shapes; then per
encoder (full-size architecture, deterministic weights in its official format: ``tests/encoder_checkpoints.py``;
the inference copy the embedding cache uses, BatchNorms folded) the FLOPs of one ``embed`` batch by operator
(``torch.utils.flop_counter``: matrix products, convolutions, attention; element-wise work, FFTs and resampling not
counted), its bound time (each operator's FLOPs over the matching peak) and its measured time (median of
``--iters`` batches after a warm-up). Fraction = bound time / measured time: 100 % would be every counted FLOP at
the machine's best rate and nothing else costing time. ``--device cuda --autocast bfloat16`` measures the peaks in
bfloat16 on the GPU and runs the encoders under autocast there, as ``evar embed --device cuda --autocast bfloat16``
does (it runs on CPU too).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the deterministic checkpoint makers


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best_rate(run, flops: float, device: str, repeats: int = 5) -> float:
    run()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    return flops / min(times)


def machine_peaks(device: str = "cpu", dtype: str = "float32") -> dict[str, float]:
    """FLOP/s of matrix products and of 3 × 3 convolutions in ``dtype`` on ``device``, the best over a few shapes."""
    import torch

    kind = getattr(torch, dtype)
    g = torch.Generator().manual_seed(0)

    def tensor(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device=device, dtype=kind)

    matmul = 0.0
    for m, k, n in ((2048, 2048, 2048), (4096, 768, 3072), (4096, 3072, 768), (8192, 768, 768)):
        a, b = tensor(m, k), tensor(k, n)
        matmul = max(matmul, _best_rate(lambda: a @ b, 2 * m * k * n, device))
    q = tensor(96, 512, 64)
    matmul = max(matmul, _best_rate(lambda: q @ q.transpose(1, 2), 2 * 96 * 512 * 512 * 64, device))
    conv = 0.0
    for batch, channels, size in ((8, 64, 128), (8, 128, 64), (8, 256, 32), (8, 512, 16)):
        x = tensor(batch, channels, size, size).contiguous(memory_format=torch.channels_last)
        layer = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).eval().to(device=device, dtype=kind)
        layer = layer.to(memory_format=torch.channels_last)
        with torch.no_grad():
            conv = max(conv, _best_rate(lambda: layer(x), 2 * batch * channels * channels * 9 * size * size, device))
    return {"matmul": matmul, "conv": conv}


def measure(name: str, peaks: dict[str, float], seconds: float, batch: int, iters: int, device: str = "cpu",
            autocast: str | None = None) -> dict:
    """Counted FLOPs by operator kind, bound time and measured time of one ``embed`` batch of ``name``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import evar
    from encoder_checkpoints import write_checkpoint
    from evar.embeddings.cache import autocast_context
    from evar.embeddings.inference import optimised_for_inference
    from evar.options import RunOptions
    from evar.results.provenance import _custom_flops

    with tempfile.TemporaryDirectory(prefix=f"evar-bound-{name}-") as tmp:
        weights, options = write_checkpoint(name, tmp, full_size=True)
        encoder = evar.create_encoder(name, weights=str(weights) if weights else None, device=device, **options)
    if encoder.needs_stats:
        encoder.set_stats(-5.0, 4.0)
    fast = optimised_for_inference(encoder)
    wav = 0.1 * torch.randn(batch, int(seconds * encoder.sample_rate), generator=torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False, custom_mapping=_custom_flops())
    run = RunOptions(device=device, autocast=autocast)
    with torch.no_grad(), counter, autocast_context(run):
        fast.embed(wav)
    by_kind = {"conv": 0, "matmul": 0}
    for op, flops in counter.get_flop_counts()["Global"].items():
        by_kind["conv" if "convolution" in str(op) else "matmul"] += flops
    bound = sum(by_kind[kind] / peaks[kind] for kind in by_kind)
    times = []
    with torch.inference_mode(), autocast_context(run):
        fast.embed(wav)  # warm-up
        for _ in range(iters):
            _sync(device)
            start = time.perf_counter()
            fast.embed(wav)
            _sync(device)
            times.append(time.perf_counter() - start)
    measured = statistics.median(times)
    return {"model": name, "gflops_per_clip": sum(by_kind.values()) / 1e9 / batch,
            "conv_share": by_kind["conv"] / max(1, sum(by_kind.values())), "clips_per_s": batch / measured,
            "bound_clips_per_s": batch / bound if bound else float("inf"),
            "fraction": bound / measured}


def main() -> None:
    import torch

    from encoder_checkpoints import WRITERS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated encoder names (default: every one with a checkpoint maker)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10 s)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=3, help="timed batches per encoder (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--autocast", choices=["bfloat16", "float16"], help="encoders under torch.autocast; peaks in it")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.models.split(",") if args.models else sorted(WRITERS)
    peaks = machine_peaks(args.device, args.autocast or "float32")
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"{where}, torch {torch.__version__}, {args.autocast or 'float32'}; peaks: matmul "
          f"{peaks['matmul'] / 1e9:.1f} GFLOP/s, 3x3 conv {peaks['conv'] / 1e9:.1f} GFLOP/s; "
          f"batches of {args.batch} x {args.seconds:g} s\n")
    print("| model | GFLOPs per clip | conv share | clips/s | bound clips/s | of bound |\n|---|---:|---:|---:|---:|---:|")
    for name in names:
        r = measure(name, peaks, args.seconds, args.batch, args.iters, args.device, args.autocast)
        print(f"| {r['model']} | {r['gflops_per_clip']:.2f} | {100 * r['conv_share']:.0f} % | {r['clips_per_s']:.2f} "
              f"| {r['bound_clips_per_s']:.2f} | {100 * r['fraction']:.0f} % |", flush=True)


if __name__ == "__main__":
    main()
