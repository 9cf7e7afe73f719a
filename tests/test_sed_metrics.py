"""SED metrics: hand-computed tiny cases, and sed_eval 0.2.1's scores (stored fixture; live when installed)."""

from __future__ import annotations

import json

import pytest

from evar.metrics.sed import Event, event_based_scores, segment_based_scores
from fixture_support import FIXTURES

E = Event
#: a.wav: dog 1.0-2.0, dog 3.0-3.5, cat 0.2-0.9; b.wav: cat 0.0-1.5
REFERENCE = {"a.wav": [E(1.0, 2.0, "dog"), E(3.0, 3.5, "dog"), E(0.2, 0.9, "cat")],
             "b.wav": [E(0.0, 1.5, "cat")]}
ESTIMATED = {"a.wav": [E(1.15, 2.3, "dog"),   # onset 0.15 s from dog@1.0: a hit at 200 ms, not at 50 ms
                       E(3.3, 3.6, "dog"),    # 0.30 s from dog@3.0: a miss
                       E(0.23, 0.8, "cat"),   # 0.03 s from cat@0.2: a hit at both collars
                       E(1.1, 1.4, "dog")],   # near dog@1.0 too, but that reference is taken: false positive
             "b.wav": [E(0.1, 1.2, "dog")]}   # wrong label: a false positive, and cat@0.0 is missed


def test_event_based_onset_hand_computed():
    # 200 ms collar: hits dog@1.0 and cat@0.2 -> Ntp 2, Nsys 5, Nref 4
    # P = 2/5 = 0.4, R = 2/4 = 0.5, F = 2 * 0.4 * 0.5 / (0.4 + 0.5) = 0.4 / 0.9 = 0.4444...
    s = event_based_scores(REFERENCE, ESTIMATED)
    assert (s["Ntp"], s["Nsys"], s["Nref"]) == (2, 5, 4)
    assert s["precision"] == pytest.approx(0.4, abs=1e-12) and s["recall"] == pytest.approx(0.5, abs=1e-12)
    assert s["f_measure"] == pytest.approx(4 / 9, abs=1e-12)
    # class-wise: dog Ntp 1 / Nsys 4 / Nref 2 -> P 1/4, R 1/2, F = 2 (1/8) / (3/4) = 1/3;
    #             cat Ntp 1 / Nsys 1 / Nref 2 -> P 1, R 1/2, F = 1 / 1.5 = 2/3
    assert s["class_wise"]["dog"]["f_measure"] == pytest.approx(1 / 3, abs=1e-12)
    assert s["class_wise"]["cat"]["f_measure"] == pytest.approx(2 / 3, abs=1e-12)
    # 50 ms collar: only cat@0.2 -> P 1/5, R 1/4, F = 2 (1/20) / (9/20) = 2/9
    assert event_based_scores(REFERENCE, ESTIMATED, t_collar=0.05)["f_measure"] == pytest.approx(2 / 9, abs=1e-12)


def test_event_matching_is_optimal_not_greedy():
    # refs dog@1.0, dog@1.3; estimates dog@1.18 (within 200 ms of both) listed first, dog@0.85 (only of 1.0).
    # Greedy in reference order gives 1.0 <- 1.18 and leaves 1.3 unmatched (1 hit); the maximum matching
    # pairs 1.0 <- 0.85 and 1.3 <- 1.18: 2 hits, F = 1.
    ref = {"c.wav": [E(1.0, 1.5, "dog"), E(1.3, 1.8, "dog")]}
    est = {"c.wav": [E(1.18, 1.6, "dog"), E(0.85, 1.2, "dog")]}
    assert event_based_scores(ref, est)["f_measure"] == 1.0


def test_offset_condition():
    # reference 1.0-3.0 (length 2 s): offset tolerance max(0.05, 0.2 * 2) = 0.4 s
    ref = {"d.wav": [E(1.0, 3.0, "car")]}
    assert event_based_scores(ref, {"d.wav": [E(1.0, 3.35, "car")]}, 0.05, True, 0.2)["f_measure"] == 1.0
    assert event_based_scores(ref, {"d.wav": [E(1.0, 3.45, "car")]}, 0.05, True, 0.2)["f_measure"] == 0.0


def test_segment_based_hand_computed():
    # 1 s segments; an event covers floor(onset) .. ceil(offset) - 1.
    # a.wav spans ceil(3.6) = 4 segments: reference {cat}, {dog}, {}, {dog}; estimated {cat}, {dog}, {dog}, {dog}
    #   -> Ntp 3, Nsys 4, Nref 3; segment 2 has an insertion (I = 1)
    # b.wav spans ceil(1.5) = 2 segments: reference {cat}, {cat}; estimated {dog}, {dog}
    #   -> Ntp 0, Nsys 2, Nref 2; each segment a substitution (S = min(1, 1) - 0 = 1)
    # totals Ntp 3, Nsys 6, Nref 5, S 2, D 0, I 1: P = 0.5, R = 0.6, F = 2 * 0.3 / 1.1 = 6/11, ER = 3/5
    s = segment_based_scores(REFERENCE, ESTIMATED, 1.0)
    assert (s["Ntp"], s["Nsys"], s["Nref"], s["S"], s["D"], s["I"]) == (3, 6, 5, 2, 0, 1)
    assert s["f_measure"] == pytest.approx(6 / 11, abs=1e-12)
    assert s["error_rate"] == pytest.approx(0.6, abs=1e-12)
    assert s["substitution_rate"] == pytest.approx(0.4, abs=1e-12) and s["insertion_rate"] == pytest.approx(0.2)


def test_empty_output_scores_zero():
    # nothing detected: precision and F are 0 (sed_eval's zero_score handling), every reference is a deletion
    s = event_based_scores(REFERENCE, {})
    assert (s["precision"], s["recall"], s["f_measure"]) == (0.0, 0.0, 0.0)
    seg = segment_based_scores(REFERENCE, {"a.wav": [], "b.wav": []})
    assert seg["f_measure"] == 0.0 and seg["error_rate"] == pytest.approx(1.0) and seg["deletion_rate"] == 1.0


def _lists(case: dict, key: str) -> dict[str, list[Event]]:
    return {name: [Event(*e) for e in events] for name, events in case[key].items()}


def _compare(case: dict, expected: dict) -> None:
    ref, est = _lists(case, "reference"), _lists(case, "estimated")
    tol = dict(abs=1e-9)
    assert event_based_scores(ref, est)["f_measure"] == pytest.approx(expected["event_onset_200ms"]["f_measure"], **tol)
    assert event_based_scores(ref, est, 0.05)["f_measure"] == pytest.approx(expected["event_onset_50ms"]["f_measure"], **tol)
    ours = event_based_scores(ref, est, 0.05, True, 0.2)
    theirs = expected["event_onset_offset_50ms_20perc"]
    assert (ours["f_measure"], ours["precision"]) == pytest.approx((theirs["f_measure"], theirs["precision"]), **tol)
    seg = segment_based_scores(ref, est, 1.0)
    for key in ("f_measure", "precision", "recall", "error_rate", "substitution_rate", "deletion_rate", "insertion_rate"):
        assert seg[key] == pytest.approx(expected["segment_1s"][key], **tol), key


def test_matches_sed_eval_reference_fixture():
    """sed_eval 0.2.1 on 12 random cases (tests/fixtures/make_sed_eval_reference.py), tolerance 1e-9."""
    data = json.loads((FIXTURES / "sed_eval_reference.json").read_text())
    assert data["sed_eval"] == "0.2.1" and len(data["cases"]) == 12
    assert any(0 < c["sed_eval"]["event_onset_50ms"]["f_measure"] < 1 for c in data["cases"])
    for case in data["cases"]:
        _compare(case, case["sed_eval"])


def test_matches_sed_eval_live():
    """The same cases through an installed sed_eval (not an evar dependency: it pulls librosa and numba)."""
    pytest.importorskip("sed_eval", reason="sed_eval is not installed (optional; the stored fixture covers it)")
    make = __import__("fixture_support").fixture_module("make_sed_eval_reference")
    data = json.loads((FIXTURES / "sed_eval_reference.json").read_text())
    for case in data["cases"][:4]:
        _compare(case, make.sed_eval_scores(case))
