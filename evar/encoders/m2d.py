"""M2D, Masked Modeling Duo (Niizumi et al., ICASSP 2023 / TASLP 2024): ``m2d``, EVAR's ``AR_M2D``.

Re-implemented from nttcslab/m2d (``m2d/runtime_audio.py`` ``RuntimeM2D``, ``m2d/models_mae.py`` ``M2DViT`` at
f0c4128) in plain torch, loading the released checkpoints (``{"model": state_dict, ...}``, e.g.
``m2d_vit_base-80x608p16x16-221006-mr7/checkpoint-300.pth``): the online encoder's keys are loaded strictly; the
decoder, target network and offline predictor keys are left out, as the runtime's ``drop_non_model_weights``
does. The geometry comes from the weights (patch 16 x 16, 80 mel bins, the position grid: 608 frames for
``80x608``); a ``p32k`` folder or file name selects the 32-kHz front end.

Front end (the runtime's nnAudio settings): 16 kHz, n_fft 400, window 400, hop 160 (32 kHz: 800 / 800 / 320), a
centred STFT, 80 Slaney mels with Slaney normalisation, 50–8000 Hz (32 kHz: 50–16000), ``log(x + eps)``, then
``(x − mean) / std`` with the checkpoint's ``norm_stats`` (default −7.1, 4.2; EVAR's config has the same).

Encoding as ``encode_lms``: chunks of the model's input width; the spectrogram is zero-padded only to a whole
number of 16-frame patches, and a short last chunk sees the first columns of the position embedding (the
runtime's ``adjust_short``); each chunk without masking, the class token dropped, the patch tokens regrouped
per time column with the 5 frequency rows concatenated (``b (f t) d -> b t (f d)``: 3840-d every 160 ms), the
chunks concatenated. The clip embedding is the mean over time (EVAR's ``AR_M2D``, ``output_layers: [-1]``).
Layers ``block1`` … ``block12``: each block's output in the same layout, the last after the final LayerNorm.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from evar.encoders import register_encoder
from evar.encoders.base import Encoder
from evar.encoders.vit import Block, PatchEmbed, block_geometry
from evar.encoders.weights import WeightFile, load_state_dict, load_weights, resolve_weights
from evar.errors import EvarError
from evar.frontends.logmel import LogMelSpectrogram

SOURCE = "https://github.com/nttcslab/m2d (README: pre-trained weights, releases)"
WEIGHTS = WeightFile("m2d_vit_base-80x608p16x16-221006-mr7_checkpoint-300.pth", SOURCE, None, SOURCE,
                     "NTT licence (research and evaluation only; see the m2d repository)")
N_MELS = 80
DEFAULT_NORM_STATS = (-7.1, 4.2)
#: sample rate → (n_fft = window, hop, f_max) of the runtime's get_to_melspec
FRONT_ENDS = {16000: (400, 160, 8000.0), 32000: (800, 320, 16000.0)}
ENCODER_PREFIXES = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")


class M2DBackbone(nn.Module):
    """M2D's online encoder (``M2DViT.forward_encoder``): patch embedding, fixed sin-cos positions, timm blocks."""

    def __init__(self, embed_dim: int, depth: int, num_heads: int, patch: tuple[int, int], grid: tuple[int, int],
                 mlp_hidden: int) -> None:
        super().__init__()
        self.grid = grid
        self.patch_embed = PatchEmbed(patch, patch, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid[0] * grid[1], embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def forward(self, chunk: torch.Tensor) -> list[torch.Tensor]:
        """Every block's patch tokens ``(B, F·T, D)`` for a chunk ``(B, 1, 80, frames)`` (frames a multiple of the
        patch width, at most the model's); the last block's after the final LayerNorm."""
        x = self.patch_embed(chunk)
        dim, rows = x.shape[-1], self.grid[0]
        columns = x.shape[1] // rows
        positions = self.pos_embed[:, 1:].reshape(1, rows, self.grid[1], dim)[:, :, :columns].reshape(1, -1, dim)
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1), x + positions], dim=1)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        outputs[-1] = self.norm(x)
        return [h[:, 1:] for h in outputs]


class M2DEncoder(Encoder):
    """M2D with its runtime's front end and chunking; see the module docstring."""

    def __init__(self, backbone: M2DBackbone, norm_stats: tuple[float, float], sample_rate: int = 16000) -> None:
        super().__init__()
        if sample_rate not in FRONT_ENDS:
            raise EvarError(f"M2D: no front end for {sample_rate} Hz (16 or 32 kHz)")
        n_fft, hop, f_max = FRONT_ENDS[sample_rate]
        self.sample_rate, self.hop = sample_rate, hop
        self.backbone = backbone
        self.logmel = LogMelSpectrogram(sample_rate, n_fft, hop, N_MELS, 50.0, f_max)
        self.register_buffer("norm_stats", torch.tensor([float(s) for s in norm_stats]))
        self.patch_frames = backbone.patch_embed.patch_size[1]
        self.unit_frames = backbone.grid[1] * self.patch_frames
        self.embed_dim = backbone.grid[0] * backbone.pos_embed.shape[-1]
        self.layers = tuple(f"block{i + 1}" for i in range(len(backbone.blocks)))
        self.frame_hop_sec = self.patch_frames * hop / sample_rate

    def _encode(self, wav: torch.Tensor) -> list[torch.Tensor]:
        """Per-block frames ``(B, T', 5·D)``, chunk by chunk as ``encode_lms``."""
        x = ((self.logmel(wav) - self.norm_stats[0]) / self.norm_stats[1]).unsqueeze(1)
        x = F.pad(x, (0, -x.shape[-1] % self.patch_frames))
        per_chunk = []
        for start in range(0, x.shape[-1], self.unit_frames):
            tokens = self.backbone(x[..., start:start + self.unit_frames])
            rows, dim = self.backbone.grid[0], tokens[0].shape[-1]
            per_chunk.append([t.reshape(t.shape[0], rows, -1, dim).permute(0, 2, 1, 3).flatten(2) for t in tokens])
        return [torch.cat(chunks, dim=1) for chunks in zip(*per_chunk)]

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self._encode(wav)[-1]
        return frames, self.frame_timestamps(frames.shape[1])

    def forward_layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        return self._encode(wav)

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Centre of each patch column's 16 STFT frames (centred STFT: frame k at k · hop)."""
        return (torch.arange(n_frames, dtype=torch.float32) * self.patch_frames + (self.patch_frames - 1) / 2) \
            * self.hop / self.sample_rate

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.mean(dim=1)

    layer_pool = pool

    def config(self) -> dict[str, Any]:
        return {**super().config(), "unit_frames": self.unit_frames, "norm_stats": self.norm_stats.tolist()}


def load_m2d(path: str | Path, num_heads: int | None = None) -> M2DEncoder:
    """A released M2D checkpoint: the online encoder loaded strictly, its ``norm_stats`` used."""
    path = Path(path)
    with torch.serialization.safe_globals([argparse.Namespace]):  # MAE-style save_model keeps the training args
        raw = load_state_dict(path)
    state = {k.removeprefix("module.ar.runtime.backbone.").removeprefix("module."): v for k, v in raw.items()}
    norm_stats = tuple(float(v) for v in state.get("norm_stats", torch.tensor(DEFAULT_NORM_STATS)))
    state = {k: v for k, v in state.items() if k.startswith(ENCODER_PREFIXES)}
    if "pos_embed" not in state or "patch_embed.proj.weight" not in state:
        raise EvarError(f"{path}: not an M2D checkpoint (no position or patch embedding among {list(raw)[:4]})")
    dim, _, pf, pt = state["patch_embed.proj.weight"].shape
    positions = state["pos_embed"].shape[1] - 1
    if N_MELS % pf or positions % (N_MELS // pf):
        raise EvarError(f"{path}: patch {pf}x{pt} with {positions} positions does not fit {N_MELS} mel bins")
    grid = (N_MELS // pf, positions // (N_MELS // pf))
    sample_rate = 32000 if re.search(r"p32k", f"{path.parent.name}/{path.name}") else 16000
    try:
        depth, mlp_hidden = block_geometry(state)
        backbone = M2DBackbone(dim, depth, num_heads or dim // 64, (pf, pt), grid, mlp_hidden)
    except (ValueError, RuntimeError) as exc:
        raise EvarError(f"{path}: not a loadable M2D checkpoint ({exc})") from exc
    sha256 = load_weights(backbone, path, "loadable M2D", state)
    encoder = M2DEncoder(backbone, norm_stats, sample_rate)
    encoder.weights_sha256 = sha256
    return encoder.eval()


@register_encoder("m2d", sample_rate=16000, embed_dim=3840, weights=WEIGHTS,
                  description="M2D ViT-B 80x608 (AudioSet), 5 x 768 per 160 ms, EVAR's AR_M2D")
def build_m2d(weights: str | None = None, num_heads: int | None = None, allow_download: bool = False) -> M2DEncoder:
    """M2D (download the release from the m2d repository, pass weights=PATH)."""
    return load_m2d(resolve_weights(WEIGHTS, weights, allow_download=False), num_heads)
