"""HEAR 2021 module API: a validator reproducing ``hear-validator``'s checks, plus evar's own.

A HEAR module (https://hearbenchmark.com/hear-api.html) exposes ``load_model(model_file_path="")``
returning a model with ``sample_rate``, ``scene_embedding_size`` and ``timestamp_embedding_size``;
``get_scene_embeddings(audio, model) -> (n_sounds, D)`` and ``get_timestamp_embeddings(audio, model)
-> (embeddings (n_sounds, n_timestamps, D), timestamps (n_sounds, n_timestamps) in milliseconds)``.

``validate_module`` runs the checks of hearbenchmark/hear-validator (``hearvalidator/validate.py``,
commit 8c2cb84) on PyTorch modules, in the same order, with the same inputs and thresholds; then,
unless ``extra_checks=False``, evar's additions (marked ``origin="evar"``): timestamps in
milliseconds and increasing, finite outputs, silence / short (0.81 s) / long (30 s) inputs, outputs
independent of the other clips in a batch, and repeatable. TensorFlow modules are not supported.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn

import numpy as np
import torch

#: Sample rates the HEAR API allows (hear-validator ``ACCEPTABLE_SAMPLE_RATE``)
ACCEPTABLE_SAMPLE_RATES = (16000, 22050, 32000, 44100, 48000)
#: hear-validator's inputs: timestamp embeddings of 2 clips of these lengths, scene embeddings of 4 x 2.74 s
TIMESTAMP_LENGTHS = (1.07, 1.98, 4.0)
SCENE_CLIPS, SCENE_LENGTH = 4, 2.74
#: evar's additional inputs (seconds): HEAR 2021's shortest fixed task duration and a long clip
SHORT_LENGTH, LONG_LENGTH = 0.81, 30.0
#: an output counts as unchanged when max |a - b| <= ATOL + RTOL * max |a|
RTOL, ATOL = 1e-3, 1e-4

STATUSES = ("pass", "fail", "warn")
DRIFT_NOTE = ("hear-validator: rounding a fractional hop (e.g. 25 ms at 44.1 kHz = 1102.5 samples) makes "
              "timestamps drift on long audio; short test inputs cannot detect it.")


@dataclass
class Check:
    """One check's outcome. ``case`` names the input; ``origin`` is ``hear-validator`` or ``evar``."""

    name: str
    status: str
    message: str
    case: str = ""
    origin: str = "hear-validator"

    def __str__(self) -> str:
        case = f" [{self.case}]" if self.case else ""
        extra = " (evar)" if self.origin == "evar" else ""
        return f"{self.status.upper():4s}  {self.name}{case}{extra}: {self.message}"


@dataclass
class ValidationReport:
    """Every check run on a module; ``ok`` when none failed (warnings allowed, as hear-validator)."""

    module: str
    model_file: str = ""
    device: str = "cpu"
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures()

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == "warn"]

    def failed(self, name: str) -> bool:
        """Whether check ``name`` (e.g. ``"timestamps.unit"``) failed on any input."""
        return any(c.name == name for c in self.failures())

    def format(self, verbose: bool = False) -> str:
        """A readable report: failures and warnings (every check with ``verbose``), then a summary."""
        shown = self.checks if verbose else [c for c in self.checks if c.status != "pass"]
        counts = {s: sum(c.status == s for c in self.checks) for s in STATUSES}
        weights = f" with {self.model_file}" if self.model_file else ""
        lines = [f"HEAR module {self.module}{weights} on {self.device}"]
        lines += [str(c) for c in shown]
        lines += [f"note: {n}" for n in self.notes]
        verdict = "valid" if self.ok else "INVALID"
        lines.append(f"{verdict}: {counts['pass']} passed, {counts['fail']} failed, {counts['warn']} warnings")
        return "\n".join(lines)


class _Stop(Exception):
    """A failed check that makes the following checks meaningless."""


class _Validator:
    def __init__(self, module_name: str, model_file: str, device: str, model_options: dict[str, Any],
                 extra_checks: bool) -> None:
        self.report = ValidationReport(module_name, model_file, device)
        self.model_file, self.device, self.options, self.extra = model_file, device, model_options, extra_checks
        self.module: Any = None
        self.model: Any = None
        self.generator = torch.Generator().manual_seed(0)

    # ---------------------------------------------------------------- recording
    def check(self, name: str, ok: bool, message: str, case: str = "", origin: str = "hear-validator",
              warn_only: bool = False, passed: str = "ok") -> bool:
        status = "pass" if ok else ("warn" if warn_only else "fail")
        self.report.checks.append(Check(name, status, passed if ok else message, case, origin))
        return ok

    def stop(self, name: str, message: str, case: str = "", origin: str = "hear-validator") -> NoReturn:
        """Record a failure that makes the current input's checks (or the whole run) meaningless."""
        self.check(name, False, message, case, origin)
        raise _Stop

    def require(self, name: str, ok: bool, message: str, case: str = "", origin: str = "hear-validator") -> None:
        if not ok:
            self.stop(name, message, case, origin)
        self.check(name, True, message, case, origin)

    # ---------------------------------------------------------------- module and model
    def load(self) -> None:
        name = self.report.module
        try:
            self.module = importlib.import_module(name)
        except Exception as exc:  # any import-time error of the module under test
            self.stop("import", f"cannot import {name!r}: {type(exc).__name__}: {exc}")
        self.check("import", True, "", passed=f"imported {name}")
        if not callable(getattr(self.module, "load_model", None)):
            self.stop("load_model", "Your API must include a function: 'load_model'")
        try:
            if self.model_file:
                self.model = self.module.load_model(self.model_file, **self.options)
            else:
                self.model = self.module.load_model(**self.options)
        except Exception as exc:
            self.stop("load_model", f"load_model raised {type(exc).__name__}: {exc}")
        self.check("load_model", True, "", passed=f"returned {type(self.model).__name__}")
        self.require("model.type", isinstance(self.model, torch.nn.Module),
                     f"load_model returned {type(self.model).__name__}; the model must be a torch.nn.Module "
                     "(TensorFlow modules are not supported by evar)")
        try:
            self.model.to(self.device)
        except Exception as exc:
            self.stop("model.device", f"model.to({self.device!r}) raised {type(exc).__name__}: {exc}")

    def attributes(self) -> None:
        if not hasattr(self.model, "sample_rate"):
            self.stop("sample_rate", "Model must expose expected input audio sample rate as an attribute.")
        sample_rate = self.model.sample_rate
        if not (isinstance(sample_rate, (int, float)) and sample_rate > 0):
            self.stop("sample_rate", f"sample_rate {sample_rate!r} is not a positive number")
        self.check("sample_rate", sample_rate in ACCEPTABLE_SAMPLE_RATES,
                   f"Input sample rate of {sample_rate} is invalid. Must be one of {list(ACCEPTABLE_SAMPLE_RATES)}",
                   passed=f"{sample_rate} Hz")
        for attr in ("scene_embedding_size", "timestamp_embedding_size"):
            value = getattr(self.model, attr, None)
            if not hasattr(self.model, attr):
                message = (f"Model must expose the output size of the {attr.split('_')[0]} embeddings as an "
                           f"attribute: {attr}")
            else:
                message = f"Model.{attr} must be an int, got {type(value).__name__} {value!r}"
            self.check(attr, isinstance(value, int) and not isinstance(value, bool), message, passed=str(value))

    # ---------------------------------------------------------------- calling the module
    def audio(self, n: int, seconds: float, silent: bool = False) -> torch.Tensor:
        """White noise in [-1, 1) (hear-validator's input; seeded here), or zeros."""
        shape = (n, int(seconds * self.model.sample_rate))
        if silent:
            return torch.zeros(shape, device=self.device)
        return (torch.rand(shape, generator=self.generator) * 2 - 1).to(self.device)

    def call(self, fn_name: str, audio: torch.Tensor, n_outputs: int, case: str, origin: str) -> list[np.ndarray]:
        """Run ``fn_name(audio, model)``; check it returns ``n_outputs`` float32 torch tensors; numpy copies."""
        label = "timestamp_embeddings" if fn_name == "get_timestamp_embeddings" else "scene_embeddings"
        try:
            with torch.no_grad():
                out = getattr(self.module, fn_name)(audio, self.model)
        except Exception as exc:
            self.stop(f"{label}.run", f"{fn_name} raised {type(exc).__name__}: {exc}", case, origin)
        outputs = list(out) if n_outputs > 1 and isinstance(out, (tuple, list)) else [out]
        expected = "(embeddings, timestamps) as torch tensors" if n_outputs > 1 else "a torch tensor"
        self.require(f"{label}.output", len(outputs) == n_outputs and all(torch.is_tensor(o) for o in outputs),
                     f"{fn_name} must return {expected}, got {type(out).__name__}", case, origin)
        self.require(f"{label}.dtype", outputs[0].dtype == torch.float32,
                     f"Expected embeddings to be {torch.float32}, received {outputs[0].dtype}.", case, origin)
        return [o.detach().cpu().numpy() for o in outputs]

    def timestamp_case(self, n: int, seconds: float, case: str, origin: str, silent: bool = False) -> None:
        """hear-validator's ``_check_timestamp_embeddings`` (+ evar's unit/order/finiteness checks)."""
        try:
            emb, ts = self.call("get_timestamp_embeddings", self.audio(n, seconds, silent), 2, case, origin)
            self.require("timestamp_embeddings.ndim", emb.ndim == 3,
                         f"Expected 3 dimensions, but received shape {emb.shape}.", case, origin)
            self.require("timestamps.ndim", ts.ndim == 2,
                         f"Expected 2 dimensions, but received shape {ts.shape}.", case, origin)
            self.require("timestamp_embeddings.batch", emb.shape[0] == n,
                         f"Passed in a batch of {n} audio samples, but your model returned {emb.shape[0]}.",
                         case, origin)
            self.require("timestamps.shape", emb.shape[:2] == ts.shape,
                         f"Expected {emb.shape[:2]}, but received {ts.shape}.", case, origin)
            size = getattr(self.model, "timestamp_embedding_size", None)
            self.check("timestamp_embeddings.size", emb.shape[2] == size,
                       f"Output embedding size is {emb.shape[2]}; Model.timestamp_embedding_size is {size}.",
                       case, origin)
            if self.extra:
                self.check("timestamp_embeddings.finite", bool(np.isfinite(emb).all()),
                           "embeddings contain NaN or inf", case, "evar")
                self.timestamp_values(ts, seconds, case)
            if ts.shape[1] > 1:
                self.timestamp_spacing(ts, seconds, case, origin)
        except _Stop:
            pass

    def timestamp_values(self, ts: np.ndarray, seconds: float, case: str) -> None:
        """evar: finite, strictly increasing, in milliseconds."""
        if not self.check("timestamps.finite", bool(np.isfinite(ts).all()), "timestamps contain NaN or inf",
                          case, "evar"):
            return
        if ts.shape[1] > 1:
            self.check("timestamps.monotonic", bool((np.diff(ts, axis=1) > 0).all()),
                       "timestamps must increase strictly along each clip", case, "evar")
        if ts.size and seconds >= 0.5:
            last = float(ts.max())
            self.check("timestamps.unit", last > seconds,
                       f"timestamps end at {last:g} for {seconds:g} s of audio: they look like seconds; "
                       f"HEAR timestamps are in milliseconds (expected values up to {1000 * seconds:g})", case, "evar")

    def timestamp_spacing(self, ts: np.ndarray, seconds: float, case: str, origin: str) -> None:
        """hear-validator: regular hop (<= 1 ms deviation), <= 50 ms advised, covering the audio."""
        diff = np.diff(ts)
        avg, longest = float(np.mean(diff)), float(np.max(diff))
        self.check("timestamps.hop", longest <= 50.0,
                   f"max interval {longest:g} ms; an interval <= 50 ms is advised (50 ms tolerance of music "
                   "transcription tasks)", case, origin, warn_only=True, passed=f"avg interval {avg:g} ms")
        deviation = float(np.max(np.abs(diff - avg)))
        self.check("timestamps.regular", deviation <= 1,
                   f"Timestamps should occur at regular intervals. Found a deviation {deviation:g}ms larger "
                   "than 1ms between adjacent timestamps.", case, origin)
        first, last, duration = float(np.min(ts)), float(np.max(ts)), 1000 * seconds
        self.check("timestamps.start", first <= avg,
                   f"Your timestamps begin at {first:g}ms, which appears to be wrong.", case, origin, warn_only=True)
        self.check("timestamps.end", not (last < duration - avg or last < duration - 50),
                   f"Your timestamps end at {last:g}ms, but the audio is {duration:g} ms. You won't have "
                   "embeddings for events at the end of the audio.", case, origin, warn_only=True)
        self.check("timestamps.range", last <= duration,
                   f"Your timestamps end at {last:g}ms, but the audio is {duration:g} ms.", case, origin)

    def scene_case(self, n: int, seconds: float, case: str, origin: str, silent: bool = False) -> None:
        """hear-validator's ``check_scene_embeddings`` (+ evar's finiteness check)."""
        try:
            (emb,) = self.call("get_scene_embeddings", self.audio(n, seconds, silent), 1, case, origin)
            self.require("scene_embeddings.ndim", emb.ndim == 2,
                         f"Expected 2 dimensions, but received shape {emb.shape}.", case, origin)
            self.require("scene_embeddings.batch", emb.shape[0] == n,
                         f"Passed in a batch of {n} audio samples, but your model returned {emb.shape[0]}.",
                         case, origin)
            size = getattr(self.model, "scene_embedding_size", None)
            self.check("scene_embeddings.size", emb.shape[1] == size,
                       f"Output embedding size is {emb.shape[1]}; Model.scene_embedding_size is {size}.",
                       case, origin)
            if self.extra:
                self.check("scene_embeddings.finite", bool(np.isfinite(emb).all()),
                           "embeddings contain NaN or inf", case, "evar")
        except _Stop:
            pass

    # ---------------------------------------------------------------- evar's extra checks
    def same(self, name: str, a: np.ndarray, b: np.ndarray, message: str, case: str) -> None:
        if a.shape != b.shape:
            self.check(name, False, f"{message}: shapes {a.shape} vs {b.shape}", case, "evar")
            return
        delta = float(np.max(np.abs(a - b))) if a.size else 0.0
        scale = float(np.max(np.abs(a))) if a.size else 0.0
        self.check(name, delta <= ATOL + RTOL * scale, f"{message} (max |difference| {delta:.3g})", case, "evar",
                   passed=f"max |difference| {delta:.3g}")

    def consistency(self) -> None:
        """The same clip gives the same output alone, in a batch, and on a second call."""
        audio = self.audio(2, TIMESTAMP_LENGTHS[1])
        case = f"2 x {TIMESTAMP_LENGTHS[1]} s noise"
        for fn_name, name in (("get_scene_embeddings", "scene"), ("get_timestamp_embeddings", "timestamp")):
            fn: Callable | None = getattr(self.module, fn_name, None)
            if not callable(fn):
                continue

            def run(x: torch.Tensor) -> np.ndarray | None:
                try:
                    with torch.no_grad():
                        out = fn(x, self.model)
                    return (out[0] if isinstance(out, (tuple, list)) else out).detach().cpu().numpy()
                except Exception:  # failures of the call itself are reported by the shape checks
                    return None

            batch, again, alone = run(audio), run(audio), run(audio[1:])
            if batch is None or again is None or alone is None:
                continue
            self.same(f"{name}_embeddings.deterministic", batch, again,
                      "two calls on the same audio differ (dropout or other randomness left on in load_model's "
                      "model?)", case)
            self.same(f"{name}_embeddings.batch_independent", batch[1:], alone,
                      "a clip's embedding changes with the other clips in its batch (batch statistics?)", case)

    # ---------------------------------------------------------------- all
    def run(self) -> ValidationReport:
        try:
            self.load()
            self.attributes()
        except _Stop:
            return self.report
        has_ts = self.check("get_timestamp_embeddings",
                            callable(getattr(self.module, "get_timestamp_embeddings", None)),
                            "Your API must include a function: 'get_timestamp_embeddings'", passed="present")
        if has_ts:
            for seconds in TIMESTAMP_LENGTHS:
                self.timestamp_case(2, seconds, f"2 x {seconds} s noise", "hear-validator")
        self.report.notes.append(DRIFT_NOTE)
        has_scene = self.check("get_scene_embeddings", callable(getattr(self.module, "get_scene_embeddings", None)),
                               "Your API must include a function: 'get_scene_embeddings'", passed="present")
        if has_scene:
            self.scene_case(SCENE_CLIPS, SCENE_LENGTH, f"{SCENE_CLIPS} x {SCENE_LENGTH} s noise", "hear-validator")
        if self.extra and (has_ts or has_scene):
            for n, seconds, silent, case in ((2, 1.0, True, "2 x 1.0 s silence"),
                                             (2, SHORT_LENGTH, False, f"2 x {SHORT_LENGTH} s noise (short)"),
                                             (1, LONG_LENGTH, False, f"1 x {LONG_LENGTH} s noise (long)")):
                if has_ts:
                    self.timestamp_case(n, seconds, case, "evar", silent)
                if has_scene:
                    self.scene_case(n, seconds, case, "evar", silent)
            self.consistency()
        return self.report


def validate_module(module_name: str, model_file: str = "", device: str = "cpu",
                    model_options: dict[str, Any] | None = None, extra_checks: bool = True) -> ValidationReport:
    """Validate the HEAR module ``module_name`` like hear-validator (plus evar's checks unless disabled).

    ``model_file`` is passed to ``load_model`` as hear-validator does (no argument when empty);
    ``model_options`` are extra keyword arguments of ``load_model`` (heareval's ``--model-options``).
    Never raises for a broken module: every problem is a failed :class:`Check` in the report.
    """
    return _Validator(module_name, model_file, device, dict(model_options or {}), extra_checks).run()
