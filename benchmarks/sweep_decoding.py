"""What a sweep saves by decoding each clip once for all its encoders of one sample rate.

    python benchmarks/sweep_decoding.py [--clips 400] [--models melspec,resemblyzer,byola]

An ESC-50-shaped task (5-s clips at 44.1 kHz, 5 folds, generated in the official layout) is swept with the
linear probe (one seed, 20 epochs) over 16-kHz encoders twice, each time from an empty embedding cache:
all models in one `evar sweep` (their decoding shared), then each model in a sweep of its own. Decoded
files are counted and timed by wrapping the loader's ``load_audio`` (``--num-workers 0``, so every decode is in this
process). ``byola`` uses the real 512-d weights from ``../shared/weights`` (left out when they are absent);
resemblyzer its packaged weights; melspec has none.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BYOLA_WEIGHTS = ROOT.parent / "shared" / "weights" / "AudioNTT2020-BYOLA-64x96d512.pth"


def _use_folders(base: Path) -> None:
    for variable, name in (("EVAR_CACHE_DIR", "cache"), ("EVAR_TASKS_DIR", "prepared"),
                           ("EVAR_EMBEDDINGS_DIR", "embeddings"), ("EVAR_RESULTS_DIR", "results")):
        os.environ[variable] = str(base / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=400, help="clips (a multiple of 200: 40 classes x 5 folds)")
    parser.add_argument("--models", default="melspec,resemblyzer,byola")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evar-sweep-decoding-"))
    _use_folders(work / "shared")

    import evar
    import evar.embeddings.datasets as datasets
    from evar.options import RunOptions
    from evar.sweep.backends import run_sweep
    from evar.sweep.jobs import make_grid
    from evar.synth.trees import make_esc50_tree

    models = [m for m in args.models.split(",") if m != "byola" or BYOLA_WEIGHTS.is_file()]
    weights = {"byola": str(BYOLA_WEIGHTS)} if "byola" in models else {}
    tree = make_esc50_tree(work / "ESC-50-master", n_classes=40, clips_per_class_per_fold=max(1, args.clips // 200),
                           seconds=5.0, seed=1)
    decoded: list[float] = []  # seconds of each decode
    real_load = datasets.load_audio

    def counted_load(path, sample_rate):
        start = time.perf_counter()
        wav = real_load(path, sample_rate)
        decoded.append(time.perf_counter() - start)
        return wav

    datasets.load_audio = counted_load
    run = RunOptions(progress=False, num_workers=0)
    jobs = make_grid(models, ["esc50"], seeds=(42,), weights=weights, max_epochs=20)
    timings = {}
    for setting in ("shared", "alone"):
        _use_folders(work / setting)
        evar.prepare_task("esc50", tree)
        n_clips = len(evar.load_task("esc50"))
        decoded.clear()
        start = time.perf_counter()
        for batch in ([jobs] if setting == "shared" else [[job] for job in jobs]):
            report = run_sweep(batch, run=run)
            if not report.ok:
                raise SystemExit(f"sweep failed: {report.failed}")
        timings[setting] = (time.perf_counter() - start, len(decoded) / n_clips, sum(decoded))
    print(f"{n_clips} clips, models {', '.join(models)} (all 16 kHz), linear probe 1 seed")
    print("| sweep | decodes per clip | decoding s | wall s |\n|---|---|---|---|")
    for setting, label in (("shared", "one sweep (decoding shared)"), ("alone", "one sweep per model")):
        seconds, per_clip, decoding = timings[setting]
        print(f"| {label} | {per_clip:.2f} | {decoding:.1f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
