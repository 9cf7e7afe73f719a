"""Sound event detection metrics, as sed_eval 0.2.1 computes them (TUT-ARG/sed_eval 0cb1b6d) and as
HEAR 2021 reports them (hearbenchmark/hear-eval-kit 8559649, ``heareval/score.py``).

Events are :class:`Event` (onset and offset in seconds, label), grouped per file:
``{file: [Event, ...]}``. Both metrics accumulate counts over files, then compute overall (micro)
scores from the totals, as sed_eval's ``results_overall_metrics``:

- :func:`event_based_scores`: an estimated event is correct when its label matches a reference
  event's and its onset lies within ``t_collar`` of the reference onset (and, with
  ``evaluate_offset``, its offset within ``max(t_collar, percentage_of_length * reference length)``).
  Each reference matches at most one estimate (maximum bipartite matching per file and class, sed_eval's
  ``'optimal'`` matching). HEAR's ``event_onset_200ms_fms`` is onset-only with a 200 ms collar.
- :func:`segment_based_scores` (Mesaros, Heittola & Virtanen 2016): activity of each class in
  fixed segments (``time_resolution`` s; an event covers segments ``floor(onset / r)`` to
  ``ceil(offset / r) - 1``); per segment ``S = min(Nref, Nsys) - Ntp``, ``D = max(0, Nref - Nsys)``,
  ``I = max(0, Nsys - Nref)``; ``ER = (ΣS + ΣD + ΣI) / ΣNref``. A file spans ``ceil(length / r)``
  segments, its length the last offset of either list unless ``lengths`` gives it. HEAR's
  ``segment_1s_er`` is the error rate with 1 s segments.

Empty output: sed_eval's default gives precision NaN when the system outputs nothing; evar uses its
``empty_system_output_handling='zero_score'`` instead (precision and F-measure 0), so a probe that
detects nothing scores 0 rather than NaN. Recall is NaN when there are no reference events.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, NamedTuple, Sequence

EventLists = Mapping[str, Sequence["Event"]]


class Event(NamedTuple):
    """One sound event: onset and offset in seconds, and its class label."""

    onset: float
    offset: float
    label: str


def _prf(ntp: float, nsys: float, nref: float) -> dict[str, float]:
    """Precision, recall and F-measure from counts (precision 0 without output, recall NaN without reference)."""
    precision = ntp / nsys if nsys else 0.0
    recall = ntp / nref if nref else float("nan")
    if math.isnan(recall):
        f = float("nan")
    else:
        f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"f_measure": f, "precision": precision, "recall": recall}


def _max_matching(candidates: list[list[int]], n_right: int) -> int:
    """Size of a maximum bipartite matching; ``candidates[i]`` lists the right nodes left node i may take."""
    owner = [-1] * n_right

    def augment(i: int, seen: list[bool]) -> bool:
        for j in candidates[i]:
            if not seen[j]:
                seen[j] = True
                if owner[j] < 0 or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return sum(augment(i, [False] * n_right) for i in range(len(candidates)))


def _files(reference: EventLists, estimated: EventLists) -> list[str]:
    return list(dict.fromkeys([*reference, *estimated]))


def event_based_scores(reference: EventLists, estimated: EventLists, t_collar: float = 0.2,
                       evaluate_offset: bool = False, percentage_of_length: float = 0.5,
                       labels: Iterable[str] | None = None) -> dict:
    """Overall event-based precision, recall and F-measure, plus per-class F-measure and the counts.

    Defaults are HEAR's ``event_onset_200ms_fms`` (onset only, 200 ms collar). ``labels`` lists the
    classes reported in ``class_wise`` (default: every label seen).
    """
    counts: dict[str, list[float]] = {}  # label -> [Ntp, Nsys, Nref]
    for name in _files(reference, estimated):
        ref, est = list(reference.get(name, ())), list(estimated.get(name, ()))
        for label in {e.label for e in ref} | {e.label for e in est}:
            r = [e for e in ref if e.label == label]
            s = [e for e in est if e.label == label]
            candidates = []
            for a in r:
                ok = []
                for j, b in enumerate(s):
                    hit = abs(a.onset - b.onset) <= t_collar
                    if evaluate_offset:
                        hit = hit and abs(a.offset - b.offset) <= max(t_collar, percentage_of_length * (a.offset - a.onset))
                    if hit:
                        ok.append(j)
                candidates.append(ok)
            c = counts.setdefault(label, [0.0, 0.0, 0.0])
            c[0] += _max_matching(candidates, len(s))
            c[1] += len(s)
            c[2] += len(r)
    ntp, nsys, nref = (sum(c[k] for c in counts.values()) for k in range(3))
    names = list(labels) if labels is not None else sorted(counts)
    class_wise = {label: _prf(*counts.get(label, [0.0, 0.0, 0.0])) for label in names}
    return {**_prf(ntp, nsys, nref), "Ntp": ntp, "Nsys": nsys, "Nref": nref, "class_wise": class_wise}


def _segments(events: Sequence[Event], n_segments: int, resolution: float) -> dict[str, set[int]]:
    """Active segment indices per label (sed_eval's event roll), cut to ``n_segments``."""
    active: dict[str, set[int]] = {}
    for e in events:
        first, last = int(math.floor(e.onset / resolution)), int(math.ceil(e.offset / resolution))
        active.setdefault(e.label, set()).update(range(max(first, 0), min(last, n_segments)))
    return active


def segment_based_scores(reference: EventLists, estimated: EventLists, time_resolution: float = 1.0,
                         lengths: Mapping[str, float] | None = None) -> dict:
    """Overall segment-based F-measure (with precision, recall) and error rate (with S, D, I rates).

    ``lengths`` gives each file's evaluated duration in seconds (sed_eval's ``evaluated_length_seconds``);
    a file missing from it spans up to the last offset of its reference or estimated events.
    """
    if not time_resolution > 0:
        raise ValueError(f"time_resolution must be positive, got {time_resolution}")
    tot = dict.fromkeys(("Ntp", "Nsys", "Nref", "S", "D", "I"), 0.0)
    for name in _files(reference, estimated):
        ref, est = list(reference.get(name, ())), list(estimated.get(name, ()))
        length = (lengths or {}).get(name)
        if length is None:
            length = max([e.offset for e in ref + est], default=0.0)
        n = int(math.ceil(length / time_resolution))
        a, b = _segments(ref, n, time_resolution), _segments(est, n, time_resolution)
        labels = set(a) | set(b)
        for k in range(n):
            nref = sum(k in a.get(label, ()) for label in labels)
            nsys = sum(k in b.get(label, ()) for label in labels)
            ntp = sum(k in a.get(label, ()) and k in b.get(label, ()) for label in labels)
            tot["Ntp"] += ntp
            tot["Nsys"] += nsys
            tot["Nref"] += nref
            tot["S"] += min(nref, nsys) - ntp
            tot["D"] += max(0, nref - nsys)
            tot["I"] += max(0, nsys - nref)
    nref = tot["Nref"]
    rates = {f"{k}_rate": (tot[k] / nref if nref else float("nan"))
             for k in ("S", "D", "I")}
    error_rate = sum(rates.values())
    return {**_prf(tot["Ntp"], tot["Nsys"], nref), "error_rate": error_rate,
            "substitution_rate": rates["S_rate"], "deletion_rate": rates["D_rate"],
            "insertion_rate": rates["I_rate"], **{k: v for k, v in tot.items()}}
