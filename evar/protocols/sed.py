"""Sound event detection probe: a linear classifier on an encoder's frames, post-processing, decoding.

The protocol follows HEAR 2021's event tasks (hear-eval-kit 8559649,
``heareval/embeddings/task_embeddings.py`` and ``heareval/predictions/task_predictions.py``), with a
linear head instead of HEAR's searched MLP:

1. Frames: ``encoder.embed_frames`` of each whole clip, streamed in batches of equal-length clips.
   A frame is labelled with every event active at its timestamp (``onset <= t <= offset``, HEAR's rule).
2. Probe: standardised frames -> ``nn.Linear`` -> sigmoid, trained with Adam on BCE (or the
   asymmetric focal loss / soft F-measure loss of :mod:`evar.protocols.losses`, since silent frames dominate),
   early-stopped on the validation loss (the best epoch's weights are kept). Tasks without a
   validation split hold out ``valid_fraction`` of the training clips.
3. Post-processing, per class, chosen on the validation clips to maximise that class's event-based
   F-measure (the task's primary metric): a median filter (``MEDIAN_MS``), a threshold
   (``THRESHOLDS``) and a minimum event duration (``MIN_DURATION_MS``). HEAR uses one threshold
   (0.5), a 250 ms median filter and a 125 or 250 ms minimum duration for all classes; that setting
   is tried first and kept on ties.
4. Decoding: runs of frames above the threshold become events from the first to the last active
   frame's timestamp (HEAR's rule).
5. Scores on the test clips: the primary event-based F-measure, HEAR's ``event_onset_200ms_fms`` and
   the segment-based F1 and error rate with 1 s segments (:mod:`evar.metrics.sed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from evar.audio import load_audio
from evar.encoders.base import Encoder
from evar.errors import AudioError, EvarError
from evar.embeddings.inference import optimised_for_inference
from evar.options import SED_LOSSES, ModelChoice, RunOptions, SedSettings
from evar.protocols.base import Result, Rounds, layer_names, record as record_result, score_rounds, weights_field
from evar.protocols.linear import seed_everything
from evar.results import provenance
from evar.results.store import check_writable
from evar.protocols.splits import HoldoutRule, holdout_rows
from evar.protocols.losses import asymmetric_focal_loss, binary_cross_entropy, soft_f1_loss
from evar.metrics.sed import Event, event_based_scores, segment_based_scores
from evar.embeddings.stats import front_end_stats
from evar.tasks import Task, load_task
from evar.tasks.sed import EVENT_METRICS, load_events, primary_metric
from evar.log import log

THRESHOLDS = (0.5, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9)
MEDIAN_MS = (250.0, 0.0, 60.0, 125.0, 500.0)
MIN_DURATION_MS = (125.0, 250.0, 0.0)
#: clips used to measure normalisation statistics (encoders with ``needs_stats``)
STATS_MAX_CLIPS = 200


@dataclass
class ClipFrames:
    """One clip's frame embeddings ``(T, D)`` and their timestamps in seconds ``(T,)``."""

    file: str
    frames: np.ndarray
    times: np.ndarray


@dataclass
class PostProcessing:
    """Per-class decoding settings: probability threshold, median filter and minimum duration (ms)."""

    threshold: float = 0.5
    median_ms: float = 250.0
    min_duration_ms: float = 125.0


def frame_targets(events: Sequence[Event], times: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Multi-hot frame labels ``(T, C)``: class c is active at t when an event of c has onset <= t <= offset."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(times), len(classes)), dtype=np.float32)
    for e in events:
        if e.label in index:
            y[(times >= e.onset) & (times <= e.offset + 1e-7), index[e.label]] = 1.0
    return y


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median over ``width`` frames along axis 0, as ``scipy.ndimage.median_filter(x, size=(width, 1))``
    (mirror padding ``d c b a | a b c d``; for an even width the upper median, frames i - width//2 ..)."""
    if width <= 1 or len(x) == 0:
        return x
    left = width // 2
    padded = np.pad(x, [(left, width - 1 - left)] + [(0, 0)] * (x.ndim - 1), mode="symmetric")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=0)
    return np.partition(windows, width // 2, axis=-1)[..., width // 2]


def _median_width(times: np.ndarray, median_ms: float) -> int:
    """HEAR's filter width: ``round(median_ms / mean hop in ms)``."""
    if median_ms <= 0 or len(times) < 2:
        return 0
    return int(round(median_ms / (1000.0 * float(np.mean(np.diff(times))))))


def _runs(smoothed: np.ndarray, times: np.ndarray, label: str, threshold: float, min_duration_ms: float) -> list[Event]:
    """Runs of frames above ``threshold`` as events from the first to the last active frame's time."""
    active = np.concatenate([[False], smoothed > threshold, [False]])
    edges = np.flatnonzero(np.diff(active.astype(np.int8)))
    events = []
    for start, stop in zip(edges[::2], edges[1::2]):
        onset, offset = float(times[start]), float(times[stop - 1])
        if 1000.0 * (offset - onset) >= min_duration_ms - 1e-6:
            events.append(Event(onset, offset, label))
    return events


def decode_class(probs: np.ndarray, times: np.ndarray, label: str, post: PostProcessing) -> list[Event]:
    """Events of one class from its frame probabilities ``(T,)``: median filter, threshold, runs, minimum duration."""
    smoothed = median_filter(probs[:, None], _median_width(times, post.median_ms))[:, 0]
    return _runs(smoothed, times, label, post.threshold, post.min_duration_ms)


def decode_events(probs: np.ndarray, times: np.ndarray, classes: Sequence[str],
                  post: dict[str, PostProcessing]) -> list[Event]:
    """Events of every class from frame probabilities ``(T, C)``, sorted by onset."""
    events = [e for c, label in enumerate(classes) for e in decode_class(probs[:, c], times, label, post[label])]
    return sorted(events, key=lambda e: (e.onset, e.label))


def _stats(encoder: Encoder, paths: list[Path]) -> tuple[float, float]:
    """EVAR's running statistics of the front end over whole training clips (one clip per batch)."""
    clips = ([torch.from_numpy(load_audio(path, encoder.sample_rate))[None]] for path in paths[:STATS_MAX_CLIPS])
    return front_end_stats(encoder, clips)


def embed_clip_frames(encoder: Encoder, task: Task, rows: np.ndarray, batch_size: int = 16,
                      on_error: str = "fail", progress: bool = True) -> list[ClipFrames | None]:
    """Frame embeddings of the whole clips ``rows`` of ``task`` (None for a skipped unreadable clip).

    Clips are read one at a time; consecutive clips of equal length share a batch (at most
    ``batch_size``), so no more than one batch of audio is held in memory.
    """
    files = task.meta["file"].to_numpy()
    out: list[ClipFrames | None] = []
    batch: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        if batch:
            frames, times = encoder.embed_frames(np.stack([w for _, w in batch]))
            t = times.cpu().numpy().astype(np.float64)
            out.extend(ClipFrames(f, x, t) for (f, _), x in zip(batch, frames.cpu().numpy().astype(np.float32)))
            batch.clear()

    for i in tqdm(rows, desc=f"frames {task.name}", unit="clip", disable=not progress):
        try:
            wav = load_audio(task.root / files[i], encoder.sample_rate)
        except AudioError as exc:
            if on_error == "fail":
                raise
            log.warning(f"skipped {files[i]}: {exc}")
            flush()
            out.append(None)
            continue
        if batch and (len(batch) >= batch_size or len(batch[0][1]) != len(wav)):
            flush()
        batch.append((str(files[i]), wav))
    flush()
    return out


class FrameProbe:
    """A linear multi-label classifier on standardised frames, early-stopped on the validation loss."""

    def __init__(self, loss: str = "bce", lr: float = 1e-3, max_epochs: int = 100, patience: int = 10,
                 batch_size: int = 512, afl_gamma: float = 0.0, afl_zeta: float = 1.0, seed: int = 42,
                 device: str = "cpu") -> None:
        if loss not in SED_LOSSES:
            raise EvarError(f"unknown SED loss {loss!r}; choose from {', '.join(SED_LOSSES)}")
        self.loss, self.lr, self.max_epochs, self.patience = loss, lr, max_epochs, patience
        self.batch_size, self.afl_gamma, self.afl_zeta = batch_size, afl_gamma, afl_zeta
        self.seed, self.device = seed, device
        self.epochs_run = 0

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss == "afl":
            return asymmetric_focal_loss(logits, y, self.afl_gamma, self.afl_zeta)
        if self.loss == "soft_f1":
            return soft_f1_loss(torch.sigmoid(logits), y)
        return binary_cross_entropy(logits, y)

    def fit(self, X: np.ndarray, y: np.ndarray, X_valid: np.ndarray, y_valid: np.ndarray) -> "FrameProbe":
        """Train on frames ``X (N, D)`` with labels ``y (N, C)``; keep the weights of the best validation loss."""
        seed_everything(self.seed)
        self.mean = X.mean(axis=0)
        self.std = X.std(axis=0) + 1e-8
        Xt, yt = self._standardise(X), torch.from_numpy(y).to(self.device)
        Xv, yv = self._standardise(X_valid), torch.from_numpy(y_valid).to(self.device)
        self.model = nn.Linear(X.shape[1], y.shape[1]).to(self.device)
        optimiser = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        generator = torch.Generator().manual_seed(self.seed)
        best, best_state, waited = float("inf"), None, 0
        for epoch in range(self.max_epochs):
            self.model.train()
            for idx in torch.randperm(len(Xt), generator=generator).split(self.batch_size):
                optimiser.zero_grad()
                self._loss(self.model(Xt[idx]), yt[idx]).backward()
                optimiser.step()
            self.model.eval()
            with torch.no_grad():
                valid_loss = float(self._loss(self.model(Xv), yv))
            self.epochs_run = epoch + 1
            if valid_loss < best:
                best, waited = valid_loss, 0
                best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
            else:
                waited += 1
                if waited >= self.patience:
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return self

    def _standardise(self, X: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((X - self.mean) / self.std).astype(np.float32)).to(self.device)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Frame probabilities ``(N, C)``."""
        with torch.no_grad():
            return torch.sigmoid(self.model(self._standardise(X))).cpu().numpy()


def _events_by_file(clips: list[ClipFrames], probs: list[np.ndarray], classes: Sequence[str],
                    post: dict[str, PostProcessing]) -> dict[str, list[Event]]:
    return {c.file: decode_events(p, c.times, classes, post) for c, p in zip(clips, probs)}


def tune_postprocessing(clips: list[ClipFrames], probs: list[np.ndarray], reference: dict[str, list[Event]],
                        classes: Sequence[str], metric: str = "event_onset_200ms_fms") -> dict[str, PostProcessing]:
    """Per class, the (median filter, threshold, minimum duration) with the best validation F-measure of
    that class under ``metric``; HEAR's setting (0.5, 250 ms, 125 ms) comes first and wins ties."""
    t_collar, offset, percentage = EVENT_METRICS[metric]
    chosen = {}
    for c, label in enumerate(classes):
        ref = {clip.file: [e for e in reference.get(clip.file, []) if e.label == label] for clip in clips}
        best_f, best = -1.0, PostProcessing()
        for median_ms in MEDIAN_MS:
            smoothed = [median_filter(p[:, c:c + 1], _median_width(clip.times, median_ms))[:, 0]
                        for clip, p in zip(clips, probs)]
            for threshold in THRESHOLDS:
                for min_ms in MIN_DURATION_MS:
                    est = {clip.file: _runs(s, clip.times, label, threshold, min_ms) for clip, s in zip(clips, smoothed)}
                    f = event_based_scores(ref, est, t_collar, offset, percentage)["f_measure"]
                    if f > best_f:  # NaN (no validation events of this class) never replaces HEAR's default
                        best_f, best = f, PostProcessing(threshold, median_ms, min_ms)
        chosen[label] = best
    return chosen


def _validation_split(train: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if len(train) < 2:
        raise EvarError("an SED task needs at least two training clips when it has no validation split")
    return holdout_rows(train, np.random.default_rng(seed), HoldoutRule(fraction))


def _stack(clips: list[ClipFrames], events: dict[str, list[Event]], classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    X = np.concatenate([c.frames for c in clips])
    y = np.concatenate([frame_targets(events[c.file], c.times, classes) for c in clips])
    return X, y


def _round(d: dict) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items() if k != "class_wise"}


class SedRounds(Rounds):
    """The SED probe's rounds on the clips' frames: fit a :class:`FrameProbe`, tune post-processing on the
    validation clips, score the test clips' detections; per-round details are kept in ``details``."""

    def __init__(self, task: Task, frames: list[ClipFrames | None], settings: SedSettings, device: str) -> None:
        super().__init__(task)
        self.frames, self.settings, self.device = frames, settings, device
        self.events = load_events(task)
        self.metric = primary_metric(task.name)
        self.details: list[dict] = []

    def _clips(self, rows: np.ndarray) -> list[ClipFrames]:
        return [self.frames[i] for i in rows if self.frames[i] is not None]

    def fit_score(self, round_index: int, seed: int) -> float:
        split, s, events = self.splits[round_index], self.settings, self.events
        train, valid = (split.train, split.valid) if split.valid is not None and len(split.valid) else \
            _validation_split(split.train, s.valid_fraction, seed)
        train_clips, valid_clips, test_clips = self._clips(train), self._clips(valid), self._clips(split.test)
        if not train_clips or not valid_clips or not test_clips:
            raise EvarError(f"{self.task.name} {split.name}: empty train, validation or test clips")
        classes = sorted({e.label for c in train_clips for e in events[c.file]})
        if not classes:
            raise EvarError(f"{self.task.name} {split.name}: the training clips hold no events")
        probe = FrameProbe(s.loss, s.lr, s.max_epochs, s.patience, afl_gamma=s.afl_gamma, afl_zeta=s.afl_zeta,
                           seed=seed, device=self.device)
        probe.fit(*_stack(train_clips, events, classes), *_stack(valid_clips, events, classes))
        valid_probs = [probe.predict_proba(c.frames) for c in valid_clips]
        post = tune_postprocessing(valid_clips, valid_probs, events, classes, self.metric)
        test_probs = [probe.predict_proba(c.frames) for c in test_clips]
        detected = _events_by_file(test_clips, test_probs, classes, post)
        reference = {c.file: events[c.file] for c in test_clips}
        primary = event_based_scores(reference, detected, *EVENT_METRICS[self.metric])
        self.details.append({"round": split.name, "seed": seed, "epochs": probe.epochs_run,
                             "event_onset_200ms": _round(event_based_scores(reference, detected)),
                             "segment_1s": _round(segment_based_scores(reference, detected, 1.0)),
                             "postprocessing": {k: vars(v) for k, v in post.items()}})
        return float(primary["f_measure"])


@provenance.timed_run
def probe_sed(task: str, model: ModelChoice, settings: SedSettings = SedSettings(), run: RunOptions = RunOptions(),
              encoder: Encoder | None = None, record: bool = True) -> Result:
    """Frame-level linear probe of ``model`` on event task ``task``; scores its test clips' detections.

    The score is the task's primary event-based F-measure (HEAR's ``evaluation[0]``, by default
    ``event_onset_200ms_fms``); ``run.batch_size`` counts whole clips (default 16); ``settings["sed"]`` holds per
    round and seed the onset F-measure (200 ms), the segment-based F1 and error rate (1 s), and the chosen
    post-processing. Appends a row with protocol ``sed`` to ``results/scores.csv`` when ``record``.
    """
    if encoder is None:
        model.check_name()
    if record:
        check_writable()
    prepared = load_task(task)
    encoder = encoder or model.build(run.device)
    layers = layer_names(getattr(encoder, "indices", None) or model.layers)
    rounds = SedRounds(prepared, [], settings, run.device)
    if encoder.needs_stats:
        encoder.set_stats(*_stats(encoder, [prepared.paths()[i] for i in rounds.splits[0].train]))
    provenance.note_encoder(encoder, prepared.spec.unit_sec)
    with torch.inference_mode(), provenance.stage("embedding"):  # the folded, channels-last copy of the cache
        rounds.frames = embed_clip_frames(optimised_for_inference(encoder), prepared, np.arange(len(prepared)),
                                          run.batch_size or 16, run.on_error, run.progress)
    provenance.note(clips=len(prepared), embeddings={"cached": False})
    names, scores = score_rounds(rounds, settings.seeds, progress=False)
    recorded = {"sed_metric": rounds.metric, "loss": settings.loss, "lr": settings.lr,
                "max_epochs": settings.max_epochs, "patience": settings.patience, "probe_batch_size": 512,
                "valid_fraction": settings.valid_fraction, "device": run.device, "encoder": encoder.config(),
                "afl_gamma": settings.afl_gamma, "afl_zeta": settings.afl_zeta, "sed": rounds.details}
    result = Result("sed", task, model.name, layers, rounds.metric, names, list(settings.seeds), scores, recorded,
                    weights_field(model.name, model.weights), encoder.weights_sha256 or "")
    if record:
        record_result(result)
    return result
