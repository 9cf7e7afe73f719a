"""EAT (Chen et al., IJCAI 2024) in plain torch: ``eat`` (base, 768-d), from the Hugging Face hub's safetensors
folders (``worstchan/EAT-base_epoch30_pretrain`` and the other EAT uploads) without ``trust_remote_code``.

Re-implemented from the hub model's own code (``configuration_eat.py``, ``modeling_eat.py``, ``eat_model.py``,
``model_core.py``) and EVAR's ``AR_EAT`` (nttcslab/eval-audio-repr 88ba772), loading the folder's
``model.safetensors`` (or ``pytorch_model.bin``; keys ``model.*`` of ``EATModel``) strictly with its ``config.json``. As EVAR: each clip minus
its mean → Kaldi fbank (128 mel bins, Hanning, 25 / 10 ms, no dither) → zero-padded or cut to 1024 frames (10.24 s)
→ ``(x + 4.268) / (4.569 · 2)`` → 16 × 16 patches (time-major tokens ``t · 8 + f``) plus the fixed 2-D sine-cosine
positions (frequency half first, as the code builds them; stored in the checkpoint) → one extra (CLS) token in front
→ LayerNorm → post-norm blocks (``layer_norm_first`` false: ``norm1(x + attn(x))``, then ``norm2(r + mlp(r))``,
exact GELU, float32 softmax) → every token (``extract_features``). Clip embedding: the mean over all 513 tokens,
the extra token included (EVAR's). Frames: each 160-ms step's 8 frequency patches averaged (the extra token left
out), for the first 10.24 s as the model sees them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from evar.encoders import register_encoder
from evar.encoders.base import Encoder
from evar.encoders.vit import Mlp, block_geometry
from evar.errors import EvarError
from evar.frontends.kaldi import KaldiFbank

DEFAULT_CHECKPOINT = "worstchan/EAT-base_epoch30_pretrain"
SAMPLE_RATE, N_MELS, TARGET_FRAMES = 16000, 128, 1024
NORM_MEAN, NORM_STD = -4.268, 4.569
PREFIX = "model."


class PostNormBlock(nn.Module):
    """The hub code's ``AltBlock`` with ``layer_norm_first`` false (keys ``norm1``, ``attn.qkv``, ``attn.proj``,
    ``norm2``, ``mlp.fc1``, ``mlp.fc2``)."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, eps: float, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.attn.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)
        r = self.norm1(x + self.attn.proj(attended))
        return self.norm2(r + self.mlp(r))


class EATBackbone(nn.Module):
    """The hub code's ``EAT`` (pre-training variant) under its state-dict names."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_hidden: int, patch: int, positions: int,
                 eps: float, qkv_bias: bool) -> None:
        super().__init__()
        self.local_encoder = nn.Module()
        self.local_encoder.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)
        self.extra_tokens = nn.Parameter(torch.zeros(1, 1, dim))
        self.fixed_positional_encoder = nn.Module()
        self.fixed_positional_encoder.positions = nn.Parameter(torch.zeros(1, positions, dim), requires_grad=False)
        self.pre_norm = nn.LayerNorm(dim, eps=eps)
        self.blocks = nn.ModuleList(PostNormBlock(dim, num_heads, mlp_hidden, eps, qkv_bias) for _ in range(depth))
        self.patch = patch

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output ``(B, 1 + patches, D)`` for normalised fbanks ``x`` ``(B, 1, frames, mels)``."""
        tokens = self.local_encoder.proj(x).flatten(2).transpose(1, 2)
        tokens = tokens + self.fixed_positional_encoder.positions[:, :tokens.shape[1]]
        h = self.pre_norm(torch.cat([self.extra_tokens.expand(len(x), -1, -1), tokens], dim=1))
        outputs = []
        for block in self.blocks:
            h = block(h)
            outputs.append(h)
        return outputs


class EATEncoder(Encoder):
    """EAT's tokens: the clip embedding is their mean (EVAR's), frames the per-step means of the patch tokens."""

    sample_rate = SAMPLE_RATE

    def __init__(self, backbone: EATBackbone, source: dict[str, Any]) -> None:
        super().__init__()
        self.backbone, self.source = backbone, dict(source)
        self.fbank = KaldiFbank(SAMPLE_RATE, num_mel_bins=N_MELS, window="hanning")
        self.embed_dim = backbone.pre_norm.normalized_shape[0]
        self.layers = tuple(f"layer{i + 1}" for i in range(len(backbone.blocks)))
        self.freq_patches = N_MELS // backbone.patch
        self.frame_hop_sec = backbone.patch * self.fbank.hop_length / SAMPLE_RATE
        self.weights_sha256 = self.source.get("weights_sha256")

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """EVAR's input: fbanks of the mean-removed clips, padded or cut to 1024 frames, normalised."""
        mel = self.fbank(wav - wav.mean(dim=1, keepdim=True))
        mel = F.pad(mel, (0, 0, 0, max(0, TARGET_FRAMES - mel.shape[1])))[:, :TARGET_FRAMES]
        return ((mel - NORM_MEAN) / (NORM_STD * 2)).unsqueeze(1)

    def _layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(self.features(wav))

    def _steps(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens (after the extra one) ``(B, T·F, D)`` → ``(B, T, D)``, each step's frequency mean."""
        patches = tokens[:, 1:]
        return patches.reshape(len(tokens), -1, self.freq_patches, tokens.shape[-1]).mean(dim=2)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self._layers(wav)[-1].mean(dim=1)

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self._steps(self._layers(wav)[-1])
        return frames, self.frame_timestamps(frames.shape[1])

    def forward_layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        return [self._steps(layer) for layer in self._layers(wav)]

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Centre of each step's 16 Kaldi frames."""
        patch = self.backbone.patch
        return self.fbank.frame_centre_sec(torch.arange(n_frames, dtype=torch.float32) * patch + (patch - 1) / 2)

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.mean(dim=1)

    layer_pool = pool

    def config(self) -> dict[str, Any]:
        return {**super().config(), "model_type": "eat", "target_frames": TARGET_FRAMES, **self.source}


def load_eat_folder(folder: str | Path, source: dict[str, Any] | None = None) -> EATEncoder:
    """An EAT hub folder (``config.json`` + ``model.safetensors``), loaded strictly without its code; ``source``:
    the hub id and revision it came from (default: the folder); the record's sha256 is the loaded file's."""
    from safetensors.torch import load_file

    from evar.encoders.weights import load_checkpoint, load_weights

    folder = Path(folder).expanduser()
    config_path = folder / "config.json"
    weights_path = next((folder / name for name in ("model.safetensors", "pytorch_model.bin")
                         if (folder / name).is_file()), None)
    if not config_path.is_file() or weights_path is None:
        raise EvarError(f"{folder}: an EAT folder holds config.json and model.safetensors (or pytorch_model.bin)")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != "eat":
        raise EvarError(f"{config_path}: model_type {config.get('model_type')!r}, not an EAT configuration")
    if config.get("layer_norm_first", False) or not config.get("fixed_positions", True):
        raise EvarError(f"{config_path}: only EAT's released layout (post-norm blocks, fixed positions) is supported")
    state = load_file(str(weights_path)) if weights_path.suffix == ".safetensors" else load_checkpoint(weights_path)
    if not isinstance(state, dict):
        raise EvarError(f"{weights_path}: not a state dict")
    own = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    if config.get("model_variant", "pretrain") == "finetune":  # the classifier head is not an embedding
        own = {k: v for k, v in own.items() if not k.startswith(("fc_norm.", "head."))}
    if "local_encoder.proj.weight" not in own or "fixed_positional_encoder.positions" not in own:
        raise EvarError(f"{weights_path}: no EAT encoder (model.local_encoder.proj.weight, "
                        f"model.fixed_positional_encoder.positions) among {len(state)} tensors")
    dim, _, patch, _ = own["local_encoder.proj.weight"].shape
    try:
        depth, mlp_hidden = block_geometry(own)
        backbone = EATBackbone(dim, depth, int(config.get("num_heads", dim // 64)), mlp_hidden, patch,
                               own["fixed_positional_encoder.positions"].shape[1], float(config.get("norm_eps", 1e-6)),
                               bool(config.get("qkv_bias", True)))
    except (ValueError, RuntimeError) as exc:
        raise EvarError(f"{weights_path}: not a loadable EAT checkpoint ({exc})") from exc
    sha256 = load_weights(backbone, weights_path, "loadable EAT", own)
    record = {**(source or {"model_id": str(folder.resolve()), "revision": ""}), "weights_sha256": sha256}
    return EATEncoder(backbone, record).eval()


@register_encoder("eat", sample_rate=SAMPLE_RATE, embed_dim=768, weights_note="hub (network)",
                  description=f"EAT base (AudioSet-2M pre-training), mean of its 513 tokens (EVAR's); "
                              f"{DEFAULT_CHECKPOINT} (hub main)")
def build_eat(weights: str | None = None, allow_download: bool = True) -> EATEncoder:
    """EAT from a hub folder (``--weights FOLDER``), or ``id[@revision]`` fetched from the hub (network)."""
    from evar.encoders.hf import parse_model_id

    if weights is not None and Path(weights).expanduser().is_dir():
        return load_eat_folder(weights)
    if not allow_download:
        raise EvarError(f"eat: {DEFAULT_CHECKPOINT} is fetched from the Hugging Face hub; pass --weights FOLDER "
                        "(its config.json and model.safetensors) on a machine without network access")
    model_id, revision = parse_model_id(weights or DEFAULT_CHECKPOINT)
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(model_id, revision=revision,
                                   allow_patterns=["config.json", "*.safetensors", "pytorch_model.bin"])
    except Exception as exc:  # network, unknown id, gated repository
        raise EvarError(f"eat: cannot fetch {model_id} from the hub ({exc}); give --weights FOLDER") from exc
    return load_eat_folder(folder, {"model_id": model_id, "revision": revision or ""})
