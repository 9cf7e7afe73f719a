"""What the jobs of a sweep are doing: a table (or CSV/JSON) of their states, with reasons."""

from __future__ import annotations

import json
import time
from typing import Any

from evar.errors import EvarError
from evar.sweep.jobs import STATES, Job, JobStore, effective_state

STATUS_COLUMNS = ["job", "state", "model", "task", "protocol", "seeds", "attempts", "seconds", "host", "finished",
                  "reason"]


def sweep_status(sweep: str | None = None, all_jobs: bool = False, store: JobStore | None = None
                 ) -> tuple[str | None, list[dict[str, Any]]]:
    """The jobs of a sweep (default: the last one run; ``all_jobs``: every recorded job), one dict each."""
    store = store or JobStore()
    if all_jobs:
        ident, ids = None, store.all_job_ids()
    else:
        ident, ids = store.sweep_jobs(sweep)
    now, rows = time.time(), []
    for job_id in ids:
        record = store.read(job_id)
        if record is None:
            rows.append({c: "" for c in STATUS_COLUMNS} | {"job": job_id, "state": "pending"})
            continue
        job = Job.from_spec(record["spec"])
        state, reason = effective_state(record, now)
        rows.append({"job": job_id, "state": state, "model": job.label, "task": job.task, "protocol": job.protocol,
                     "seeds": ",".join(str(s) for s in job.seeds), "attempts": record.get("attempts", 0),
                     "seconds": record.get("seconds", ""), "host": record.get("host", ""),
                     "finished": record.get("finished") or "", "reason": reason})
    return ident, rows


def status_text(sweep: str | None = None, fmt: str = "table", all_jobs: bool = False,
                store: JobStore | None = None) -> str:
    """`evar status` output: a table with a per-state count, or CSV / JSON."""
    import pandas as pd

    ident, rows = sweep_status(sweep, all_jobs, store)
    frame = pd.DataFrame(rows, columns=STATUS_COLUMNS)
    if fmt == "json":
        return json.dumps({"sweep": ident, "jobs": rows}, indent=1) + "\n"
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt != "table":
        raise EvarError(f"unknown status format {fmt!r}; expected table, csv or json")
    counts = frame["state"].value_counts()
    head = (f"sweep {ident}: " if ident else "all jobs: ") + ", ".join(
        f"{int(counts[s])} {s}" for s in (*STATES, "died", "stale") if s in counts)
    frame["reason"] = frame["reason"].map(lambda r: r if len(r) <= 80 else r[:77] + "...")
    return head + "\n" + frame.to_string(index=False) + "\n"
