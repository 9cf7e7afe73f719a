"""Time the probes on cached embeddings of an ESC-50-sized task (2,000 clips, 50 classes, 5 folds).

    python benchmarks/protocols.py [--dims 512,2048]

Embeddings are Gaussian class blobs, overlapping and far off the origin as real embeddings are (the logistic
regression's iterations depend on that; few-shot accuracy about 0.78 at 512-d); each protocol runs through
``score_rounds`` as ``evar probe --protocol`` does after the cache. Targets: kNN and few-shot under 2 s each
(issue 19); the linear probe, EVAR mode, 5 folds x 3 seeds, under 3 s (issue 21).
The first torch optimiser of a process imports ``torch._dynamo`` (about 1.6 s, once, for the linear probe's Adam
too); it is timed on its own line, before the protocols.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from evar.options import FewShotSettings, KnnSettings, LinearSettings
from evar.protocols.base import score_rounds
from evar.protocols.fewshot import FewShotRounds
from evar.protocols.knn import KnnRounds
from evar.protocols.linear import LinearRounds
from evar.tasks.base import Task, TaskSpec


def esc50_like(dim: int, seed: int = 0) -> tuple[Task, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, classes = 2000, 50
    y = np.arange(n) % classes
    X = (0.25 * rng.normal(size=(classes, dim))[y] + rng.normal(size=(n, dim)) + 3 * rng.normal(size=dim))
    X = X.astype(np.float32)
    meta = pd.DataFrame({"file": [f"{i}.wav" for i in range(n)], "label": [f"c{c}" for c in y],
                         "fold": rng.permutation(n) % 5 + 1})
    return Task(TaskSpec("esc50_like", 5.0, classes, folds=5), Path("."), meta), X


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="512,2048")
    args = parser.parse_args()
    print("| protocol | dim | seconds |\n|---|---|---|")
    start = time.perf_counter()
    import torch._dynamo  # noqa: F401  (what the first torch.optim optimiser imports)
    print(f"| (once per process: torch.optim's import of torch._dynamo) | | {time.perf_counter() - start:.2f} |")
    for dim in (int(d) for d in args.dims.split(",")):
        task, X = esc50_like(dim)
        linear = LinearSettings(seeds=(42, 43, 44))
        for name, rounds, seeds in (
                ("knn (k 10, cosine)", KnnRounds(X, task, KnnSettings()), (42,)),
                ("fewshot logistic (8 x 10)", FewShotRounds(X, task, FewShotSettings()), (42,)),
                ("fewshot centroid (8 x 10)", FewShotRounds(X, task, FewShotSettings(classifier="centroid")), (42,)),
                ("linear (EVAR mode, seeds 42-44)", LinearRounds(X, task, linear), linear.seeds)):
            start = time.perf_counter()
            score_rounds(rounds, seeds, progress=False)
            print(f"| {name} | {dim} | {time.perf_counter() - start:.2f} |")


if __name__ == "__main__":
    main()
