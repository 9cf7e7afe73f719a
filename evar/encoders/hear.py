"""``hear:<module>``: any HEAR 2021 module (https://hearbenchmark.com/hear-api.html) as an evar encoder.

``create_encoder("hear:hearbaseline", weights="naive_baseline.pt")`` imports ``hearbaseline``, calls
``load_model(weights)`` (``load_model()`` without weights, as HEAR tools do) and wraps the model:
``embed`` is the module's ``get_scene_embeddings``, ``embed_frames`` its ``get_timestamp_embeddings``
with timestamps converted from milliseconds to seconds. Check a module first with
``evar.hear.validator.validate_module``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evar.errors import EvarError
from evar.io import file_sha256
from evar.encoders import register_prefix
from evar.encoders.base import Encoder

HEAR_FUNCTIONS = ("load_model", "get_scene_embeddings", "get_timestamp_embeddings")


def _distribution_version(module_name: str) -> str | None:
    """Version of the installed distribution providing ``module_name`` (None for a loose module)."""
    for dist in packages_distributions().get(module_name.split(".")[0], []):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


class HearModuleEncoder(Encoder):
    """A HEAR module's model behind evar's Encoder interface."""

    def __init__(self, module_name: str, weights: str | None = None, **options: Any) -> None:
        super().__init__()
        label = f"hear:{module_name}"
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise EvarError(f"{label}: cannot import module {module_name!r} ({exc}); install its package "
                            "or put it on PYTHONPATH") from exc
        missing = [fn for fn in HEAR_FUNCTIONS if not callable(getattr(module, fn, None))]
        if missing:
            raise EvarError(f"{label}: not a HEAR module, it lacks {', '.join(missing)}")
        if weights is not None and not Path(weights).expanduser().exists():
            raise EvarError(f"{label}: weights file not found: {weights}")
        model = module.load_model(str(weights), **options) if weights else module.load_model(**options)
        if not isinstance(model, nn.Module):
            raise EvarError(f"{label}: load_model returned {type(model).__name__}; evar runs PyTorch HEAR modules "
                            "only (a torch.nn.Module)")
        for attr in ("sample_rate", "scene_embedding_size"):
            if not isinstance(getattr(model, attr, None), int):
                raise EvarError(f"{label}: the model's {attr} must be an int, got {getattr(model, attr, None)!r}")
        self.module_name, self.module, self.model, self.options = module_name, module, model, options
        self.sample_rate, self.embed_dim = model.sample_rate, model.scene_embedding_size
        self.timestamp_embedding_size = getattr(model, "timestamp_embedding_size", None)
        path = Path(weights).expanduser() if weights else None
        self.weights_sha256 = file_sha256(path) if path is not None and path.is_file() else None
        self.module_version = _distribution_version(module_name)
        source = getattr(module, "__file__", None)
        # a module outside any installed distribution is identified by its source file's content
        self.module_sha256 = file_sha256(source) if self.module_version is None and source else None
        self._hop: float | None = None

    @property
    def frame_hop_sec(self) -> float:
        """Mean interval between the module's timestamps, measured once on one second of silence."""
        if self._hop is None:
            _, seconds = self.embed_frames(torch.zeros(1, self.sample_rate))
            self._hop = float(seconds.diff().mean()) if len(seconds) > 1 else float("nan")
        return self._hop

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """The module's ``get_scene_embeddings``."""
        emb = self.module.get_scene_embeddings(wav, self.model)
        return torch.as_tensor(emb).to(wav.device, torch.float32)

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The module's ``get_timestamp_embeddings``; timestamps in seconds (one row: the batch shares them)."""
        emb, ms = self.module.get_timestamp_embeddings(wav, self.model)
        emb = torch.as_tensor(emb).to(wav.device, torch.float32)
        ms = torch.as_tensor(ms).to("cpu", torch.float32)
        if ms.ndim != 2 or ms.shape != emb.shape[:2]:
            raise EvarError(f"hear:{self.module_name}: timestamps of shape {tuple(ms.shape)} do not match "
                            f"embeddings {tuple(emb.shape)}; run `evar hear validate {self.module_name}`")
        if not torch.allclose(ms, ms[:1].expand_as(ms)):
            raise EvarError(f"hear:{self.module_name}: clips of one batch got different timestamps")
        return emb, ms[0] / 1000.0

    def config(self) -> dict[str, Any]:
        return {**super().config(), "hear_module": self.module_name, "module_version": self.module_version,
                "module_sha256": self.module_sha256, "options": self.options, "weights_sha256": self.weights_sha256}


def build_hear_encoder(module_name: str, weights: str | None = None, **options: Any) -> HearModuleEncoder:
    """Any HEAR 2021 module as an encoder; --weights and options go to its load_model."""
    return HearModuleEncoder(module_name, weights=weights, **options)


register_prefix("hear", build_hear_encoder)
