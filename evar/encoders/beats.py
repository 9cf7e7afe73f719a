"""BEATs (Chen et al., ICML 2023) in plain torch: ``beats`` (BEATs_iter3) and ``beats_plus`` (BEATs_iter3+ AS2M).

Re-implemented from microsoft/unilm ``beats/`` (BEATs.py, backbone.py at 732d834) and loading its checkpoint
format, ``{"cfg": BEATsConfig fields, "model": state_dict}``, strictly. As the original's ``extract_features`` and
EVAR's ``AR_BEATs`` (88ba772): 16-kHz audio × 2^15 → Kaldi fbank (128 bins, 25 ms povey window, 10 ms hop) →
``(fbank − 15.41663) / (2 · 6.55582)`` → 16 × 16 patches (a Conv2d; fbank frames beyond a multiple of 16 dropped)
in time-major order (8 frequency patches per 160 ms) → LayerNorm → projection → a convolutional position embedding
(weight-normed, 128 taps, 16 groups, GELU) → LayerNorm → post-LN transformer layers with DeepNorm residual
scaling and a gated, bucketed relative position bias shared by all layers.

EVAR averages the last layer over all patches (768-d). evar's frames are each 160-ms step's mean over its
frequency patches, so the clip embedding (their mean) is EVAR's; named layers ``embed``, ``layer1`` … ``layerN``
(the transformer's input and each layer's output) are grouped the same way. A fine-tuned checkpoint's
predictor is loaded but not used: the embeddings are the encoder's.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from evar.encoders import register_encoder
from evar.encoders.base import Encoder
from evar.encoders.weights import WeightFile, load_checkpoint, load_weights, resolve_weights
from evar.errors import EvarError
from evar.frontends.kaldi import KaldiFbank

SOURCE = "https://github.com/microsoft/unilm/tree/master/beats (README: pre-trained model links)"
WEIGHTS = {
    "beats": WeightFile("BEATs_iter3.pt", "https://1drv.ms/u/s!AqeByhGUtINrgcpxJUNDxg4eU0r-vA?e=qezPJ5", None,
                        SOURCE, "MIT (microsoft/unilm)"),
    "beats_plus": WeightFile("BEATs_iter3_plus_AS2M.pt", "https://1drv.ms/u/s!AqeByhGUtINrgcpke6_lRSZEKD5j2Q?e=A3FpOf",
                             None, SOURCE, "MIT (microsoft/unilm)"),
}
SAMPLE_RATE = 16000
FBANK_MEAN, FBANK_STD = 15.41663, 6.55582
#: BEATsConfig's defaults (BEATs.py); a checkpoint's ``cfg`` overrides them
DEFAULT_CFG = dict(input_patch_size=-1, embed_dim=512, conv_bias=False, encoder_layers=12, encoder_embed_dim=768,
                   encoder_ffn_embed_dim=3072, encoder_attention_heads=12, activation_fn="gelu",
                   layer_norm_first=False, deep_norm=False, conv_pos=128, conv_pos_groups=16,
                   relative_position_embedding=False, num_buckets=320, max_distance=1280, gru_rel_pos=False,
                   finetuned_model=False, predictor_class=527)
QUERY_SCALE_ALPHA = 32  # the original scales q by 1/32 and the logits back by 32 (softmax-invariant here)


def relative_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """``(length, length)`` bucket of key position minus query position (T5-style, bidirectional)."""
    position = torch.arange(length)
    relative = position[None, :] - position[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    exact = half // 2
    large = exact + (torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact)
                     * (half - exact)).long()
    return buckets + torch.where(distance < exact, distance, large.clamp(max=half - 1))


class PositionalConv(nn.Module):
    """The weight-normed grouped Conv1d of the position embedding (``weight_g``, ``weight_v``, ``bias``)."""

    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.kernel, self.groups = kernel, groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.zeros(dim, dim // groups, kernel))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D, T) -> (B, D, T)``: same padding, the extra frame of an even kernel dropped, GELU."""
        weight = self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))
        out = nn.functional.conv1d(x, weight, self.bias, padding=self.kernel // 2, groups=self.groups)
        return nn.functional.gelu(out[:, :, :-1] if self.kernel % 2 == 0 else out)


class RelativeAttention(nn.Module):
    """BEATs' self-attention with the gated relative position bias (``grep_linear``, ``grep_a``)."""

    def __init__(self, dim: int, heads: int, buckets: int, gated: bool, owns_bias: bool) -> None:
        super().__init__()
        self.heads, self.head_dim, self.gated = heads, dim // heads, gated
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))
        if owns_bias:
            self.relative_attention_bias = nn.Embedding(buckets, heads)
        if gated:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None) -> torch.Tensor:
        batch, length, dim = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, d)

        query = split(self.q_proj(x))
        logits = (query * self.head_dim ** -0.5) @ split(self.k_proj(x)).transpose(2, 3)
        if position_bias is not None:
            bias = position_bias
            if self.gated:
                gate_a, gate_b = torch.sigmoid(self.grep_linear(query).view(batch, self.heads, length, 2, 4).sum(-1)
                                               ).chunk(2, dim=-1)
                bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * position_bias
            logits = logits + bias
        out = torch.softmax(logits, dim=-1) @ split(self.v_proj(x))
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class EncoderLayer(nn.Module):
    """A post-LN layer with DeepNorm's residual scaling ``alpha = (2 · layers)^(1/4)``."""

    def __init__(self, cfg: dict, owns_bias: bool) -> None:
        super().__init__()
        dim = cfg["encoder_embed_dim"]
        self.self_attn = RelativeAttention(dim, cfg["encoder_attention_heads"], cfg["num_buckets"],
                                           cfg["gru_rel_pos"], owns_bias)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg["encoder_ffn_embed_dim"])
        self.fc2 = nn.Linear(cfg["encoder_ffn_embed_dim"], dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.alpha = math.pow(2 * cfg["encoder_layers"], 1 / 4) if cfg["deep_norm"] else 1.0

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None) -> torch.Tensor:
        x = self.self_attn_layer_norm(x * self.alpha + self.self_attn(x, position_bias))
        return self.final_layer_norm(x * self.alpha + self.fc2(nn.functional.gelu(self.fc1(x))))


class BEATsBackbone(nn.Module):
    """BEATs' network in the checkpoint's key format (``patch_embedding``, ``layer_norm``, ``post_extract_proj``,
    ``encoder.*``, ``predictor`` for fine-tuned models)."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        unknown = sorted(set(cfg) - set(DEFAULT_CFG) - {"dropout", "attention_dropout", "activation_dropout",
                                                        "encoder_layerdrop", "dropout_input", "predictor_dropout",
                                                        "layer_wise_gradient_decay_ratio"})
        cfg = {**DEFAULT_CFG, **cfg}
        if cfg["layer_norm_first"] or cfg["activation_fn"] != "gelu" or cfg["input_patch_size"] < 1:
            raise EvarError(f"BEATs: unsupported configuration (layer_norm_first={cfg['layer_norm_first']}, "
                            f"activation_fn={cfg['activation_fn']!r}, input_patch_size={cfg['input_patch_size']}); "
                            "the released checkpoints are post-LN, GELU, 16 x 16 patches")
        if unknown:
            raise EvarError(f"BEATs: unknown configuration fields {unknown}")
        self.cfg, dim, patch = cfg, cfg["encoder_embed_dim"], cfg["input_patch_size"]
        self.patch_embedding = nn.Conv2d(1, cfg["embed_dim"], patch, patch, bias=cfg["conv_bias"])
        self.layer_norm = nn.LayerNorm(cfg["embed_dim"])
        self.post_extract_proj = nn.Linear(cfg["embed_dim"], dim) if cfg["embed_dim"] != dim else None
        self.encoder = nn.Module()
        self.encoder.pos_conv = nn.Sequential(PositionalConv(dim, cfg["conv_pos"], cfg["conv_pos_groups"]))
        self.encoder.layers = nn.ModuleList(
            [EncoderLayer(cfg, owns_bias=cfg["relative_position_embedding"]) for _ in range(cfg["encoder_layers"])])
        if cfg["relative_position_embedding"]:  # one table, shared by every layer (as the original ties them)
            for layer in self.encoder.layers[1:]:
                layer.self_attn.relative_attention_bias = self.encoder.layers[0].self_attn.relative_attention_bias
        self.encoder.layer_norm = nn.LayerNorm(dim)
        if cfg["finetuned_model"]:
            self.predictor = nn.Linear(dim, cfg["predictor_class"])

    def states(self, fbank: torch.Tensor) -> list[torch.Tensor]:
        """The transformer's input and every layer's output, ``(B, patches, D)``, for normalised fbank ``(B, T, 128)``."""
        x = self.patch_embedding(fbank.unsqueeze(1))
        x = self.layer_norm(x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2))
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        x = self.encoder.layer_norm(x + self.encoder.pos_conv(x.transpose(1, 2)).transpose(1, 2))
        bias = None
        if self.cfg["relative_position_embedding"]:
            table = self.encoder.layers[0].self_attn.relative_attention_bias
            buckets = relative_buckets(x.shape[1], self.cfg["num_buckets"], self.cfg["max_distance"])
            bias = table(buckets.to(x.device)).permute(2, 0, 1).unsqueeze(0)  # (1, H, T, T)
        states = [x]
        for layer in self.encoder.layers:
            x = layer(x, bias)
            states.append(x)
        return states


class BEATsEncoder(Encoder):
    """BEATs' patch embeddings grouped per 160-ms step (mean over the step's frequency patches)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, backbone: BEATsBackbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.fbank = KaldiFbank(SAMPLE_RATE, num_mel_bins=128, window="povey")
        self.patch = backbone.cfg["input_patch_size"]
        self.freq_patches = 128 // self.patch
        self.embed_dim = backbone.cfg["encoder_embed_dim"]
        self.layers = ("embed", *(f"layer{i}" for i in range(1, backbone.cfg["encoder_layers"] + 1)))
        self.frame_hop_sec = self.patch * self.fbank.hop_length / SAMPLE_RATE

    def _steps(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, T·F, D)`` time-major patches → ``(B, T, D)``, the mean of each step's F frequency patches."""
        return patches.view(patches.shape[0], -1, self.freq_patches, patches.shape[2]).mean(dim=2)

    def _states(self, wav: torch.Tensor) -> list[torch.Tensor]:
        fbank = (self.fbank(wav * 2 ** 15) - FBANK_MEAN) / (2 * FBANK_STD)
        if fbank.shape[1] < self.patch:
            raise EvarError(f"BEATs needs at least {self.patch} fbank frames (0.175 s of audio); got {fbank.shape[1]}")
        return self.backbone.states(fbank)

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self._steps(self._states(wav)[-1])
        return frames, self.frame_timestamps(frames.shape[1])

    def forward_layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        return [self._steps(state) for state in self._states(wav)]

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Centre of step t's 16 fbank frames: ``(16 t + 7.5) · 10 ms + 12.5 ms``."""
        first = self.fbank.frame_centre_sec((self.patch - 1) / 2)
        return first + torch.arange(n_frames, dtype=torch.float32) * self.frame_hop_sec

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.mean(dim=1)

    layer_pool = pool

    def config(self) -> dict[str, Any]:
        cfg = {k: v for k, v in self.backbone.cfg.items() if k in DEFAULT_CFG}
        return {**super().config(), "beats_cfg": cfg}


def load_beats(path: str) -> BEATsEncoder:
    """A BEATs checkpoint ``{"cfg", "model"}`` loaded strictly (keys and shapes exactly the network's)."""
    checkpoint = load_checkpoint(path)
    if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("cfg"), dict)
            and isinstance(checkpoint.get("model"), dict)):
        raise EvarError(f"{path}: not a BEATs checkpoint (expected a dict with 'cfg' and 'model')")
    backbone = BEATsBackbone(checkpoint["cfg"])
    sha256 = load_weights(backbone, path, "BEATs", state=checkpoint["model"])
    encoder = BEATsEncoder(backbone)
    encoder.weights_sha256 = sha256
    return encoder.eval()


def _builder(name: str):
    def build(weights: str | None = None, allow_download: bool = False) -> BEATsEncoder:
        # the official files are OneDrive shares (no direct link): pass the file, or place it in the cache
        return load_beats(str(resolve_weights(WEIGHTS[name], weights, allow_download=False)))

    build.__doc__ = f"BEATs {WEIGHTS[name].filename} (from {SOURCE}; pass weights=PATH)."
    return build


register_encoder("beats", sample_rate=SAMPLE_RATE, embed_dim=768, weights=WEIGHTS["beats"],
                 description="BEATs iter3 (AudioSet pre-trained), last layer, 160-ms steps")(_builder("beats"))
register_encoder("beats_plus", sample_rate=SAMPLE_RATE, embed_dim=768, weights=WEIGHTS["beats_plus"],
                 description="BEATs iter3+ (AS2M), last layer, 160-ms steps")(_builder("beats_plus"))
