"""The skeleton every protocol runs through, and the one results row.

A protocol run is: resolve the encoder and its label → its data (cached embeddings, clip frames, or the training
loop's clips) → rounds (the task's folds or fixed split) × seeds → fit and score each → one :class:`Result` →
the results store (:func:`record`). A protocol supplies the middle step as a :class:`Rounds` object;
:func:`score_rounds` runs it, for ``evar probe`` and for each round of a sweep alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from evar.errors import EvarError
from evar.log import log
from evar.results.provenance import stage


class Rounds:
    """A protocol's fit-and-score step on prepared data; one instance per run.

    ``chained`` protocols carry state from round to round within a seed (EVAR's random stream): asking for one
    round trains the rounds before it too.
    """

    chained: bool = False
    #: what the progress bar calls a run of these rounds
    verb: str = "probe"
    #: the run clock's stage their time counts under (:mod:`evar.results.provenance`)
    stage: str = "probe"

    def __init__(self, task) -> None:
        self.task = task
        self.splits = list(task.splits())

    def fit_score(self, round_index: int, seed: int) -> float:  # pragma: no cover - the protocols define it
        raise NotImplementedError


class EmbeddingRounds(Rounds):
    """Rounds of a probe on clip embeddings ``X`` aligned with ``task.meta``: rows without embeddings, and
    single-label rows whose class is absent from training, are left out of every round."""

    def __init__(self, X: np.ndarray, task) -> None:
        super().__init__(task)
        self.X, self.y = X, task.labels()
        usable = np.isfinite(np.asarray(X)).all(axis=1)
        if not task.spec.multilabel:
            unknown = self.y < 0
            if unknown.any():
                log.warning("%d row(s) have a label absent from training; they are excluded", int(unknown.sum()))
            usable &= ~unknown
        if not usable.all():
            log.warning("%d row(s) without embeddings are excluded", int((~usable).sum()))
        self.usable = usable
        #: single-label predictions per (round, seed): (test rows, predicted classes), for the confusion matrix
        self.predictions: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def keep_predictions(self, round_index: int, seed: int, test: np.ndarray, predicted: np.ndarray) -> None:
        if not self.task.spec.multilabel:
            self.predictions[(round_index, seed)] = (np.asarray(test), np.asarray(predicted))

    def confusion(self) -> np.ndarray | None:
        """Counts ``(C, C)`` (rows: true class) over every round and seed kept; None without predictions."""
        from evar.metrics.classification import confusion_matrix

        if not self.predictions:
            return None
        n = len(self.task.classes)
        return sum(confusion_matrix(self.y[rows], predicted, n) for rows, predicted in self.predictions.values())

    def class_results(self) -> dict[str, Any]:
        """Class-wise accuracy and the confusion matrix (see :func:`class_summary`), or nothing (multi-label)."""
        confusion = self.confusion()
        return {} if confusion is None else class_summary(self.task.classes, confusion)

    def rows(self, round_index: int, train_order: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """The usable training (in ``train_order`` when given), validation (None if the round has none) and
        test rows of a round."""
        split = self.splits[round_index]
        train = split.train[train_order] if train_order is not None else split.train
        train, test = train[self.usable[train]], split.test[self.usable[split.test]]
        valid = split.valid[self.usable[split.valid]] if split.valid is not None else None
        if len(train) == 0 or len(test) == 0:
            raise EvarError(f"{self.task.name} {split.name}: empty train or test set")
        return train, valid, test


def class_summary(classes: Sequence[str], confusion: np.ndarray) -> dict[str, Any]:
    """What a results row records of a single-label run's predictions: each class's accuracy and the counts."""
    from evar.metrics.classification import class_accuracies

    accuracy = class_accuracies(np.asarray(confusion))
    return {"class_accuracy": {c: (None if np.isnan(a) else round(float(a), 6)) for c, a in zip(classes, accuracy)},
            "confusion": np.asarray(confusion).tolist()}


def score_rounds(rounds: Rounds, seeds: Sequence[int], progress: bool = True, only_round: int | None = None
                 ) -> tuple[list[str], list[list[float]]]:
    """Run ``rounds`` for every seed (or the one round ``only_round``): the round names and ``scores[round][seed]``.

    Seeds are the outer loop, so a chained protocol's seed passes through its rounds in order.
    """
    splits = rounds.splits
    chosen = range(len(splits)) if only_round is None else [only_round]
    first = 0 if only_round is None or rounds.chained else only_round
    needed = range(first, chosen[-1] + 1)
    scores = {r: [0.0] * len(seeds) for r in chosen}
    bar = tqdm(total=len(needed) * len(seeds), desc=f"{rounds.verb} {rounds.task.name}",
               unit="fit", disable=not progress)
    with stage(rounds.stage):
        for s, seed in enumerate(seeds):
            for r in needed:
                score = rounds.fit_score(r, seed)  # scored even when not reported: a chained stream draws here too
                if r in scores:
                    scores[r][s] = score
                bar.update(1)
    bar.close()
    return [splits[r].name for r in chosen], [scores[r] for r in chosen]


@dataclass
class Result:
    """One run of a protocol: ``scores[round][seed]``, its settings, and what it evaluated — the results row."""

    protocol: str
    task: str
    model: str  # the registered name
    layers: list[str]
    metric: str
    rounds: list[str]
    seeds: list[int]
    scores: list[list[float]]
    settings: dict[str, Any] = field(default_factory=dict)
    weights: str = ""  # the checkpoint given, "official", or "" for weight-free encoders
    weights_sha256: str = ""
    run_id: str | None = None

    @property
    def label(self) -> str:
        """``model`` or ``model+layers`` (a layer fusion), as tables name the run."""
        return f"{self.model}+{','.join(self.layers)}" if self.layers else self.model

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        """Spread over rounds (of the seed means) for CV tasks, over seeds otherwise."""
        per_round = np.mean(self.scores, axis=1)
        values = per_round if len(per_round) > 1 else np.asarray(self.scores[0])
        return float(np.std(values))

    def row(self) -> dict[str, Any]:
        """The ``scores.csv`` row (the store adds run id, date and version)."""
        row = {"protocol": self.protocol, "model": self.model, "layers": ",".join(self.layers), "task": self.task,
               "metric": self.metric, "score": round(self.mean, 6), "std": round(self.std, 6),
               "n_folds": len(self.rounds), "fold_scores": self.scores, "seeds": self.seeds,
               "weights": self.weights, "weights_sha256": self.weights_sha256 or "", "settings": self.settings}
        return {"run_id": self.run_id, **row} if self.run_id else row

    def summary(self) -> str:
        return f"{self.label} on {self.task}: {self.metric} {100 * self.mean:.2f} ± {100 * self.std:.2f}"


def weights_field(model: str, weights: str | None) -> str:
    """What a row says of the checkpoint: the file given, ``official`` for a registered one, or ``""``."""
    from evar.encoders import get_spec_weights

    return str(weights) if weights else ("official" if get_spec_weights(model) else "")


def layer_names(layers: Sequence[int | str] | None) -> list[str]:
    return [str(layer) for layer in layers or []]


def record(result: Result, skipped: dict[str, str] | None = None) -> dict[str, Any]:
    """Append ``result``'s row to the store; files left out (``on_error="skip"``) go to
    ``results/skipped/<run_id>.log``. An unwritable store fails with the score in the message, so it is not lost."""
    from evar.io import atomic_write_text
    from evar.paths import results_dir
    from evar.results.store import append_result

    try:
        row = append_result(result.row())
    except EvarError as exc:
        raise EvarError(f"{exc} — the score of this run: {result.summary()} "
                        "(embeddings are cached; rerun to record it)") from exc
    if skipped:
        path = results_dir() / "skipped" / f"{row['run_id']}.log"
        atomic_write_text(path, "".join(f"{file}\t{reason}\n" for file, reason in sorted(skipped.items())))
        log.warning("%d file(s) left out of %s; listed in %s", len(skipped), result.task, path)
    return row
