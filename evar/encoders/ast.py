"""AST, the Audio Spectrogram Transformer (Gong et al., Interspeech 2021), as EVAR evaluates it.

Checkpoints (format detected from the keys):

* the official ``audioset_10_10_0.4593.pth`` (YuanGongND/ast): a ``DataParallel`` state_dict with the
  timm DeiT under ``module.v.*`` and the AudioSet head ``module.mlp_head.*`` (head keys are ignored);
* the Hugging Face port (``MIT/ast-finetuned-audioset-10-10-0.4593``, ``model.safetensors`` or
  ``pytorch_model.bin``, a file or its directory): ``audio_spectrogram_transformer.*`` keys in
  transformers' legacy ViT naming or the transformers-5 naming (``layers.N.attention.q_proj``...);
* a plain state_dict of this module's backbone (``cls_token``, ``blocks.N.*``, ...).

Front end: 16 kHz, waveform mean removed, Kaldi fbank (128 bins, 25 ms Hanning window, 10 ms shift,
pre-emphasis 0.97, per-frame DC removal, no dither), then ``(x - mean) / (2 std)``.

* ``preprocess="evar"`` (default, EVAR's ``ar_ast.py``): statistics measured on the task's training
  audio; no padding: the fbank keeps the clip's own length and the position embedding is cut from
  the middle (shorter than 1024 frames) or bilinearly interpolated (longer), as AST does for
  ``input_tdim``.
* ``preprocess="ast"``: AST's AudioSet statistics (-4.2677393, 4.5689974) and the fbank zero-padded or
  cropped to ``target_length`` (1024) frames, as AST's data loader and the Hugging Face extractor do.

Embedding (``pooling="tokens"``, EVAR): the mean of the class and distillation tokens after the final
LayerNorm, 768-d, returned by ``embed_frames`` as one frame per clip (EVAR's ``encode_frames``); the head
is unused. ``pooling="mean"``/``"mean_max"``: frames are the final patch tokens averaged over the 12
frequency rows, one per time column (every 100 ms), pooled over time. Layers ``block1``..``block12``:
each block's output after the final LayerNorm in the same form; with ``tokens`` this is EUSIPCO 2022's
AST-Fusion (``layers=[4, 11]`` is "#5#12", 1536-d).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from evar.errors import EvarError
from evar.frontends.kaldi import KaldiFbank
from evar.encoders.vit import Block, PatchEmbed, block_geometry
from evar.encoders.weights import WeightFile, load_state_dict, load_weights, resolve_weights
from evar.encoders import register_encoder
from evar.encoders.base import Encoder, mean_max_pool

AST_SOURCE = (
    "https://github.com/YuanGongND/ast#pretrained-models "
    "(or the Hugging Face port MIT/ast-finetuned-audioset-10-10-0.4593, passed as a directory)"
)
AST_URL = "https://www.dropbox.com/s/ca0b1v2nlxzyeb4/audioset_10_10_0.4593.pth?dl=1"
AST_WEIGHTS = WeightFile("audioset_10_10_0.4593.pth", AST_URL, None, AST_SOURCE, "BSD-3-Clause (the ast repository)")

#: AST's AudioSet fbank statistics (egs/audioset/run.sh), used with ``preprocess="ast"``
AUDIOSET_STATS = (-4.2677393, 4.5689974)
PREPROCESS = ("evar", "ast")
POOLINGS = ("tokens", "mean", "mean_max")
N_MELS, PATCH = 128, 16
HF_FILES = ("model.safetensors", "pytorch_model.bin")


class ASTBackbone(nn.Module):
    """The DeiT-distilled ViT of AST (``ASTModel.v``): patch embedding, two tokens, blocks, final norm."""

    def __init__(
        self, embed_dim: int, depth: int, num_heads: int, grid: tuple[int, int], stride: tuple[int, int], mlp_hidden: int
    ) -> None:
        super().__init__()
        self.grid = grid  # (frequency rows, time columns) of the checkpoint's position embedding
        self.patch_embed = PatchEmbed((PATCH, PATCH), stride, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 2 + grid[0] * grid[1], embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def pos_embed_for(self, f: int, t: int) -> torch.Tensor:
        """Position embedding for an ``f`` x ``t`` patch grid: cut from the middle or bilinearly resized."""
        f0, t0 = self.grid
        if (f, t) == (f0, t0):
            return self.pos_embed
        grid = self.pos_embed[:, 2:].transpose(1, 2).reshape(1, -1, f0, t0)
        if t < t0:
            grid = grid[..., t0 // 2 - t // 2: t0 // 2 - t // 2 + t]
        else:
            grid = F.interpolate(grid, size=(f0, t), mode="bilinear")
        if f < f0:
            grid = grid[:, :, f0 // 2 - f // 2: f0 // 2 - f // 2 + f]
        elif f > f0:
            grid = F.interpolate(grid, size=(f, t), mode="bilinear")
        return torch.cat([self.pos_embed[:, :2], grid.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, spec: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """Outputs of every block (before the final norm) for a ``(B, T, F)`` spectrogram, and the patch grid."""
        f, t = self.patch_embed.grid(spec.shape[2], spec.shape[1])
        if f < 1 or t < 1:
            raise EvarError(f"AST needs at least {PATCH} fbank frames (0.175 s of audio), got {spec.shape[1]}")
        x = self.patch_embed(spec.transpose(1, 2).unsqueeze(1))
        B = x.shape[0]
        x = torch.cat([self.cls_token.expand(B, -1, -1), self.dist_token.expand(B, -1, -1), x], dim=1)
        x = x + self.pos_embed_for(f, t)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs, (f, t)


_HF_RENAMES = [  # (pattern after the model prefix, replacement); query/key/value are fused separately
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.distillation_token", "dist_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"layers\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"layers\.(\d+)\.mlp\.(fc[12])\.", r"blocks.\1.mlp.\2."),
    (r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"layernorm\.", "norm."),
]
_HF_QKV = re.compile(r"(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)$")
_QKV_ORDER = {"query": 0, "q_proj": 0, "key": 1, "k_proj": 1, "value": 2, "v_proj": 2}


def _from_hf(state: dict[str, torch.Tensor], prefix: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], list[torch.Tensor | None]] = {}
    unused = []
    for key, value in state.items():
        if not key.startswith(prefix):
            unused.append(key)
            continue
        name = key[len(prefix):]
        if m := _HF_QKV.match(name):
            qkv.setdefault((m[1], m[3]), [None, None, None])[_QKV_ORDER[m[2]]] = value
            continue
        for pattern, repl in _HF_RENAMES:
            new, n = re.subn("^" + pattern, repl, name)
            if n:
                out[new] = value
                break
        else:
            out["unmapped." + name] = value  # reported as unexpected by the strict load
    for (block, kind), parts in qkv.items():
        if any(p is None for p in parts):
            out[f"incomplete.blocks.{block}.attn.qkv.{kind}"] = parts[0]
        else:
            out[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)
    return out, unused


def convert_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Map any supported checkpoint onto :class:`ASTBackbone` names.

    Returns the mapped state, the format (``"ast"``, ``"hf"`` or ``"plain"``) and the keys left out
    (classification heads).
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    hf = [k for k in state if k.endswith("embeddings.cls_token")]
    if hf:
        out, unused = _from_hf(state, hf[0][: -len("embeddings.cls_token")])
        fmt = "hf"
    else:
        fmt = "ast" if any(k.startswith("v.") for k in state) else "plain"
        prefix = "v." if fmt == "ast" else ""
        out, unused = {}, []
        for key, value in state.items():
            if key.startswith(prefix):
                out[key[len(prefix):]] = value
            else:
                unused.append(key)
    heads = [k for k in out if k.startswith(("head.", "head_dist."))]  # timm's ImageNet heads
    out = {k: v for k, v in out.items() if k not in heads}
    for key in unused:  # anything but a classification head is reported by the strict load
        if not key.startswith(("mlp_head.", "classifier.")):
            out["unexpected." + key] = state[key]
    unused = [k for k in unused if k.startswith(("mlp_head.", "classifier."))] + heads
    return out, fmt, unused


def _hf_config(path: Path) -> dict[str, Any]:
    config = path.parent / "config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        if data.get("model_type") == "audio-spectrogram-transformer":
            return data
    return {}


def _checkpoint_file(weights: str | Path | None) -> str | Path | None:
    """A Hugging Face model directory stands for its weights file."""
    if weights is not None and Path(weights).expanduser().is_dir():
        directory = Path(weights).expanduser()
        for name in HF_FILES:
            if (directory / name).is_file():
                return directory / name
        raise EvarError(f"{directory}: no {' or '.join(HF_FILES)} in this directory")
    return weights


class ASTEncoder(Encoder):
    """AST with EVAR's (default) or AST's own front end; see the module docstring."""

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        grid: tuple[int, int] = (12, 101),
        stride: tuple[int, int] = (10, 10),
        mlp_hidden: int = 3072,
        preprocess: str = "evar",
        pooling: str = "tokens",
        target_length: int | None = None,
    ) -> None:
        super().__init__()
        if preprocess not in PREPROCESS:
            raise EvarError(f"unknown AST preprocess {preprocess!r}; choose from {', '.join(PREPROCESS)}")
        if pooling not in POOLINGS:
            raise EvarError(f"unknown AST pooling {pooling!r}; choose from {', '.join(POOLINGS)}")
        self.sample_rate, self.embed_dim = 16000, embed_dim
        self.preprocess, self.pooling = preprocess, pooling
        self.target_length = target_length if target_length is not None else (1024 if preprocess == "ast" else None)
        self.needs_stats = preprocess == "evar"
        self.layers = tuple(f"block{i + 1}" for i in range(depth))
        self.fbank = KaldiFbank(16000, N_MELS, window="hanning")
        self.frame_hop_sec = stride[1] * self.fbank.hop_length / self.sample_rate
        self.feature_axes = (-1, -2)  # features are (B, time, frequency)
        self.backbone = ASTBackbone(embed_dim, depth, num_heads, grid, stride, mlp_hidden)
        self.register_buffer("stats", torch.tensor(AUDIOSET_STATS if preprocess == "ast" else (0.0, 1.0)))
        self.checkpoint_format: str | None = None

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, num_heads: int | None = None, stride: int | None = None, **options: Any
    ) -> "ASTEncoder":
        """Build the architecture the checkpoint describes and load it strictly.

        Heads default to ``embed_dim // 64`` (DeiT) and strides to 10, unless a Hugging Face
        ``config.json`` beside the file says otherwise.
        """
        path = Path(path)
        state, fmt, _ = convert_state_dict(load_state_dict(path))
        if "pos_embed" not in state or "patch_embed.proj.weight" not in state:
            raise EvarError(f"{path}: not an AST checkpoint (no position or patch embedding among {list(state)[:4]})")
        hf = _hf_config(path) if fmt == "hf" else {}
        dim = state["pos_embed"].shape[-1]
        heads = num_heads or hf.get("num_attention_heads") or dim // 64
        strides = (stride, stride) if stride else (hf.get("frequency_stride", 10), hf.get("time_stride", 10))
        f0 = (N_MELS - PATCH) // strides[0] + 1
        n = state["pos_embed"].shape[1] - 2
        if n % f0:
            raise EvarError(f"{path}: {n} position embeddings do not fit {f0} frequency rows (stride {strides[0]}); pass stride=")
        try:
            depth, mlp_hidden = block_geometry(state)
            encoder = cls(dim, depth, heads, (f0, n // f0), strides, mlp_hidden, **options)
        except (ValueError, RuntimeError) as exc:
            raise EvarError(f"{path}: not a loadable AST checkpoint ({exc})") from exc
        encoder.weights_sha256 = load_weights(encoder.backbone, path, "loadable AST", state)
        encoder.checkpoint_format = fmt
        return encoder

    def set_stats(self, mean: float, std: float) -> None:
        if not self.needs_stats:
            raise EvarError("AST with preprocess='ast' uses AudioSet statistics; it takes no task statistics")
        self.stats = torch.tensor([float(mean), float(std)], device=self.stats.device)

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """Kaldi fbank ``(B, frames, 128)`` of the mean-removed waveforms, before normalisation."""
        return self.fbank(wav - wav.mean(dim=-1, keepdim=True))

    def _hidden(self, features: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """Every block's output for a batch of fbanks: padded or cropped (``target_length``), normalised."""
        if self.target_length is not None:
            features = F.pad(features, (0, 0, 0, self.target_length - features.shape[1]))  # a negative pad crops
        return self.backbone((features - self.stats[0]) / (2 * self.stats[1]))

    def _frames(self, hidden: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """One block's output after the final norm as frames: the token mean ``(B, 1, D)`` (``tokens``)
        or the patch tokens averaged over the frequency rows, one frame per time column ``(B, T', D)``."""
        normed = self.backbone.norm(hidden)
        if self.pooling == "tokens":
            return ((normed[:, 0] + normed[:, 1]) / 2).unsqueeze(1)
        f, t = grid
        return normed[:, 2:].reshape(normed.shape[0], f, t, -1).mean(dim=1)

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Centre of each patch column: the middle of its 16 fbank frames."""
        columns = torch.arange(n_frames, dtype=torch.float32)
        stride = self.backbone.patch_embed.stride[1]
        return self.fbank.frame_centre_sec(columns * stride + (PATCH - 1) / 2)

    def forward_from_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, (f, t) = self._hidden(features)
        frames = self._frames(hidden[-1], (f, t))
        timestamps = self.frame_timestamps(t)
        return frames, timestamps.mean().reshape(1) if self.pooling == "tokens" else timestamps

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames: the clip's token mean as one frame at the middle of the patch span (``tokens``,
        as EVAR's ``encode_frames``), else one patch-column frame every ``frame_hop_sec``."""
        return self.forward_from_features(self.features(wav))

    def forward_layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        hidden, grid = self._hidden(self.features(wav))
        return [self._frames(h, grid) for h in hidden]

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        """The single token frame (``tokens``), the mean (``mean``) or EVAR's mean+max over time."""
        return mean_max_pool(frames) if self.pooling == "mean_max" else frames.mean(dim=1)

    def layer_pool(self, frames: torch.Tensor) -> torch.Tensor:
        """Layers pool like the clip embedding: EUSIPCO's AST-Fusion takes each layer's token mean."""
        return self.pool(frames)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(), "preprocess": self.preprocess, "pooling": self.pooling,
            "target_length": self.target_length, "stride": list(self.backbone.patch_embed.stride),
            "fbank": {"n_mels": N_MELS, "window": "hanning", "frame_ms": 25.0, "shift_ms": 10.0},
            "weights_sha256": self.weights_sha256,
        }


@register_encoder(
    "ast", sample_rate=16000, embed_dim=768, weights=AST_WEIGHTS,
    finetune=dict(lr=2.0, batch_size=64, warmup_epochs=4, freq_mask=24, time_mask=96, rrc=True),  # config/ast.yaml
    description="AST (Interspeech 2021), AudioSet 0.4593 checkpoint; mean of class+distillation tokens",
)
def build_ast(
    weights: str | None = None,
    preprocess: str = "evar",
    pooling: str = "tokens",
    target_length: int | None = None,
    stride: int | None = None,
    num_heads: int | None = None,
    allow_download: bool = True,
) -> ASTEncoder:
    """AST from the official checkpoint (or ``weights``: an AST ``.pth``, a Hugging Face file or directory)."""
    path = resolve_weights(AST_WEIGHTS, _checkpoint_file(weights), allow_download=allow_download)
    return ASTEncoder.from_checkpoint(
        path, num_heads=num_heads, stride=stride, preprocess=preprocess, pooling=pooling, target_length=target_length
    )
