"""``melspec``: a log-mel baseline with no weights (the floor every learned encoder should beat)."""

from __future__ import annotations

from typing import Any

import torch

from evar.errors import EvarError
from evar.frontends.logmel import LogMelSpectrogram
from evar.encoders import register_encoder
from evar.encoders.base import Encoder


class MelSpecEncoder(Encoder):
    """Log-mel frames (64 bins, 10 ms hop); the clip embedding is the per-bin mean and std over time."""

    def __init__(self, sample_rate: int = 16000, n_mels: int = 64, n_fft: int = 400, hop_length: int = 160) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.embed_dim = 2 * n_mels
        self.frame_hop_sec = hop_length / sample_rate
        self.logmel = LogMelSpectrogram(sample_rate, n_fft, hop_length, n_mels, f_min=0.0, f_max=sample_rate / 2)
        self._cfg = {"n_mels": n_mels, "n_fft": n_fft, "hop_length": hop_length}

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Centred STFT: frame i is centred on sample i * hop."""
        return torch.arange(n_frames, dtype=torch.float32) * self.frame_hop_sec

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self.logmel(wav).transpose(1, 2)  # (B, T, n_mels)
        return frames, self.frame_timestamps(frames.shape[1])

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.cat([frames.mean(dim=1), frames.std(dim=1, unbiased=False)], dim=-1)

    def config(self) -> dict[str, Any]:
        return {**super().config(), **self._cfg}


@register_encoder("melspec", sample_rate=16000, embed_dim=128, description="log-mel mean+std baseline, no weights")
def melspec(weights: str | None = None, **kwargs) -> MelSpecEncoder:
    if weights is not None:
        raise EvarError("melspec has no weights; drop --weights")
    return MelSpecEncoder(**kwargs)
