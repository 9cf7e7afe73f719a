"""BYOL-A v2 (Niizumi et al., IEEE/ACM TASLP 2023): the AudioNTT2022 network on a 64-bin log-mel.

Network (nttcslab/byol-a ``v2/byol_a2/models.py``, ``AudioNTT2022Encoder`` with its defaults):
two conv blocks (64 channels, 2x2 max-pool each; checkpoint keys ``features.{0,1,4,5}.*``), then per
time frame ``fc`` = Linear(1024, 2048), ReLU, Dropout, Linear(2048, 2048), ReLU (keys ``fc.{0,3}.*``).
A frame is the concatenation of the 1024-d conv features and the 2048-d fc output (3072-d);
clips are pooled with EVAR's mean+max. Front end and normalisation are BYOL-A v1's in EVAR
(16 kHz, n_fft 1024, hop 160, 64 mels, 60-7800 Hz, ``log(x + eps)``, ``(x - mean) / std`` with
statistics of the task's training audio).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from evar.errors import EvarError
from evar.frontends.logmel import LogMelSpectrogram
from evar.encoders.weights import (
    WeightFile, load_state_dict, load_weights, resolve_weights,
)
from evar.encoders import register_encoder
from evar.encoders.base import Encoder
from evar.encoders.byola import BYOLA_FINETUNE, BYOLA_LICENCE, MEL_CONVENTIONS, _conv_block

# The publisher gives no checksum. The file's git blob SHA-1 in nttcslab/byol-a (v2/, commit 3e65c92)
# is 7e081bb05e8e1e620a13fa21f36a9fa4a973b1c3; its sha256 could not be computed here (file not fetched).
BYOLA2_WEIGHTS = WeightFile(
    "AudioNTT2022-BYOLA-64x96d2048.pth",
    "https://github.com/nttcslab/byol-a/raw/master/v2/AudioNTT2022-BYOLA-64x96d2048.pth",
    None,
    "https://github.com/nttcslab/byol-a/tree/master/v2",
    BYOLA_LICENCE,
)

HOP = 160  # samples between log-mel frames at 16 kHz
POOL = 4  # two 2x max-pools over time


class AudioNTT2022(nn.Module):
    """Two conv blocks, a per-frame MLP, and the concatenation [conv features, MLP output]."""

    def __init__(self, n_mels: int = 64, d: int = 3072, base_d: int = 64, mlp_hidden_d: int = 2048) -> None:
        super().__init__()
        self.features = nn.Sequential(*_conv_block(1, base_d), *_conv_block(base_d, base_d))
        conv_d = base_d * (n_mels // POOL)
        if d <= conv_d:
            raise EvarError(f"BYOL-A v2: output dimension {d} must exceed the conv feature size {conv_d}")
        self.fc = nn.Sequential(nn.Linear(conv_d, mlp_hidden_d), nn.ReLU(), nn.Dropout(p=0.3),
                                nn.Linear(mlp_hidden_d, d - conv_d), nn.ReLU())

    @staticmethod
    def _to_frames(x: torch.Tensor) -> torch.Tensor:
        """(B, C, F, T) -> (B, T, F*C), the network's channel-last flattening per frame."""
        x = x.permute(0, 3, 2, 1)
        return x.reshape(x.shape[0], x.shape[1], -1)

    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the two conv blocks and the two fc layers, each as (B, T, D)."""
        h1 = self.features[0:4](x)
        conv2 = self._to_frames(self.features[4:8](h1))
        fc1 = self.fc[0:2](conv2)
        return [self._to_frames(h1), conv2, fc1, self.fc[2:](fc1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._to_frames(self.features(x))
        return torch.cat([x, self.fc(x)], dim=-1)


class BYOLA2Encoder(Encoder):
    """BYOL-A v2 (3072-d frames, 40 ms hop) with EVAR's front end and mean+max pooling."""

    needs_stats = True
    layers = ("conv1", "conv2", "fc1", "fc2")

    def __init__(self, mel: str = "evar", n_mels: int = 64, d: int = 3072) -> None:
        super().__init__()
        if mel not in MEL_CONVENTIONS:
            raise EvarError(f"unknown mel convention {mel!r}; choose from {', '.join(MEL_CONVENTIONS)}")
        mel_scale, mel_norm = MEL_CONVENTIONS[mel]
        self.sample_rate, self.embed_dim, self.mel = 16000, d, mel
        self.frame_hop_sec = POOL * HOP / 16000
        self.logmel = LogMelSpectrogram(16000, 1024, HOP, n_mels, 60.0, 7800.0, mel_scale=mel_scale, mel_norm=mel_norm)
        self.net = AudioNTT2022(n_mels=n_mels, d=d)
        self.register_buffer("stats", torch.tensor([0.0, 1.0]))
        self.stats_set = False

    def load_checkpoint(self, path: str | Path) -> None:
        """Load the official checkpoint (a plain ``state_dict``; ``module.``/``body.`` prefixes accepted), strictly."""
        state = {k.removeprefix("module.").removeprefix("body."): v for k, v in load_state_dict(path).items()}
        self.weights_sha256 = load_weights(self.net, path, f"BYOL-A v2 ({self.embed_dim}-d)", state)

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Centre of each output frame's 4 log-mel frames (centred STFT: mel frame i is at i * 10 ms)."""
        return (torch.arange(n_frames, dtype=torch.float32) * POOL + (POOL - 1) / 2) * (HOP / 16000)

    def set_stats(self, mean: float, std: float) -> None:
        self.stats = torch.tensor([float(mean), float(std)], device=self.stats.device)
        self.stats_set = True

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        return self.logmel(wav)

    def _normalised(self, wav: torch.Tensor) -> torch.Tensor:
        return ((self.logmel(wav) - self.stats[0]) / self.stats[1]).unsqueeze(1)

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self.net(self._normalised(wav))
        return frames, self.frame_timestamps(frames.shape[1])

    def forward_layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        return self.net.forward_layers(self._normalised(wav))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "mel": self.mel, "weights_sha256": self.weights_sha256}


@register_encoder("byola2", sample_rate=16000, embed_dim=3072, weights=BYOLA2_WEIGHTS, finetune=BYOLA_FINETUNE,
                  description="BYOL-A v2 (TASLP 2023) 3072-d")
def byola2(weights: str | None = None, mel: str = "evar", allow_download: bool = True) -> BYOLA2Encoder:
    """BYOL-A v2, official ``AudioNTT2022-BYOLA-64x96d2048.pth`` (3072-d output)."""
    encoder = BYOLA2Encoder(mel=mel)
    encoder.load_checkpoint(resolve_weights(BYOLA2_WEIGHTS, weights, allow_download=allow_download))
    return encoder.eval()  # BatchNorm in eval mode before any forward pass (e.g. LayerFusion's probe)
