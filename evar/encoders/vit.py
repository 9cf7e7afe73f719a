"""Plain-torch Vision Transformer pieces shared by the spectrogram transformers (AST, MSM-MAE).

Module and parameter names follow timm's ``VisionTransformer`` (``patch_embed.proj``,
``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``) so that checkpoints
written from timm-based code load by name. Pre-norm blocks, exact GELU, LayerNorm eps 1e-6.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PatchEmbed(nn.Module):
    """Conv patch projection of a ``(B, C, F, T)`` spectrogram into tokens ordered frequency-major.

    Returns ``(B, F' * T', D)``: token ``f * T' + t`` is the patch at frequency row ``f``, time column ``t``.
    """

    def __init__(self, patch_size: tuple[int, int], stride: tuple[int, int], embed_dim: int, in_chans: int = 1) -> None:
        super().__init__()
        self.patch_size, self.stride = tuple(patch_size), tuple(stride)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.stride)

    def grid(self, n_freq: int, n_time: int) -> tuple[int, int]:
        """Patch grid ``(F', T')`` for an input of ``n_freq`` x ``n_time`` bins (0 when it is too small)."""
        (pf, pt), (sf, st) = self.patch_size, self.stride
        return max(0, (n_freq - pf) // sf + 1), max(0, (n_time - pt) // st + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection.

    ``k_bias_zero=True`` is the BEiT/MSM-MAE variant: ``qkv`` has no bias of its own and the
    bias is ``cat(q_bias, 0, v_bias)`` (parameters ``q_bias`` and ``v_bias``).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, k_bias_zero: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding dimension {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.k_bias_zero = k_bias_zero
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias and not k_bias_zero)
        if k_bias_zero and qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        if self.k_bias_zero and hasattr(self, "q_bias"):
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
            qkv = F.linear(x, self.qkv.weight, bias)
        else:
            qkv = self.qkv(x)
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    """Two linear layers with an exact GELU between them."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(
        self, dim: int, num_heads: int, mlp_hidden: int | None = None, eps: float = 1e-6, k_bias_zero: bool = False,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, k_bias_zero=k_bias_zero)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden or 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def block_geometry(state: dict[str, torch.Tensor], prefix: str = "blocks.") -> tuple[int, int]:
    """Number of consecutive ``{prefix}N.`` blocks in a state_dict and their MLP width."""
    indices = {int(k[len(prefix):].split(".", 1)[0]) for k in state if k.startswith(prefix)}
    if not indices or indices != set(range(len(indices))):
        raise ValueError(f"expected blocks {prefix}0.. {prefix}N, found indices {sorted(indices)}")
    fc1 = state.get(f"{prefix}0.mlp.fc1.weight")
    if fc1 is None:
        raise ValueError(f"no {prefix}0.mlp.fc1.weight")
    return len(indices), fc1.shape[0]
