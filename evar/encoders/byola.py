"""BYOL-A v1 (Niizumi et al., IJCNN 2021): the AudioNTT2020 network on a 64-bin log-mel.

Checkpoint: the official ``AudioNTT2020-BYOLA-64x96d{512,1024,2048}.pth`` state_dicts
(keys ``features.{0,1,4,5,8,9}.*``, ``fc.{0,3}.*``) from nttcslab/byol-a.
Front end: 16 kHz, n_fft 1024, hop 160, 64 mels, 60-7800 Hz, ``log(x + eps)``, then
``(x - mean) / std`` with statistics measured on the task's training audio (EVAR).
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
from evar.encoders.base import Encoder, default_init_words

BYOLA_SOURCE = "https://github.com/nttcslab/byol-a/tree/master/pretrained_weights"
BYOLA_URL = "https://github.com/nttcslab/byol-a/raw/master/pretrained_weights/{}"
BYOLA_SHA256 = {
    512: "6cc64226318494f06ef41d7e5810be7d37abfd6490da45abdab48f188c5332e2",
    1024: None,
    2048: None,
}
#: "for evaluation only" is the NTT licence's gist; read it in the repository before any other use
BYOLA_LICENCE = "NTT licence (research and evaluation only; see the byol-a repository)"
BYOLA_WEIGHTS = {dim: WeightFile(f"AudioNTT2020-BYOLA-64x96d{dim}.pth",
                                 BYOLA_URL.format(f"AudioNTT2020-BYOLA-64x96d{dim}.pth"), sha, BYOLA_SOURCE,
                                 BYOLA_LICENCE) for dim, sha in BYOLA_SHA256.items()}

#: EVAR's config/byola.yaml fine-tuning settings beyond the defaults (lr 0.001, batch 256, 200 epochs, 5 warm-up,
#: mixup 0.5, masks 30/100): random resize crop on
BYOLA_FINETUNE = {"rrc": True}

#: Mel conventions: EVAR computes BYOL-A's log-mel with nnAudio (Slaney scale and area normalisation);
#: the nttcslab/byol-a repository uses torchaudio's defaults (HTK scale, no normalisation).
MEL_CONVENTIONS = {"evar": ("slaney", "slaney"), "byola": ("htk", None)}


def _conv_block(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(), nn.MaxPool2d(2, stride=2)]


class AudioNTT2020(nn.Module):
    """Three conv blocks (64 ch, 2x2 max-pool each), then two Linear+ReLU layers per time frame."""

    def __init__(self, n_mels: int = 64, d: int = 512) -> None:
        super().__init__()
        self.features = nn.Sequential(*_conv_block(1, 64), *_conv_block(64, 64), *_conv_block(64, 64))
        self.fc = nn.Sequential(nn.Linear(64 * (n_mels // 8), d), nn.ReLU(), nn.Dropout(p=0.3), nn.Linear(d, d), nn.ReLU())

    @staticmethod
    def _to_frames(x: torch.Tensor) -> torch.Tensor:
        """(B, C, F, T) -> (B, T, F*C), the network's channel-last flattening per frame."""
        x = x.permute(0, 3, 2, 1)
        return x.reshape(x.shape[0], x.shape[1], -1)

    def forward_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the three conv blocks and the two fc layers, each as (B, T, D)."""
        outputs = []
        for start in (0, 4, 8):
            x = self.features[start:start + 4](x)
            outputs.append(self._to_frames(x))
        h = self.fc[0:2](outputs[-1])
        outputs.append(h)
        outputs.append(self.fc[2:](h))
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self._to_frames(self.features(x)))


class BYOLAEncoder(Encoder):
    """BYOL-A v1 with EVAR's front end and mean+max pooling."""

    needs_stats = True
    layers = ("conv1", "conv2", "conv3", "fc1", "fc2")

    def __init__(self, d: int = 512, mel: str = "evar", n_mels: int = 64) -> None:
        super().__init__()
        if mel not in MEL_CONVENTIONS:
            raise EvarError(f"unknown mel convention {mel!r}; choose from {', '.join(MEL_CONVENTIONS)}")
        mel_scale, mel_norm = MEL_CONVENTIONS[mel]
        self.sample_rate, self.embed_dim, self.mel = 16000, d, mel
        self.frame_hop_sec = 8 * 160 / 16000  # three 2x max-pools over 10 ms frames
        self.logmel = LogMelSpectrogram(16000, 1024, 160, n_mels, 60.0, 7800.0, mel_scale=mel_scale, mel_norm=mel_norm)
        self.net = AudioNTT2020(n_mels=n_mels, d=d)
        self.register_buffer("stats", torch.tensor([0.0, 1.0]))
        self.stats_set = False

    @property
    def evar_init_words(self) -> int:
        """EVAR builds AudioNTT2020Task6 with default initialisation before loading the weights."""
        return default_init_words(self.net)

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Output frame j pools mel frames 8j..8j+7 (centred STFT frames at t * 10 ms)."""
        return (torch.arange(n_frames, dtype=torch.float32) * 8 + 3.5) * 0.01

    def load_checkpoint(self, path: str | Path) -> None:
        """Load an official checkpoint (or a plain state_dict of the same keys), strictly."""
        state = {k.removeprefix("module."): v for k, v in load_state_dict(path).items()}
        self.weights_sha256 = load_weights(self.net, path, f"BYOL-A d={self.embed_dim}", state)

    def set_stats(self, mean: float, std: float) -> None:
        self.stats = torch.tensor([float(mean), float(std)], device=self.stats.device)
        self.stats_set = True

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        return self.logmel(wav)

    def _normalise(self, lms: torch.Tensor) -> torch.Tensor:
        return ((lms - self.stats[0]) / self.stats[1]).unsqueeze(1)

    def _normalised(self, wav: torch.Tensor) -> torch.Tensor:
        return self._normalise(self.logmel(wav))

    def forward_from_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self.net(self._normalise(features))
        return frames, self.frame_timestamps(frames.shape[1])

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_from_features(self.logmel(wav))

    def forward_layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        return self.net.forward_layers(self._normalised(wav))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "mel": self.mel, "weights_sha256": self.weights_sha256}


def _builder(d: int):
    def build(weights: str | None = None, mel: str = "evar", allow_download: bool = True) -> BYOLAEncoder:
        encoder = BYOLAEncoder(d=d, mel=mel)
        encoder.load_checkpoint(resolve_weights(BYOLA_WEIGHTS[d], weights, allow_download=allow_download))
        return encoder

    build.__doc__ = f"BYOL-A v1, {d}-d, official checkpoint."
    return build


for _dim, _name in ((512, "byola"), (1024, "byola1024"), (2048, "byola2048")):
    register_encoder(_name, sample_rate=16000, embed_dim=_dim, weights=BYOLA_WEIGHTS[_dim], finetune=BYOLA_FINETUNE,
                     description=f"BYOL-A v1 (IJCNN 2021) {_dim}-d")(_builder(_dim))
