"""MSM-MAE (Niizumi et al., HEAR 2021 / PMLR 166): a masked-autoencoder ViT-B on log-mel spectrograms.

Checkpoint: the released ``checkpoint-100.pth`` files of nttcslab/msm-mae (``{"model": state_dict, ...}``
as MAE's ``save_model`` writes them, ``args`` namespace included) or a plain state_dict with the same
keys (``pos_embed``, optional ``cls_token``, ``patch_embed.proj.*``, ``blocks.N.attn.{qkv.weight,q_bias,v_bias}``...);
the decoder keys are ignored. Geometry (patch size, frames per chunk) is read from the weights, so the
``80x208p16x16`` and ``80x512p16x16`` runs both load without their folder names.

Front end (the runtime's nnAudio settings): 16 kHz, n_fft 400, window 400, hop 160, centred STFT, 80
Slaney-scale mels with Slaney normalisation, 50-8000 Hz, ``log(x + eps)``; then ``(x - mean) / std``
with statistics measured on the task's training audio (``norm="evar"``, EVAR's ``AR_MSM_MAE``), or with
the batch's own mean and std (``norm="batch"``, the runtime's ``encode``).

Encoding as the runtime's ``encode_lms``: the spectrogram is zero-padded to whole chunks of the
model's input width (208 frames for 80x208), each chunk is encoded without masking, the class token is
dropped, patch tokens are regrouped per time column with the 5 frequency rows concatenated
(``b (f t) d -> b t (f d)``: 5 x 768 = 3840-d every 160 ms), and the padded tail is cut. The clip
embedding is the mean over time (``pooling="mean"``, EVAR's wrapper) or EVAR's mean+max.
Layers ``block1``..``block12``: each block's output in the same layout, the last after the final
LayerNorm (the runtime's ``return_layers=True``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from evar.errors import EvarError
from evar.frontends.logmel import LogMelSpectrogram
from evar.encoders.vit import Block, PatchEmbed, block_geometry
from evar.encoders.weights import WeightFile, load_state_dict, load_weights, resolve_weights
from evar.encoders import register_encoder
from evar.encoders.base import Encoder, mean_max_pool

MSM_MAE_SOURCE = "https://github.com/nttcslab/msm-mae/releases (weights of README section 5)"
N_MELS, HOP, SAMPLE_RATE = 80, 160, 16000
NORMS = ("evar", "batch")
POOLINGS = ("mean", "mean_max")
#: registry name -> released run folder (the folder name encodes input and patch size)
RUNS = {"msm_mae": "80x208p16x16_0422", "msm_mae_512": "80x512p16x16_0425", "msm_mae_paper": "80x512p16x16_paper"}
MSM_MAE_WEIGHTS = {name: WeightFile(f"msm_mae_{run}_checkpoint-100.pth", MSM_MAE_SOURCE, None, MSM_MAE_SOURCE,
                                    "NTT licence (research and evaluation only; see the msm-mae repository)")
                   for name, run in RUNS.items()}
DECODER_PREFIXES = ("decoder_", "mask_token")


class MSMMAEBackbone(nn.Module):
    """The MAE encoder of MSM-MAE: patch embedding, fixed sin-cos position embedding, BEiT-style blocks."""

    def __init__(
        self, embed_dim: int, depth: int, num_heads: int, patch: tuple[int, int], grid: tuple[int, int],
        cls_token: bool, mlp_hidden: int,
    ) -> None:
        super().__init__()
        self.grid, self.use_cls_token = grid, cls_token
        self.patch_embed = PatchEmbed(patch, patch, embed_dim)
        if cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, int(cls_token) + grid[0] * grid[1], embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_hidden, k_bias_zero=True) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Patch-token outputs ``(N, F'*T', D)`` of every block for chunks ``(N, 1, 80, unit)``; the last one normed."""
        n_cls = int(self.use_cls_token)
        x = self.patch_embed(x) + self.pos_embed[:, n_cls:]
        if self.use_cls_token:
            x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1), x], dim=1)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        outputs[-1] = self.norm(x)
        return [h[:, n_cls:] for h in outputs]


def _load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    # MAE's save_model stores the training arguments as an argparse.Namespace beside the weights
    with torch.serialization.safe_globals([argparse.Namespace]):
        return load_state_dict(path)


class MSMMAEEncoder(Encoder):
    """MSM-MAE with EVAR's front end; see the module docstring."""

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        patch: tuple[int, int] = (16, 16),
        grid: tuple[int, int] = (5, 13),
        cls_token: bool = True,
        mlp_hidden: int = 3072,
        norm: str = "evar",
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise EvarError(f"unknown MSM-MAE norm {norm!r}; choose from {', '.join(NORMS)}")
        if pooling not in POOLINGS:
            raise EvarError(f"unknown MSM-MAE pooling {pooling!r}; choose from {', '.join(POOLINGS)}")
        self.sample_rate, self.norm, self.pooling = SAMPLE_RATE, norm, pooling
        self.embed_dim = grid[0] * embed_dim
        self.needs_stats = norm == "evar"
        self.layers = tuple(f"block{i + 1}" for i in range(depth))
        self.frame_hop_sec = patch[1] * HOP / SAMPLE_RATE
        self.unit_frames = grid[1] * patch[1]
        self.logmel = LogMelSpectrogram(SAMPLE_RATE, 400, HOP, N_MELS, 50.0, 8000.0)
        self.backbone = MSMMAEBackbone(embed_dim, depth, num_heads, patch, grid, cls_token, mlp_hidden)
        self.register_buffer("stats", torch.tensor([0.0, 1.0]))

    @classmethod
    def from_checkpoint(cls, path: str | Path, num_heads: int | None = None, **options: Any) -> "MSMMAEEncoder":
        """Build the architecture the checkpoint describes and load its encoder strictly.

        Heads default to ``embed_dim // 64`` (ViT-B: 12).
        """
        path = Path(path)
        state = {k.removeprefix("module."): v for k, v in _load_checkpoint(path).items()}
        state = {k: v for k, v in state.items() if not k.startswith(DECODER_PREFIXES)}
        if "pos_embed" not in state or "patch_embed.proj.weight" not in state:
            raise EvarError(f"{path}: not an MSM-MAE checkpoint (no position or patch embedding among {list(state)[:4]})")
        dim, _, pf, pt = state["patch_embed.proj.weight"].shape
        has_cls = "cls_token" in state
        n = state["pos_embed"].shape[1] - int(has_cls)
        if N_MELS % pf or n % (N_MELS // pf):
            raise EvarError(f"{path}: patch {pf}x{pt} with {n} positions does not fit {N_MELS} mel bins")
        grid = (N_MELS // pf, n // (N_MELS // pf))
        try:
            depth, mlp_hidden = block_geometry(state)
            encoder = cls(dim, depth, num_heads or dim // 64, (pf, pt), grid, has_cls, mlp_hidden, **options)
        except (ValueError, RuntimeError) as exc:
            raise EvarError(f"{path}: not a loadable MSM-MAE checkpoint ({exc})") from exc
        encoder.weights_sha256 = load_weights(encoder.backbone, path, "loadable MSM-MAE", state)
        return encoder

    def set_stats(self, mean: float, std: float) -> None:
        if not self.needs_stats:
            raise EvarError("MSM-MAE with norm='batch' normalises each batch by itself; it takes no task statistics")
        self.stats = torch.tensor([float(mean), float(std)], device=self.stats.device)

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(B, 80, frames)`` before normalisation."""
        return self.logmel(wav)

    def _encode(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Per-block frame embeddings ``(B, T', F' * D)`` of log-mels, normalised, chunked and trimmed as ``encode_lms``."""
        if self.norm == "batch":
            x = (features - features.mean()) / features.std()
        else:
            x = (features - self.stats[0]) / self.stats[1]
        B, n_mels, frames = x.shape
        unit = self.unit_frames
        pad = -frames % unit
        n_chunks = (frames + pad) // unit
        chunks = F.pad(x, (0, pad)).reshape(B, n_mels, n_chunks, unit).permute(0, 2, 1, 3)
        (gf, gt), dim = self.backbone.grid, self.backbone.pos_embed.shape[-1]
        keep = n_chunks * gt - gt * pad // unit
        outputs = []
        for h in self.backbone(chunks.reshape(B * n_chunks, 1, n_mels, unit)):
            h = h.reshape(B, n_chunks, gf, gt, dim).permute(0, 1, 3, 2, 4).reshape(B, n_chunks * gt, gf * dim)
            outputs.append(h[:, :keep])
        return outputs

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Centre of each patch column's 16 STFT frames (centred STFT: frame k is at k x 10 ms)."""
        pt = self.backbone.patch_embed.patch_size[1]
        return (torch.arange(n_frames, dtype=torch.float32) * pt + (pt - 1) / 2) * HOP / SAMPLE_RATE

    def forward_from_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self._encode(features)[-1]
        return frames, self.frame_timestamps(frames.shape[1])

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_from_features(self.logmel(wav))

    def forward_layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        return self._encode(self.logmel(wav))

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        """Mean over time (EVAR's ``AR_MSM_MAE``) or EVAR's mean+max."""
        return frames.mean(dim=1) if self.pooling == "mean" else mean_max_pool(frames)

    def layer_pool(self, frames: torch.Tensor) -> torch.Tensor:
        """Layers in a fusion pool like the clip embedding."""
        return self.pool(frames)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(), "norm": self.norm, "pooling": self.pooling, "unit_frames": self.unit_frames,
            "patch": list(self.backbone.patch_embed.patch_size),
            "logmel": {"n_fft": 400, "hop": HOP, "n_mels": N_MELS, "f_min": 50.0, "f_max": 8000.0, "mel": "slaney"},
            "weights_sha256": self.weights_sha256,
        }


def _builder(name: str):
    def build(
        weights: str | None = None, norm: str = "evar", pooling: str = "mean", num_heads: int | None = None,
        allow_download: bool = False,
    ) -> MSMMAEEncoder:
        # allow_download is accepted like every encoder's, but the release has no direct link to fetch:
        # the file comes from the releases page (placed in the cache) or ``weights``
        path = resolve_weights(MSM_MAE_WEIGHTS[name], weights, allow_download=False)
        return MSMMAEEncoder.from_checkpoint(path, num_heads=num_heads, norm=norm, pooling=pooling)

    build.__doc__ = f"MSM-MAE {RUNS[name]} (download from {MSM_MAE_SOURCE}, pass weights=PATH)."
    return build


for _name, _run in RUNS.items():
    register_encoder(_name, sample_rate=SAMPLE_RATE, embed_dim=3840, weights=MSM_MAE_WEIGHTS[_name],
                     description=f"MSM-MAE ViT-B {_run} (HEAR 2021), 3840-d")(_builder(_name))
