"""Count every encoder's cost and write the table ``evar list models --cost`` prints (``evar/encoders/cost.csv``).

For each registered encoder, in a fresh interpreter: its full-size checkpoint in the official format with
deterministic weights (``tests/encoder_checkpoints.py``; cost does not depend on the weight values), then
:func:`evar.results.provenance.count_cost` on one 10-s clip (AudioSet's length): parameters, and GFLOPs per
second of audio counted by ``torch.utils.flop_counter`` (matrix products, convolutions, attention).

    python benchmarks/encoder_cost.py                    # every encoder, writes evar/encoders/cost.csv
    python benchmarks/encoder_cost.py --models byola,cnn14 --print
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "evar" / "encoders" / "cost.csv"
FIELDS = ("model", "params", "gflops_per_audio_second", "counted_on_sec", "torch")


def count(name: str) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from encoder_checkpoints import write_checkpoint

    from evar.encoders import create_encoder
    from evar.results.provenance import COST_SECONDS, count_cost

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix=f"evar-cost-{name}-") as tmp:
        weights, kwargs = write_checkpoint(name, tmp, full_size=True)
        encoder = create_encoder(name, weights=str(weights) if weights else None, **kwargs)
        cost = count_cost(encoder, COST_SECONDS)
    return {"model": name, "params": cost["params"], "gflops_per_audio_second": cost["gflops_per_audio_second"],
            "counted_on_sec": cost["counted_on_sec"], "torch": torch.__version__.split("+")[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated encoder names (default: every registered encoder)")
    parser.add_argument("--print", action="store_true", help="print the rows instead of writing the table")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(count(args.child)))
        return
    from evar.encoders import list_encoders

    names = args.models.split(",") if args.models else [spec.name for spec in list_encoders()]
    rows = []
    for name in names:
        proc = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"{name}: counting failed\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if not args.print and TABLE.is_file():  # a subset updates its rows of the table, keeping the others
        kept = {r["model"]: r for r in csv.DictReader(TABLE.open())}
        rows = sorted({**kept, **{r["model"]: r for r in rows}}.values(), key=lambda r: r["model"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    if args.print:
        print(buffer.getvalue(), end="")
    else:
        TABLE.write_text(buffer.getvalue())
        print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()
