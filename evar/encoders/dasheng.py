"""Dasheng (Dinkel et al., Interspeech 2024) in plain torch: ``dasheng`` (base, 768-d) frame embeddings.

Re-implemented from the ``dasheng`` package (RicherMans/Dasheng db73093, ``dasheng/pretrained/pretrained.py``,
``dasheng/train/models.py``) and loading its checkpoint format (``{"model": state_dict, "config": {...}}``, the
Zenodo ``dasheng_base.pt``) strictly, its torchaudio front-end buffers included. As the package's ``forward``:
16-kHz audio → a 512-point STFT (Hann 512, hop 160, centred, reflect) → 64 HTK mels 0–8000 Hz (the checkpoint's
own filter bank) → dB (``10 log10(max(x, 1e-10))``, floored 120 dB below the maximum) → BatchNorm per mel bin →
64 × 4 patches (every 40 ms) → time and frequency position embeddings → pre-norm blocks → LayerNorm; the patches
are encoded in chunks of 252 (10.08 s), each chunk's time positions starting at 0, and concatenated.

The frames are the encoder's output (EVAR's ``AR_Dasheng`` returns ``sigmoid(mean(hidden_states))`` instead, and
its frame method does not run); the clip embedding is their mean. One difference from the package: the 120-dB
floor is taken per clip, where torchaudio takes one maximum over the whole batch, so that a clip's embedding
does not depend on the clips batched with it (equal when clips are embedded one by one).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from evar.encoders import register_encoder
from evar.encoders.base import Encoder
from evar.encoders.vit import Block, block_geometry
from evar.encoders.weights import WeightFile, load_checkpoint, load_weights, resolve_weights
from evar.errors import EvarError

SOURCE = "https://github.com/RicherMans/Dasheng (checkpoints on Zenodo record 11511780)"
WEIGHTS = WeightFile("dasheng_base.pt", "https://zenodo.org/records/11511780/files/dasheng_base.pt?download=1", None,
                     SOURCE, "Apache-2.0 (RicherMans/Dasheng)")
SAMPLE_RATE, N_FFT, HOP, N_MELS = 16000, 512, 160, 64
TOP_DB = 120.0
CHUNK_FRAMES = 1008  # target_length: mel frames per chunk (252 patches)


class DashengBackbone(nn.Module):
    """Dasheng's encoder in the package's key format (``front_end.0.*``, ``init_bn.1``, ``patch_embed.proj``,
    ``time_pos_embed``, ``freq_pos_embed``, ``blocks.N``, ``norm``)."""

    def __init__(self, embed_dim: int, depth: int, num_heads: int, mlp_hidden: int, patch: tuple[int, int],
                 time_positions: int) -> None:
        super().__init__()
        self.front_end = nn.Sequential(nn.Module())
        self.front_end[0].spectrogram = nn.Module()
        self.front_end[0].spectrogram.register_buffer("window", torch.hann_window(N_FFT))
        self.front_end[0].mel_scale = nn.Module()
        self.front_end[0].mel_scale.register_buffer("fb", torch.zeros(N_FFT // 2 + 1, N_MELS))
        self.init_bn = nn.Sequential(nn.Identity(), nn.BatchNorm2d(N_MELS, momentum=0.01))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, embed_dim, kernel_size=patch, stride=patch)
        self.time_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, 1, time_positions))
        self.freq_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, N_MELS // patch[0], 1))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.patch_frames = patch[1]

    def spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """Batch-normalised dB mel spectrogram ``(B, 64, frames)``, the 120-dB floor per clip."""
        stft = torch.stft(wav, N_FFT, HOP, N_FFT, self.front_end[0].spectrogram.window, center=True,
                          pad_mode="reflect", return_complex=True)
        mel = torch.matmul(self.front_end[0].mel_scale.fb.T, stft.real.square() + stft.imag.square())
        db = 10.0 * torch.log10(mel.clamp(min=1e-10))
        db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - TOP_DB)
        return self.init_bn[1](db.unsqueeze(2)).squeeze(2)  # BatchNorm2d over the mel bins as channels

    def forward(self, wav: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output ``(B, patches, D)``, chunk by chunk; the last after the final LayerNorm."""
        x = self.patch_embed.proj(self.spectrogram(wav).unsqueeze(1))  # (B, D, 1, patches)
        per_chunk = []
        for chunk in x.split(CHUNK_FRAMES // self.patch_frames, dim=-1):
            h = chunk + self.time_pos_embed[..., :chunk.shape[-1]] + self.freq_pos_embed
            h = h.flatten(2).transpose(1, 2)  # 'b c f t -> b (f t) c' with one frequency row
            outputs = []
            for block in self.blocks:
                h = block(h)
                outputs.append(h)
            outputs[-1] = self.norm(h)
            per_chunk.append(outputs)
        return [torch.cat(chunks, dim=1) for chunks in zip(*per_chunk)]


class DashengEncoder(Encoder):
    """Dasheng's frame embeddings every 40 ms; the clip embedding is their mean."""

    sample_rate = SAMPLE_RATE

    def __init__(self, backbone: DashengBackbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.embed_dim = backbone.norm.normalized_shape[0]
        self.layers = tuple(f"block{i + 1}" for i in range(len(backbone.blocks)))
        self.frame_hop_sec = backbone.patch_frames * HOP / SAMPLE_RATE

    def _states(self, wav: torch.Tensor) -> list[torch.Tensor]:
        if wav.shape[1] < self.backbone.patch_frames * HOP:
            raise EvarError(f"Dasheng needs at least {self.backbone.patch_frames * HOP} samples (one 40-ms patch)")
        return self.backbone(wav)

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self._states(wav)[-1]
        return frames, self.frame_timestamps(frames.shape[1])

    def forward_layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        return self._states(wav)

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Centre of each patch's 4 STFT frames (centred STFT: frame k at k · 10 ms)."""
        pt = self.backbone.patch_frames
        return (torch.arange(n_frames, dtype=torch.float32) * pt + (pt - 1) / 2) * HOP / SAMPLE_RATE

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.mean(dim=1)

    layer_pool = pool

    def config(self) -> dict[str, Any]:
        return {**super().config(), "depth": len(self.backbone.blocks), "chunk_frames": CHUNK_FRAMES}


def load_dasheng(path: str) -> DashengEncoder:
    """A Dasheng checkpoint ``{"model", "config"}``: sizes from the tensors (heads from the config), loaded strictly."""
    checkpoint = load_checkpoint(path)
    if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict)):
        raise EvarError(f"{path}: not a Dasheng checkpoint (expected a dict with 'model' and 'config')")
    state, config = checkpoint["model"], checkpoint.get("config") or {}
    if "patch_embed.proj.weight" not in state or "time_pos_embed" not in state:
        raise EvarError(f"{path}: not a Dasheng checkpoint (no patch or position embedding among {list(state)[:4]})")
    dim, _, pf, pt = state["patch_embed.proj.weight"].shape
    try:
        depth, mlp_hidden = block_geometry(state)
        heads = int(config.get("num_heads", dim // 64))
        backbone = DashengBackbone(dim, depth, heads, mlp_hidden, (pf, pt), state["time_pos_embed"].shape[-1])
    except (ValueError, RuntimeError) as exc:
        raise EvarError(f"{path}: not a loadable Dasheng checkpoint ({exc})") from exc
    sha256 = load_weights(backbone, path, "loadable Dasheng", state)
    encoder = DashengEncoder(backbone)
    encoder.weights_sha256 = sha256
    return encoder.eval()


@register_encoder("dasheng", sample_rate=SAMPLE_RATE, embed_dim=768, weights=WEIGHTS,
                  description="Dasheng base (AudioSet + VGGSound + MTG + ACAV), frames every 40 ms, mean")
def build_dasheng(weights: str | None = None, allow_download: bool = True) -> DashengEncoder:
    """Dasheng base from Zenodo (downloaded into the cache on first use), or ``weights``."""
    return load_dasheng(str(resolve_weights(WEIGHTS, weights, allow_download)))
