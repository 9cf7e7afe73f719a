"""Speed and memory of `evar probe` end to end: cold (no cache), warm (cached), and as the data grow.

    python benchmarks/probe_speed.py --weights ../shared/weights/AudioNTT2020-BYOLA-64x96d512.pth
    python benchmarks/probe_speed.py --workload esc50 --sizes 1000,2000 --num-workers 0,1,2 --no-targets
    python benchmarks/probe_speed.py --encoders all --sizes 2288      # adds the per-encoder table (286 clips)

Workloads (generated in the dataset's real layout, kept under --work-dir between runs):
  nsynth  NSynth-shaped: 4-s clips at 16 kHz, 11 families, train/valid/test 75/12.5/12.5 % (2,288 = 1,716/286/286)
  esc50   ESC-50-shaped: 5-s clips at 44.1 kHz, 5 folds (2,000 = 40 classes x 5 folds x 10)

Every measured command runs as `evar probe --task T --model M` in a fresh interpreter (this process never
imports torch: ``ru_maxrss`` is inherited through fork + exec). Wall time includes interpreter start-up;
peak RSS is the largest of the command's own process and its DataLoader workers; decoded clips are
counted by wrapping ``soundfile.SoundFile.read`` in that interpreter (workers included). Throughput is clips over
the time spent in ``evar.embeddings.cache.embed_task`` (statistics pass included when the encoder has one).
The compute limit for BYOL-A is 125 clips/s of 4-s audio on this 2-core machine (0.67 GFLOP per clip at
85 GFLOP/s for a 3x3 convolution). Exits 1 when a target of the nsynth workload is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BYOLA_LIMIT_CLIPS_PER_S = 125.0
#: The issue's targets for byola on the 2,288-clip nsynth workload
TARGETS = {"cold_s": 45.0, "cold_rss_mb": 1024.0, "clips_per_s": 60.0, "warm_s": 5.0}


def _child_probe(argv: list[str], counter: str) -> None:
    """Run `evar probe` with decode counting and phase timing; print a JSON line of measurements."""
    import resource

    import soundfile

    read = soundfile.SoundFile.read  # evar.audio.load_audio reads each file with one call

    def counted_read(self, *args, **kwargs):
        with open(counter, "ab") as f:  # O_APPEND: one byte per decoded file, from every worker process
            f.write(b".")
        return read(self, *args, **kwargs)

    soundfile.SoundFile.read = counted_read
    import evar.api
    import evar.cli

    embed_seconds = []
    embed_task = evar.api.embed_task

    def timed_embed_task(*args, **kwargs):
        start = time.perf_counter()
        out = embed_task(*args, **kwargs)
        embed_seconds.append(time.perf_counter() - start)
        return out

    evar.api.embed_task = timed_embed_task
    code = evar.cli.main(argv)
    rss = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    print(json.dumps({"rc": code or 0, "embed_s": sum(embed_seconds), "peak_rss_mb": rss}))


def _run(argv: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def _generate(workload: str, n: int, folder: Path, env: dict) -> Path:
    """Write the generated tree once (a marker file says it is complete)."""
    if (folder / ".complete").is_file():
        return folder
    if workload == "nsynth":
        per_class = {"train": round(n * 0.75 / 11), "valid": round(n * 0.125 / 11), "test": round(n * 0.125 / 11)}
        code = ("from evar.synth.trees import make_nsynth_tree, NSYNTH_FAMILIES as F; import sys, json; "
                "make_nsynth_tree(sys.argv[1], families=tuple(F), train_only=(), notes=json.loads(sys.argv[2]), "
                "seconds=4.0, seed=1)")
        _run([sys.executable, "-c", code, str(folder), json.dumps(per_class)], env)
    else:
        per_class_per_fold = max(1, n // (5 * 40))
        code = ("from evar.synth.trees import make_esc50_tree; import sys; "
                "make_esc50_tree(sys.argv[1], n_classes=40, clips_per_class_per_fold=int(sys.argv[2]), seconds=5.0, seed=1)")
        _run([sys.executable, "-c", code, str(folder), str(per_class_per_fold)], env)
    (folder / ".complete").write_text("")
    return folder


def _probe(model: str, task: str, weights: str | None, workers: int, env: dict, counter: Path,
           options: dict | None = None) -> dict:
    counter.write_bytes(b"")
    argv = ["probe", "--task", task, "--model", model, "--num-workers", str(workers)]
    if weights:
        argv += ["--weights", weights]
    if options:
        argv += ["--model-options", json.dumps(options)]
    start = time.perf_counter()
    proc = _run([sys.executable, __file__, "--child", json.dumps(argv), str(counter)], env)
    wall = time.perf_counter() - start
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["rc"]:
        raise SystemExit(f"evar {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    score = [line for line in proc.stdout.splitlines() if "±" in line or "accuracy" in line.lower()]
    return {**result, "wall_s": wall, "decoded": counter.stat().st_size, "summary": score[-1] if score else ""}


def _encoder_weights(model: str, folder: Path, env: dict) -> tuple[str | None, dict]:
    """A deterministic random checkpoint in the official format (speed does not depend on weight values),
    and the encoder options naming any further files (e.g. VGGish's PCA parameters)."""
    proc = _run([sys.executable, str(ROOT / "benchmarks" / "encoders.py"), "--write", model, "--dir", str(folder)], env)
    weights, options = json.loads(proc.stdout.strip().splitlines()[-1])
    return weights, options


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=["nsynth", "esc50"], default="nsynth")
    parser.add_argument("--model", default="byola")
    parser.add_argument("--weights", help="checkpoint for --model (byola: the real 512-d weights)")
    parser.add_argument("--sizes", default="1144,2288,4576", help="dataset sizes (clips), comma-separated")
    parser.add_argument("--num-workers", default="0", help="DataLoader workers to try, comma-separated")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--encoders", default="", help="'all' or a list: cold embedding speed of each (random "
                        "official-format weights) on --encoder-clips clips")
    parser.add_argument("--encoder-clips", type=int, default=286, help="dataset size for the per-encoder table")
    parser.add_argument("--work-dir", help="keeps the generated audio between runs (default: a temporary folder)")
    parser.add_argument("--no-targets", action="store_true", help="report only; never exit 1")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("counter", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child_probe(json.loads(args.child), args.counter)
        return 0

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="evar-probe-speed-")).resolve()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": str(ROOT)}
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for n in sizes:
        data = _generate(args.workload, n, work / f"{args.workload}-{n}", env)
        task_env = {**env, "EVAR_TASKS_DIR": str(work / f"tasks-{n}"), "EVAR_RESULTS_DIR": str(work / "results")}
        _run([sys.executable, "-m", "evar.cli", "prepare", args.workload, "--root", str(data)], task_env)
        for workers in [int(w) for w in args.num_workers.split(",")]:
            emb = work / f"emb-{n}-{workers}"
            subprocess.run(["rm", "-rf", str(emb)], check=True)
            run_env = {**task_env, "EVAR_EMBEDDINGS_DIR": str(emb)}
            cold = _probe(args.model, args.workload, args.weights, workers, run_env, work / "decoded")
            warm = _probe(args.model, args.workload, args.weights, workers, run_env, work / "decoded")
            rows.append({"clips": n, "workers": workers, "cold": cold, "warm": warm})
            print(f"# {n} clips, {workers} workers: cold {cold['wall_s']:.1f} s, warm {warm['wall_s']:.1f} s; "
                  f"{cold['summary']}", file=sys.stderr)

    print(f"\n{args.workload}, model {args.model}, {args.threads} threads\n")
    print("| clips | workers | cold wall (s) | embed (s) | clips/s | of limit | peak RSS (MB) | warm wall (s) "
          "| decoded cold / warm |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        cold, warm = row["cold"], row["warm"]
        speed = row["clips"] / cold["embed_s"]
        print(f"| {row['clips']} | {row['workers']} | {cold['wall_s']:.1f} | {cold['embed_s']:.1f} | {speed:.1f} | "
              f"{speed / BYOLA_LIMIT_CLIPS_PER_S:.0%} | {cold['peak_rss_mb']:.0f} | {warm['wall_s']:.1f} | "
              f"{cold['decoded']} / {warm['decoded']} |")
    for a, b in zip(rows, rows[1:]):
        if b["clips"] == 2 * a["clips"] and a["workers"] == b["workers"]:
            print(f"\n{a['clips']} -> {b['clips']} clips ({a['workers']} workers): cold time x"
                  f"{b['cold']['wall_s'] / a['cold']['wall_s']:.2f}, peak RSS +"
                  f"{b['cold']['peak_rss_mb'] - a['cold']['peak_rss_mb']:.0f} MB")

    if args.encoders:
        from_list = args.encoders.split(",") if args.encoders != "all" else _all_encoders(env)
        n = args.encoder_clips
        data = _generate(args.workload, n, work / f"{args.workload}-{n}", env)
        task_env = {**env, "EVAR_TASKS_DIR": str(work / f"tasks-{n}"), "EVAR_RESULTS_DIR": str(work / "results")}
        _run([sys.executable, "-m", "evar.cli", "prepare", args.workload, "--root", str(data)], task_env)
        print(f"\nEvery encoder, cold `evar probe` on {n} clips ({args.workload}), random official-format weights\n")
        print("| model | cold wall (s) | clips/s (embedding) | peak RSS (MB) |")
        print("|---|---:|---:|---:|")
        for model in from_list:
            emb = work / f"emb-enc-{model}"
            subprocess.run(["rm", "-rf", str(emb)], check=True)
            weights, options = _encoder_weights(model, work / f"weights-{model}", env)
            cold = _probe(model, args.workload, weights, 0, {**task_env, "EVAR_EMBEDDINGS_DIR": str(emb)},
                          work / "decoded", options)
            print(f"| {model} | {cold['wall_s']:.1f} | {n / cold['embed_s']:.1f} | {cold['peak_rss_mb']:.0f} |",
                  flush=True)

    if args.workload != "nsynth" or args.no_targets:
        return 0
    missed = []
    for row in rows:
        if row["clips"] != 2288:
            continue
        cold, warm = row["cold"], row["warm"]
        checks = {"cold_s": cold["wall_s"], "cold_rss_mb": cold["peak_rss_mb"], "warm_s": warm["wall_s"]}
        missed += [f"{k} {v:.1f} > {TARGETS[k]}" for k, v in checks.items() if v > TARGETS[k]]
        if row["clips"] / cold["embed_s"] < TARGETS["clips_per_s"]:
            missed.append(f"clips/s {row['clips'] / cold['embed_s']:.1f} < {TARGETS['clips_per_s']}")
        if warm["decoded"]:
            missed.append(f"warm run decoded {warm['decoded']} files")
    print("\ntargets (2,288 clips):", "all met" if not missed else "MISSED: " + "; ".join(missed))
    return 1 if missed else 0


def _all_encoders(env: dict) -> list[str]:
    proc = _run([sys.executable, "-c", "from evar.encoders import list_encoders; "
                 "print(','.join(s.name for s in list_encoders()))"], env)
    return proc.stdout.strip().split(",")


if __name__ == "__main__":
    sys.exit(main())
