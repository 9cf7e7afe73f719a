"""OpenL3 (Cramer et al., ICASSP 2019) in plain torch: ``openl3_env`` and ``openl3_music``, EVAR's rows.

Re-implemented from torchopenl3 (torchopenl3/torchopenl3 3cf5485, ``models.py`` ``PytorchOpenl3``, ``core.py``
``get_audio_embedding``, ``utils.py`` ``preprocess_audio_batch``), loading its weight files
(``torchopenl3_mel256_{env,music}_6144.pth.tar``: the network's state_dict, its kapre-style STFT kernels and mel
basis included) strictly. As EVAR's ``AR_OpenL3`` (88ba772, ``config/openl3{env,mus}.yaml``): 48-kHz audio,
``center=True`` (0.5 s of zeros in front), 1-s windows every 0.1 s (the end zero-padded to a whole hop), each
window "same"-padded and turned into a 256-band mel magnitude in dB (the checkpoint's DFT kernels, n_dft 2048,
hop 242; ``10 log10``, minus the window's maximum, floored at −80 dB), then eight conv/BatchNorm/ReLU layers with
three 2 × 2 max-pools, the embedding conv and an 8 × 8 max-pool flattened channel-last: 6144 values per 0.1 s
(timestamps ``i × 0.1 s``: the window centres). The clip embedding is EVAR's mean + max over time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from evar.encoders import register_encoder
from evar.encoders.base import Encoder, mean_max_pool
from evar.encoders.weights import WeightFile, load_state_dict, load_weights, resolve_weights
from evar.errors import EvarError

SAMPLE_RATE = 48000
HOP_SEC = 0.1
N_DFT, N_HOP, N_MELS = 2048, 242, 256
DYNAMIC_RANGE_DB = 80.0
#: (input channels, output channels) of conv2d_1..conv2d_7 and the embedding layer
CONVS = ((1, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512))
POOL_AFTER = (2, 4, 6)  # 2 x 2 max-pools after these convolutions
EMBEDDING_POOL = (8, 8)  # mel256, 6144-d
MODELS_URL = "https://github.com/torchopenl3/torchopenl3-models/raw/master/"
WEIGHTS = {content: WeightFile(f"torchopenl3_mel256_{content}_6144.pth.tar",
                               f"{MODELS_URL}torchopenl3_mel256_{content}_6144.pth.tar", None,
                               "https://github.com/torchopenl3/torchopenl3 (weights converted from marl/openl3)",
                               "MIT (torchopenl3; OpenL3 weights CC BY 4.0)")
           for content in ("env", "music")}


class OpenL3Network(nn.Module):
    """PytorchOpenl3 (mel256, 6144) in its key format: ``speclayer.{dft_real_kernels,dft_imag_kernels,mel_basis}``,
    ``batch_normalization_1..8``, ``conv2d_1..7``, ``audio_embedding_layer``."""

    def __init__(self) -> None:
        super().__init__()
        self.speclayer = nn.Module()
        bins = N_DFT // 2 + 1
        self.speclayer.register_buffer("dft_real_kernels", torch.zeros(bins, 1, N_DFT))
        self.speclayer.register_buffer("dft_imag_kernels", torch.zeros(bins, 1, N_DFT))
        self.speclayer.register_buffer("mel_basis", torch.zeros(N_MELS, bins))
        self.batch_normalization_1 = nn.BatchNorm2d(1, eps=0.001, momentum=0.99)
        for index, (c_in, c_out) in enumerate(CONVS, start=1):
            name = "audio_embedding_layer" if index == len(CONVS) else f"conv2d_{index}"
            setattr(self, name, nn.Conv2d(c_in, c_out, 3))
            if index < len(CONVS):
                setattr(self, f"batch_normalization_{index + 1}", nn.BatchNorm2d(c_out, eps=0.001, momentum=0.99))

    def melgram(self, windows: torch.Tensor) -> torch.Tensor:
        """kapre 0.1.4's dB mel magnitude ``(N, 1, 256, T)`` of 1-s windows ``(N, 1, 48000)``."""
        remainder = SAMPLE_RATE % N_HOP
        pad = max(N_DFT - (remainder or N_HOP), 0)  # Keras "same" padding of the window
        x = F.pad(windows, (pad // 2, pad - pad // 2))
        power = F.conv1d(x, self.speclayer.dft_real_kernels, stride=N_HOP) ** 2 + \
            F.conv1d(x, self.speclayer.dft_imag_kernels, stride=N_HOP) ** 2
        magnitude = torch.sqrt(torch.matmul(self.speclayer.mel_basis, power))
        db = 10 * torch.log10(magnitude.clamp(min=1e-10))
        db = db - db.amax(dim=(1, 2), keepdim=True)
        return db.clamp(min=-DYNAMIC_RANGE_DB).unsqueeze(1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """6144-d embeddings ``(N, 6144)`` of 1-s windows ``(N, 1, 48000)``."""
        x = self.batch_normalization_1(self.melgram(windows))
        for index in range(1, len(CONVS)):
            x = getattr(self, f"conv2d_{index}")(F.pad(x, (1, 1, 1, 1)))
            x = F.relu(getattr(self, f"batch_normalization_{index + 1}")(x))
            if index in POOL_AFTER:
                x = F.max_pool2d(x, 2)
        x = F.max_pool2d(self.audio_embedding_layer(F.pad(x, (1, 1, 1, 1))), EMBEDDING_POOL)
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # channel-last, as Keras flattens


def audio_windows(wav: torch.Tensor, hop_sec: float = HOP_SEC) -> torch.Tensor:
    """``(B, n, 1, 48000)``: 0.5 s of zeros in front, the end padded to a whole hop, 1-s windows every ``hop_sec``."""
    frame, hop = SAMPLE_RATE, int(hop_sec * SAMPLE_RATE)
    x = F.pad(wav, (frame // 2, 0))
    length = x.shape[1]
    pad = frame - length if length < frame else -(-(length - frame) // hop) * hop - (length - frame)
    x = F.pad(x, (0, pad))
    return x.unfold(1, frame, hop).unsqueeze(2)


class OpenL3Encoder(Encoder):
    """OpenL3 mel256 / 6144 frames every 0.1 s; EVAR's mean + max pooling."""

    sample_rate = SAMPLE_RATE
    embed_dim = 6144
    windows_per_call = 32  # torchopenl3's batch_size

    def __init__(self, content_type: str, hop_sec: float = HOP_SEC) -> None:
        super().__init__()
        if not 0 < hop_sec <= 1:
            raise EvarError(f"OpenL3 hop_sec must be in (0, 1], got {hop_sec}")
        self.content_type, self.frame_hop_sec = content_type, float(hop_sec)
        self.network = OpenL3Network()

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        windows = audio_windows(wav, self.frame_hop_sec)
        batch, count = windows.shape[:2]
        flat = windows.reshape(batch * count, 1, SAMPLE_RATE)
        frames = torch.cat([self.network(flat[i:i + self.windows_per_call])
                            for i in range(0, len(flat), self.windows_per_call)])
        return frames.view(batch, count, -1), self.frame_timestamps(count)

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Window i is centred on ``i × hop`` (``center=True``)."""
        return torch.arange(n_frames, dtype=torch.float32) * self.frame_hop_sec

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        return mean_max_pool(frames)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "content_type": self.content_type, "input_repr": "mel256",
                "hop_sec": self.frame_hop_sec}


def load_openl3(path: str, content_type: str, hop_sec: float = HOP_SEC) -> OpenL3Encoder:
    """A torchopenl3 weight file (the network's state_dict) loaded strictly."""
    encoder = OpenL3Encoder(content_type, hop_sec)
    state = load_state_dict(path)
    if "audio_embedding_layer.weight" not in state:
        raise EvarError(f"{path}: not a torchopenl3 checkpoint (no audio_embedding_layer among {list(state)[:4]})")
    encoder.weights_sha256 = load_weights(encoder.network, path, "torchopenl3 mel256/6144", state)
    return encoder.eval()


def _builder(content_type: str):
    def build(weights: str | None = None, hop_sec: float = HOP_SEC, allow_download: bool = True) -> OpenL3Encoder:
        """``hop_sec``: EVAR's 0.1 s by default (each second costs ten 22-GFLOP windows)."""
        return load_openl3(str(resolve_weights(WEIGHTS[content_type], weights, allow_download)), content_type,
                           hop_sec)

    build.__doc__ = f"OpenL3 {content_type}, mel256, 6144-d (torchopenl3's weight file)."
    return build


register_encoder("openl3_env", sample_rate=SAMPLE_RATE, embed_dim=6144, weights=WEIGHTS["env"],
                 description="OpenL3 environmental, mel256, 6144-d every 0.1 s (EVAR's OpenL3 env)")(_builder("env"))
register_encoder("openl3_music", sample_rate=SAMPLE_RATE, embed_dim=6144, weights=WEIGHTS["music"],
                 description="OpenL3 music, mel256, 6144-d every 0.1 s (EVAR's OpenL3 music)")(_builder("music"))
