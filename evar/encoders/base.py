"""The one interface every encoder implements."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn


def mean_max_pool(frames: torch.Tensor) -> torch.Tensor:
    """EVAR's ``mean_max`` temporal pooling: mean over time plus max over time, ``(B, T, D) -> (B, D)``."""
    return frames.mean(dim=1) + frames.max(dim=1).values


class Encoder(nn.Module):
    """A pre-trained audio encoder.

    Subclasses set ``sample_rate`` and ``embed_dim`` and implement :meth:`forward_frames`; encoders
    with named intermediate layers also set ``layers`` and implement :meth:`forward_layers`.
    ``embed`` and ``embed_frames`` run without gradients on the module's device; ``forward_frames``
    and ``forward`` keep gradients for fine-tuning.
    """

    sample_rate: int = 16000
    embed_dim: int = 0
    layers: tuple[str, ...] = ()
    #: True when the front end normalises with statistics measured on the task's training audio
    needs_stats: bool = False
    #: sha256 of the loaded checkpoint (None for encoders without weights)
    weights_sha256: str | None = None
    #: seconds between consecutive frames of ``forward_frames``
    frame_hop_sec: float = 0.01
    #: axes of frequency and time in the output of ``features`` (fine-tuning masks and crops them)
    feature_axes: tuple[int, int] = (-2, -1)
    #: 32-bit words EVAR's construction of this model draws from torch's generator (its layers' default
    #: initialisation), when known: evar then replays EVAR's random stream exactly (:mod:`evar.protocols.evar_stream`)
    evar_init_words: int | None = None

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame embeddings ``(B, T', D)`` and the centre time of each frame in seconds ``(T',)``."""
        raise NotImplementedError

    def forward_layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        """One ``(B, T_l, D_l)`` tensor per entry of ``layers``."""
        raise NotImplementedError(f"{type(self).__name__} exposes no intermediate layers")

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Centre time in seconds of each of ``n_frames`` frames."""
        return (torch.arange(n_frames, dtype=torch.float32) + 0.5) * self.frame_hop_sec

    def layer_timestamps(self, n_frames: int) -> torch.Tensor:
        """Centre times of the frames that :meth:`forward_layers` returns (default: as ``forward_frames``)."""
        return self.frame_timestamps(n_frames)

    def layer_pool(self, frames: torch.Tensor) -> torch.Tensor:
        """Temporal pooling of one layer in a fusion: EVAR's mean+max, as the EUSIPCO 2022 code pools."""
        return mean_max_pool(frames)

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        """Temporal pooling from frames to a clip embedding (EVAR's mean+max by default)."""
        return mean_max_pool(frames)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Clip embeddings ``(B, D)`` with gradients."""
        frames, _ = self.forward_frames(wav)
        return self.pool(frames)

    def config(self) -> dict[str, Any]:
        """Everything about preprocessing, weights and output that changes the embeddings (cache key).

        Normalisation statistics are not part of it: they derive from the task's data and are
        recorded beside the cached embeddings.
        """
        return {"class": type(self).__name__, "sample_rate": self.sample_rate, "embed_dim": self.embed_dim}

    def set_stats(self, mean: float, std: float) -> None:
        """Set normalisation statistics (only for encoders with ``needs_stats``)."""
        raise NotImplementedError(f"{type(self).__name__} takes no normalisation statistics")

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """The front end's output before normalisation (used to measure statistics)."""
        raise NotImplementedError(f"{type(self).__name__} has no separate front end")

    def forward_from_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames and timestamps from the output of :meth:`features`, normalisation included:
        ``forward_from_features(features(wav))`` equals ``forward_frames(wav)``. Fine-tuning
        augments the features (axes ``feature_axes``) between the two calls."""
        raise NotImplementedError(f"{type(self).__name__} has no separate front end")

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    def _as_batch(self, wav: torch.Tensor | np.ndarray | Sequence[float]) -> torch.Tensor:
        wav = torch.as_tensor(np.asarray(wav, dtype=np.float32) if not torch.is_tensor(wav) else wav)
        if wav.ndim == 1:
            wav = wav.unsqueeze(0)
        if wav.ndim != 2:
            raise ValueError(f"expected audio of shape (batch, samples), got {tuple(wav.shape)}")
        return wav.to(self.device, torch.float32)

    @torch.no_grad()
    def embed(self, wav: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Clip embeddings ``(B, embed_dim)`` of waveforms ``(B, samples)`` at ``sample_rate``."""
        self.eval()
        return self.forward(self._as_batch(wav))

    @torch.no_grad()
    def embed_frames(self, wav: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame embeddings ``(B, T', D)`` and their timestamps in seconds ``(T',)``."""
        self.eval()
        return self.forward_frames(self._as_batch(wav))


def default_init_words(module: nn.Module) -> int:
    """Words drawn by the default initialisation of ``module``'s Conv and Linear layers (one per parameter)."""
    kinds = (nn.Conv1d, nn.Conv2d, nn.Linear)
    return sum(p.numel() for m in module.modules() if isinstance(m, kinds) for p in m.parameters(recurse=False))


class LayerFusion(Encoder):
    """EUSIPCO 2022 layer fusion: concatenate the chosen layers' frames, pooled over time.

    Pooling follows the original code (nttcslab/composing-general-audio-repr, ``mean_max``) through
    the encoder's :meth:`Encoder.layer_pool`; ``pool="mean"`` gives the plain time average instead.
    """

    def __init__(self, encoder: Encoder, layers: Sequence[int | str], pool: str = "mean_max") -> None:
        super().__init__()
        if pool not in ("mean_max", "mean"):
            raise ValueError(f"fusion pooling must be mean_max or mean, got {pool!r}")
        self.pool_mode = pool
        if not encoder.layers:
            raise ValueError(f"{type(encoder).__name__} exposes no layers to fuse")
        self.encoder = encoder
        self.indices = [self._index(encoder, layer) for layer in layers]
        self.sample_rate = encoder.sample_rate
        self.needs_stats = encoder.needs_stats
        self.weights_sha256 = encoder.weights_sha256
        self.evar_init_words = encoder.evar_init_words  # the same network is built: EVAR's stream is the same
        self.frame_hop_sec = float(encoder.layer_timestamps(2).diff()[0])
        self.layers = tuple(encoder.layers[i] for i in self.indices)
        encoder.eval()  # the sizing pass below must not touch BatchNorm statistics
        with torch.no_grad():  # the fused dimension, from one second of silence
            probe = torch.zeros(1, self.sample_rate, device=encoder.device)
            self.layer_dims = [t.shape[-1] for t in self._select(probe)]
        self.embed_dim = sum(self.layer_dims)

    @staticmethod
    def _index(encoder: Encoder, layer: int | str) -> int:
        if isinstance(layer, str) and not layer.lstrip("-").isdigit():
            if layer not in encoder.layers:
                raise ValueError(f"unknown layer {layer!r}; choose from {', '.join(encoder.layers)}")
            return encoder.layers.index(layer)
        index = int(layer)
        if not -len(encoder.layers) <= index < len(encoder.layers):
            raise ValueError(f"layer {index} out of range: {type(encoder).__name__} has {len(encoder.layers)} layers")
        return index % len(encoder.layers)

    def _select(self, wav: torch.Tensor) -> list[torch.Tensor]:
        outputs = self.encoder.forward_layers(wav)
        return [outputs[i] for i in self.indices]

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        pool = self.encoder.layer_pool if self.pool_mode == "mean_max" else (lambda t: t.mean(dim=1))
        return torch.cat([pool(t) for t in self._select(wav)], dim=-1)

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = self._select(wav)
        lengths = {t.shape[1] for t in chosen}
        if len(lengths) != 1:
            raise ValueError(f"layers {self.layers} have different frame counts {sorted(lengths)}; fuse clip embeddings instead")
        frames = torch.cat(chosen, dim=-1)
        return frames, self.encoder.layer_timestamps(frames.shape[1])

    def set_stats(self, mean: float, std: float) -> None:
        self.encoder.set_stats(mean, std)

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        return self.encoder.features(wav)

    def config(self) -> dict[str, Any]:
        return {**self.encoder.config(), "fusion_layers": list(self.layers), "fusion_pool": self.pool_mode}
