"""What a run cost and where its time went: the run clock every recorded run carries, and encoder cost.

A protocol entry point (``evar probe``, ``finetune``, a sweep job) runs under :func:`run_clock`; the steps inside
mark their time with :func:`stage` — ``decode`` (waiting for decoded, resampled clips), ``statistics`` (the
normalisation pass), ``embedding`` (the encoder's forward passes), ``probe`` (fitting and scoring the rounds;
``training`` for fine-tuning) — and the embedding cache reports what it computed or reused. The store writes the
clock's :meth:`RunClock.summary` into the run's record. Outside a clock, :func:`stage` does nothing.

Cost (:func:`count_cost`) is counted, not estimated: parameters, and the floating-point operations of one forward
pass on noise of a given length under ``torch.utils.flop_counter.FlopCounterMode`` (matrix products,
convolutions and attention, 2 FLOPs per multiply-add, and recurrent layers' gate products, which its table lacks;
element-wise work and FFTs are not counted), divided by that length.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import resource
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import torch

STAGES = ("decode", "statistics", "embedding", "probe", "training")
#: the clip length of the encoder table's cost (AudioSet's 10 s); a run's record counts on its task's clip length
COST_SECONDS = 10.0


@dataclass
class RunClock:
    """Wall time per stage of one run, the clips it embedded, and the encoder's cost."""

    device: str = "cpu"
    embedding_dtype: str = "float32"
    started: float = field(default_factory=time.perf_counter)
    stages: dict[str, float] = field(default_factory=dict)
    clips_embedded: int = 0
    #: what the embedding cache said: computed now, or reused (with the throughput of when it was computed)
    embeddings: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] | None = None
    compute_dtype: str | None = None

    def add(self, name: str, seconds: float) -> None:
        self.stages[name] = self.stages.get(name, 0.0) + seconds

    def merge(self, summary: dict[str, Any]) -> None:
        """Fold in another process's clock (a sweep's embedding step on a worker)."""
        for name, seconds in (summary.get("stages_sec") or {}).items():
            self.add(name, float(seconds))
        self.clips_embedded += int(summary.get("clips_embedded") or 0)
        self.embeddings = {**self.embeddings, **(summary.get("embeddings") or {})}
        self.cost = self.cost or summary.get("cost")
        self.compute_dtype = self.compute_dtype or summary.get("compute_dtype")

    def summary(self) -> dict[str, Any]:
        """The record's ``provenance`` (everything in seconds, MB, clips per second)."""
        embedding = self.stages.get("embedding", 0.0) + self.stages.get("decode", 0.0)
        rate = round(self.clips_embedded / embedding, 3) if self.clips_embedded and embedding > 0 else None
        device_peak = None
        if torch.cuda.is_available() and str(self.device).startswith("cuda"):
            device_peak = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return {"device": self.device, "compute_dtype": self.compute_dtype, "embedding_dtype": self.embedding_dtype,
                "wall_sec": round(time.perf_counter() - self.started, 3),
                "stages_sec": {k: round(self.stages[k], 3) for k in STAGES if k in self.stages},
                "clips_embedded": self.clips_embedded, "clips_per_sec": rate,
                "embeddings": self.embeddings, "peak_rss_mb": peak_rss_mb(), "peak_device_mb": device_peak,
                "cost": self.cost}


_current: ContextVar[RunClock | None] = ContextVar("evar_run_clock", default=None)


def current() -> RunClock | None:
    """The clock of the run in progress (None outside one)."""
    return _current.get()


@contextlib.contextmanager
def run_clock(device: str = "cpu", embedding_dtype: str = "float32") -> Iterator[RunClock]:
    """Time a run; a run inside another (a probe called by a sweep step) adds to the outer clock."""
    outer = _current.get()
    if outer is not None:
        yield outer
        return
    clock = RunClock(str(device), embedding_dtype)
    token = _current.set(clock)
    try:
        yield clock
    finally:
        _current.reset(token)


F = TypeVar("F", bound=Callable[..., Any])


def timed_run(fn: F) -> F:
    """Run ``fn`` (an API entry point with a ``run: RunOptions`` argument) under a :func:`run_clock`."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        run = bound.arguments.get("run")
        with run_clock(getattr(run, "device", "cpu"), getattr(run, "dtype", "float32")):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Add the block's wall time to stage ``name`` of the run in progress."""
    clock = _current.get()
    if clock is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        clock.add(name, time.perf_counter() - started)


def note(**fields: Any) -> None:
    """Tell the run in progress what the embedding step did: ``clips`` embedded, ``embeddings`` (computed or
    cached), the encoder's ``cost`` and ``compute_dtype``."""
    clock = _current.get()
    if clock is None:
        return
    clock.clips_embedded += int(fields.pop("clips", 0))
    if "embeddings" in fields:
        clock.embeddings = {**clock.embeddings, **fields.pop("embeddings")}
    for name, value in fields.items():
        setattr(clock, name, value)


def note_encoder(encoder: Any, seconds: float | None) -> None:
    """Count the encoder's cost on one clip of ``seconds`` for the run in progress (once per run)."""
    clock = _current.get()
    if clock is not None and clock.cost is None:
        clock.cost = count_cost(encoder, seconds or COST_SECONDS)
        clock.compute_dtype = parameter_dtype(encoder)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def parameter_dtype(module: torch.nn.Module) -> str:
    """The floating-point type of a module's parameters (``float32`` for weight-free front ends)."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return str(parameter.dtype).removeprefix("torch.")
    return "float32"


def _recurrent_flops(input_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """An LSTM/GRU layer's gate products (2 FLOPs per multiply-add at every step), which the counter's own
    table leaves out: every 2-D weight among the arguments times the steps x batch of the input."""
    shapes = [a for a in args if isinstance(a, (tuple, torch.Size)) and len(a) == 2]
    shapes += [s for a in args if isinstance(a, list) for s in a if isinstance(s, (tuple, torch.Size)) and len(s) == 2]
    steps = int(input_shape[0]) * int(input_shape[1]) if len(input_shape) == 3 else int(input_shape[0])
    return sum(2 * steps * int(s[0]) * int(s[1]) for s in shapes)


def _custom_flops() -> dict:
    ops = [getattr(torch.ops.aten, name, None) for name in ("mkldnn_rnn_layer", "_cudnn_rnn")]
    return {op: _recurrent_flops for op in ops if op is not None}


def count_cost(encoder: Any, seconds: float = COST_SECONDS) -> dict[str, Any]:
    """Parameters and GFLOPs per second of audio of ``encoder.embed`` on one clip of ``seconds`` (noise)."""
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in encoder.parameters())
    device = next((p.device for p in encoder.parameters()), torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    wav = (0.1 * torch.randn(1, int(round(seconds * encoder.sample_rate)), generator=generator)).to(device)
    counter = FlopCounterMode(display=False, custom_mapping=_custom_flops())
    with torch.no_grad(), counter:  # not inference_mode: parametrized weights (weight norm) fail under it
        encoder.embed(wav)
    flops = counter.get_total_flops()
    return {"params": int(params), "gflops_per_audio_second": round(flops / 1e9 / seconds, 4),
            "counted_on_sec": float(seconds), "counter": "torch.utils.flop_counter"}
