"""What to evaluate and how: the model choice, run options and each protocol's settings, every default once.

The CLI builds these objects from its arguments; the Python API takes them::

    from evar.options import LinearSettings, ModelChoice, RunOptions
    evar.probe("esc50", ModelChoice("byola", weights="byola.pth"), LinearSettings(seeds=(42, 43, 44)),
               RunOptions(device="cuda"))

Fine-tuning's settings, with per-encoder EVAR defaults, are :class:`evar.protocols.finetune.FineTuneSettings`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from evar.errors import EvarError

ON_ERROR = ("fail", "skip")
DTYPES = ("float32", "float16")
AUTOCASTS = ("bfloat16", "float16")
LINEAR_MODES = ("evar", "clean")
SED_LOSSES = ("bce", "afl", "soft_f1")
KNN_METRICS = ("cosine", "euclidean")
FEWSHOT_CLASSIFIERS = ("logistic", "centroid")


def naming_seed(seeds) -> tuple[int, ...]:
    """The one seed of a deterministic protocol (it only names the run): the first given, else 42."""
    return tuple(int(s) for s in seeds)[:1] or (42,)


@dataclass(frozen=True)
class ModelChoice:
    """An encoder to evaluate: registered ``name`` (or ``prefix:arg``), checkpoint, layers to fuse, factory options.

    ``weights`` None takes the official file (downloaded on first use); ``layers`` fuses those intermediate
    layers (EUSIPCO 2022); ``options`` are the factory's keyword arguments (e.g. ``{"mel": "byola"}``).
    """

    name: str
    weights: str | None = None
    layers: tuple[int | str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, model: "str | ModelChoice") -> "ModelChoice":
        return model if isinstance(model, ModelChoice) else cls(model)

    def build(self, device: str = "cpu"):
        """The encoder, on ``device``, in eval mode."""
        from evar.encoders import create_encoder

        return create_encoder(self.name, weights=self.weights, layers=list(self.layers) or None, device=device,
                              **self.options)

    def check_name(self) -> None:
        """An unknown registered name fails now, before any work."""
        if ":" not in self.name:
            from evar.encoders import get_encoder_spec

            get_encoder_spec(self.name)


@dataclass(frozen=True)
class RunOptions:
    """How a run executes, not what it computes (never part of a job's identity).

    ``batch_size`` None holds about 32 s of audio per encoder batch; ``on_error`` says what a bad audio file
    does (stop, or skip it and report); ``dtype`` is the storage type of cached embeddings; ``autocast``
    (``bfloat16`` or ``float16``) runs the encoders under ``torch.autocast`` on the device — a different computation,
    so its embeddings are cached apart from float32 ones.
    """

    device: str = "cpu"
    batch_size: int | None = None
    num_workers: int = 0
    on_error: str = "fail"
    progress: bool = True
    dtype: str = "float32"
    autocast: str | None = None

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise EvarError(f"on_error must be one of {ON_ERROR}, got {self.on_error!r}")
        if self.dtype not in DTYPES:
            raise EvarError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.autocast not in (None, *AUTOCASTS):
            raise EvarError(f"autocast must be one of {AUTOCASTS} (or unset), got {self.autocast!r}")


@dataclass(frozen=True)
class ProbeSettings:
    """A trained probe on frozen embeddings: Adam at ``lr``, at most ``max_epochs``, early stopping after
    ``patience`` epochs without a better validation score; one run per seed (EVAR's papers: 42, 43, 44)."""

    lr: float = 3e-4
    max_epochs: int = 200
    patience: int = 20
    seeds: tuple[int, ...] = (42,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.seeds:
            raise EvarError("at least one seed is needed")

    def probe_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "seeds"}


@dataclass(frozen=True)
class LinearSettings(ProbeSettings):
    """EVAR's linear evaluation. ``mode="evar"`` replays EVAR's classifier and random stream seed for seed;
    ``"clean"`` seeds every fold and seed on its own."""

    mode: str = "evar"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in LINEAR_MODES:
            raise EvarError(f"linear mode must be one of {LINEAR_MODES}, got {self.mode!r}")


@dataclass(frozen=True)
class MlpSettings(LinearSettings):
    """EVAR's classifier with hidden layers (``lineareval.py --hidden``): Linear → ReLU → Dropout(``dropout``) per
    hidden layer, then the output Linear, trained as the linear probe. ``grid`` instead picks, per round and seed,
    the best on validation of one or two hidden layers of ``hidden[0]`` units × lr 1e-3, 3e-4, 1e-4 (HEAR's
    grid-searched MLP, smaller); a grid seeds each fit on its own (mode ``clean``)."""

    hidden: tuple[int, ...] = (512,)
    dropout: float = 0.5
    grid: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not self.hidden or min(self.hidden) < 1:
            raise EvarError(f"hidden sizes must be positive integers, got {self.hidden}")
        if not 0 <= self.dropout < 1:
            raise EvarError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.grid and self.mode == "evar":
            object.__setattr__(self, "mode", "clean")

    def probe_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in super().probe_kwargs().items() if k != "grid"}


@dataclass(frozen=True)
class KnnSettings:
    """The parameter-free k-nearest-neighbour probe (X-ARES): the ``k`` nearest training clips of each test clip
    vote, each with weight ``exp(similarity / temperature)`` for ``cosine`` (DINO's weighted vote), one vote each
    for ``euclidean``; embeddings standardised with the training rows' statistics first, as for the linear probe.
    Deterministic: ``seeds`` only name the run."""

    k: int = 10
    metric: str = "cosine"
    temperature: float = 0.07
    seeds: tuple[int, ...] = (42,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", naming_seed(self.seeds))
        if self.k < 1:
            raise EvarError(f"k must be at least 1, got {self.k}")
        if self.metric not in KNN_METRICS:
            raise EvarError(f"kNN metric must be one of {KNN_METRICS}, got {self.metric!r}")
        if self.temperature <= 0:
            raise EvarError(f"temperature must be positive, got {self.temperature}")


@dataclass(frozen=True)
class FewShotSettings:
    """Few-shot probes (MTEB's audio classification): ``shots`` training clips per class drawn ``draws`` times
    from each round's training split, a ``logistic`` regression (multinomial, L2 with inverse strength ``c``,
    scikit-learn's objective) or a ``centroid`` classifier (cosine to the class means of
    L2-normalised embeddings) fitted on them, scored on the whole test split; a round's score is the mean over
    draws. Each seed draws its own sets. The logistic regression stops by scikit-learn's rule (largest gradient of
    its mean objective at most ``tol``), ten times stricter than scikit-learn's default."""

    shots: int = 8
    draws: int = 10
    classifier: str = "logistic"
    c: float = 1.0
    tol: float = 1e-5
    seeds: tuple[int, ...] = (42,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.seeds:
            raise EvarError("at least one seed is needed")
        if self.shots < 1 or self.draws < 1:
            raise EvarError(f"shots and draws must be at least 1, got {self.shots} and {self.draws}")
        if self.classifier not in FEWSHOT_CLASSIFIERS:
            raise EvarError(f"few-shot classifier must be one of {FEWSHOT_CLASSIFIERS}, got {self.classifier!r}")
        if self.c <= 0 or self.tol <= 0:
            raise EvarError(f"c and tol must be positive, got {self.c} and {self.tol}")


@dataclass(frozen=True)
class ZeroShotSettings:
    """Zero-shot classification (:mod:`evar.protocols.zeroshot`): each class's caption is ``template`` filled with
    EVAR's class description; deterministic (``seeds`` only name the run)."""

    template: str = "{} can be heard"
    seeds: tuple[int, ...] = (42,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", naming_seed(self.seeds))
        if self.template.count("{}") != 1:
            raise EvarError(f"the caption template needs one {{}} for the class, got {self.template!r}")


@dataclass(frozen=True)
class RetrievalSettings:
    """Audio↔text retrieval on a caption task (:mod:`evar.protocols.retrieval`, EVAR's ``retr_a2t_t2a.py``): the
    test clips' cached audio embeddings against their captions' text embeddings (``text_batch`` captions at a time);
    nothing is trained; deterministic (``seeds`` only name the run)."""

    text_batch: int = 64
    seeds: tuple[int, ...] = (42,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", naming_seed(self.seeds))
        if self.text_batch < 1:
            raise EvarError(f"text_batch must be at least 1, got {self.text_batch}")


@dataclass(frozen=True)
class SedSettings(ProbeSettings):
    """The frame-level SED probe (:mod:`evar.protocols.sed`): ``loss`` bce, afl (asymmetric focal loss with
    ``afl_gamma``/``afl_zeta``) or soft_f1; ``valid_fraction`` of the training clips validate when the task
    has no validation split."""

    loss: str = "bce"
    afl_gamma: float = 0.0
    afl_zeta: float = 1.0
    valid_fraction: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in SED_LOSSES:
            raise EvarError(f"SED loss must be one of {SED_LOSSES}, got {self.loss!r}")
