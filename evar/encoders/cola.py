"""COLA (Saeed, Grangier and Zeghidour, ICASSP 2021), with weights from evar's own pre-training.

The authors released TensorFlow code (google-research/google-research ``cola/``) but no weights, so ``cola`` and
``cola_byola`` need ``--weights`` from ``evar pretrain cola`` (:func:`evar.encoders.cola_pretrain.pretrain_cola`).

Front end, as ``cola/data.py``: 25 ms periodic-Hann frames every 10 ms without padding, 1024-point FFT magnitude,
64 HTK mel bands 60-7800 Hz with TensorFlow's triangles (built in mel space), clipped to [1e-5, 1e8], natural log.
Evaluation, as ``cola/supervised.py``: the clip is cut into 0.98-s windows (the last one zero-padded), each window
is L2-normalised and gives a 96x64 log-mel and one embedding (a frame of ``forward_frames``); the clip embedding
is the mean over windows (the original averages its classifier outputs over windows; ``pool="mean_max"`` gives
EVAR's pooling instead).

Backbones:
* ``efficientnet_b0`` (the paper): EfficientNet-B0 (transformers' ``EfficientNetModel``, one input channel) on the
  log-mel as a time x frequency image, global max pooling -> 1280-d. Like Keras' EfficientNetB0 that the original
  uses, the input is scaled by 1/255 before the stem and batch norms use eps 1e-3 and momentum 0.99 (Keras sense).
* ``byola``: the AudioNTT2020 network of BYOL-A (``evar.encoders.byola``) that the BYOL-A paper used for its COLA
  re-implementation, on the same log-mel as a frequency x time image; its frames are pooled with mean+max -> d.

Weights: evar's safetensors file (keys ``backbone.*``), or the training checkpoint of :mod:`evar.encoders.cola_pretrain`
(its projection head and bilinear matrix are ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evar.errors import EvarError
from evar.frontends.logmel import mel_filter_bank
from evar.encoders.weights import load_state_dict
from evar.io import file_sha256
from evar.encoders import register_encoder
from evar.encoders.base import Encoder, mean_max_pool
from evar.encoders.byola import AudioNTT2020

SAMPLE_RATE = 16000
FRAME, STEP, N_FFT, N_MELS = 400, 160, 1024, 64
#: pre-training segment (cola/data.py extract_window) and evaluation window (supervised.py: 98 frames x 160)
SEGMENT, EVAL_WINDOW = 16000, 98 * 160
BACKBONES = ("efficientnet_b0", "byola")
POOLS = ("mean", "mean_max")
PRETRAIN_HINT = ("no official COLA weights exist (the authors released code only); pre-train them with "
                 "`evar pretrain cola --audio-dir DIR --out cola.safetensors{backbone}` and pass --weights cola.safetensors")


class ColaLogMel(nn.Module):
    """COLA's log-mel, ``(N, samples) -> (N, frames, 64)`` with ``frames = 1 + (samples - 400) // 160``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(FRAME), persistent=False)
        fb = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=N_MELS, min_frequency=60.0,
                             max_frequency=7800.0, sampling_rate=SAMPLE_RATE, norm=None, mel_scale="htk",
                             triangularize_in_mel_space=True)
        self.register_buffer("mel_fb", torch.tensor(fb, dtype=torch.float32), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.shape[-1] < FRAME:
            raise EvarError(f"COLA needs at least {FRAME} samples, got {wav.shape[-1]}")
        frames = wav.unfold(-1, FRAME, STEP) * self.window
        magnitude = torch.fft.rfft(frames, n=N_FFT).abs()
        return torch.matmul(magnitude, self.mel_fb).clamp(1e-5, 1e8).log()


def l2_normalise(wav: torch.Tensor) -> torch.Tensor:
    """``tf.math.l2_normalize(x, axis=-1, epsilon=1e-9)``."""
    return wav * torch.rsqrt(wav.pow(2).sum(dim=-1, keepdim=True).clamp_min(1e-9))


def _keras_init(module: nn.Module) -> None:
    """Keras EfficientNet's initialisation: convolutions truncated-normal with variance 2 / fan_out
    (fan_out = kernel area x output channels per group), zero biases, unit batch-norm scales."""
    if isinstance(module, nn.Conv2d):
        fan_out = module.out_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        std = (2.0 / fan_out) ** 0.5 / 0.87962566103423978  # Keras' correction for truncation at 2 std
        with torch.no_grad():  # redraw beyond 2 std (torch's trunc_normal_ is ~100x slower on CPU)
            weight = torch.randn_like(module.weight)
            while (outside := weight.abs() > 2).any():
                weight[outside] = torch.randn(int(outside.sum()))
            module.weight.copy_(weight * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class EfficientNetB0Backbone(nn.Module):
    """EfficientNet-B0 on a ``(N, time, 64)`` log-mel, global max pooling -> ``(N, 1280)``."""

    layers = ("stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "top")
    #: Keras' EfficientNet starts with Rescaling(1/255) (its Normalization layer is the identity without weights)
    input_scale = 1.0 / 255.0

    def __init__(self) -> None:
        super().__init__()
        from transformers import EfficientNetConfig, EfficientNetModel

        config = EfficientNetConfig(num_channels=1, width_coefficient=1.0, depth_coefficient=1.0, hidden_dim=1280,
                                    dropout_rate=0.2, drop_connect_rate=0.2, batch_norm_eps=1e-3,
                                    batch_norm_momentum=0.01)  # PyTorch's momentum = 1 - Keras' 0.99
        self.net = EfficientNetModel(config)
        self.net.apply(_keras_init)  # transformers' init (N(0, 0.02) batch-norm scales) is for loading weights only
        self.dim = 1280
        ends, total = [], 0
        for repeats in config.num_block_repeats:
            total += repeats
            ends.append(total)  # hidden_states[k] is the output of block k (index 0 is the stem)
        self.stage_ends = tuple(ends)

    def _encode(self, logmel: torch.Tensor, all_layers: bool) -> Any:
        stem = self.net.embeddings(logmel.unsqueeze(1) * self.input_scale)
        return self.net.encoder(stem, output_hidden_states=all_layers)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self._encode(logmel, False).last_hidden_state.amax(dim=(2, 3))

    def forward_layers(self, logmel: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's output and the top layer, globally max-pooled: ``(N, C)`` each."""
        out = self._encode(logmel, True)
        maps = [out.hidden_states[i] for i in self.stage_ends] + [out.last_hidden_state]
        return [m.amax(dim=(2, 3)) for m in maps]


class AudioNTTBackbone(nn.Module):
    """BYOL-A's AudioNTT2020 on a ``(N, time, 64)`` log-mel; frames pooled with mean+max -> ``(N, d)``."""

    layers = ("conv1", "conv2", "conv3", "fc1", "fc2")

    def __init__(self, d: int = 512) -> None:
        super().__init__()
        self.net = AudioNTT2020(n_mels=N_MELS, d=d)
        self.dim = d

    @staticmethod
    def _image(logmel: torch.Tensor) -> torch.Tensor:
        return logmel.transpose(1, 2).unsqueeze(1)  # (N, 1, 64, time): BYOL-A's orientation

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return mean_max_pool(self.net(self._image(logmel)))

    def forward_layers(self, logmel: torch.Tensor) -> list[torch.Tensor]:
        return [mean_max_pool(t) for t in self.net.forward_layers(self._image(logmel))]


def build_backbone(name: str, d: int = 512) -> nn.Module:
    """The COLA backbone ``name`` (``efficientnet_b0`` or ``byola`` with width ``d``)."""
    if name == "efficientnet_b0":
        return EfficientNetB0Backbone()
    if name == "byola":
        return AudioNTTBackbone(d)
    raise EvarError(f"unknown COLA backbone {name!r}; choose from {', '.join(BACKBONES)}")


class ColaModel(nn.Module):
    """Pre-training network: backbone, projection head (dense 512, layer norm, tanh) and bilinear similarity."""

    def __init__(self, backbone: str = "efficientnet_b0", d: int = 512, embedding_dim: int = 512) -> None:
        super().__init__()
        self.logmel = ColaLogMel()
        self.backbone = build_backbone(backbone, d)
        self.projection = nn.Linear(self.backbone.dim, embedding_dim)
        self.layer_norm = nn.LayerNorm(embedding_dim, eps=1e-3)  # Keras LayerNormalization's epsilon
        self.bilinear = nn.Parameter(0.05 * torch.randn(embedding_dim, embedding_dim))  # Keras random_normal
        nn.init.xavier_uniform_(self.projection.weight)  # Keras Dense: Glorot uniform, zero bias
        nn.init.zeros_(self.projection.bias)

    def embed(self, segments: torch.Tensor) -> torch.Tensor:
        """Projected embeddings ``(N, embedding_dim)`` of waveform segments ``(N, samples)``."""
        return torch.tanh(self.layer_norm(self.projection(self.backbone(self.logmel(segments)))))

    def forward(self, anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """Similarity logits ``(B, B)``: anchor i against every positive; both pass the network in one batch."""
        embeddings = self.embed(torch.cat([anchors, positives]))
        a, p = embeddings.split(anchors.shape[0])
        return bilinear_similarity(a, p, self.bilinear)


def bilinear_similarity(anchors: torch.Tensor, positives: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """COLA's ``anchors @ (W @ positives^T)``: ``s[i, j] = a_i^T W p_j``."""
    return anchors @ (w @ positives.T)


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each anchor against its own positive (the diagonal) among the batch's positives."""
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def _backbone_state(path: Path, backbone: str) -> dict[str, torch.Tensor]:
    """The ``backbone.*`` tensors of an evar COLA weights file or training checkpoint."""
    state = load_state_dict(path)
    own = {k: v for k, v in state.items() if k.startswith("backbone.")}
    foreign = [k for k in state if not k.startswith(("backbone.", "projection.", "layer_norm.", "bilinear"))]
    if not own or foreign:
        raise EvarError(f"{path}: not an evar COLA checkpoint (expected backbone.* keys"
                        f"{', found ' + ', '.join(foreign[:3]) if foreign else ''}); {PRETRAIN_HINT.format(backbone='')}")
    return own


class ColaEncoder(Encoder):
    """COLA encoder: one embedding per 0.98-s window, clip embedding = mean over windows."""

    def __init__(self, backbone: str = "efficientnet_b0", d: int = 512, pool: str = "mean") -> None:
        super().__init__()
        if pool not in POOLS:
            raise EvarError(f"unknown COLA pooling {pool!r}; choose from {', '.join(POOLS)}")
        self.logmel = ColaLogMel()
        self.backbone = build_backbone(backbone, d)
        self.backbone_name, self.pool_name = backbone, pool
        self.sample_rate, self.embed_dim = SAMPLE_RATE, self.backbone.dim
        self.layers = self.backbone.layers
        self.frame_hop_sec = EVAL_WINDOW / SAMPLE_RATE

    def load_checkpoint(self, path: str | Path) -> None:
        """Load evar COLA weights strictly (backbone keys only)."""
        path = Path(path)
        hint = f"{path}: not a COLA {self.backbone_name} checkpoint"
        try:
            missing, unexpected = self.load_state_dict(_backbone_state(path, self.backbone_name), strict=False)
        except RuntimeError as exc:  # shape mismatch
            raise EvarError(f"{hint} ({str(exc).splitlines()[-1].strip()})") from exc
        if missing or unexpected:
            raise EvarError(f"{hint} (missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.weights_sha256 = file_sha256(path)

    def _windows(self, wav: torch.Tensor) -> torch.Tensor:
        """``(B, samples) -> (B * n, 15680)`` L2-normalised windows, the last one zero-padded."""
        n = max(1, -(-wav.shape[-1] // EVAL_WINDOW))
        wav = F.pad(wav, (0, n * EVAL_WINDOW - wav.shape[-1]))
        return l2_normalise(wav.reshape(-1, EVAL_WINDOW))

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self.backbone(self.logmel(self._windows(wav))).reshape(wav.shape[0], -1, self.embed_dim)
        return frames, self.frame_timestamps(frames.shape[1])

    def forward_layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        """Each backbone layer pooled per window: ``(B, windows, C_l)``."""
        outputs = self.backbone.forward_layers(self.logmel(self._windows(wav)))
        return [t.reshape(wav.shape[0], -1, t.shape[-1]) for t in outputs]

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.mean(dim=1) if self.pool_name == "mean" else mean_max_pool(frames)

    def layer_pool(self, frames: torch.Tensor) -> torch.Tensor:
        """Fused layers are pooled over windows like the clip embedding (COLA averages windows)."""
        return self.pool(frames)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "backbone": self.backbone_name, "pool": self.pool_name,
                "weights_sha256": self.weights_sha256}


def _builder(name: str, backbone: str):
    def build(weights: str | None = None, pool: str = "mean") -> ColaEncoder:
        if weights is None:
            extra = "" if backbone == "efficientnet_b0" else f" --backbone {backbone}"
            raise EvarError(f"{name}: {PRETRAIN_HINT.format(backbone=extra)}")
        path = Path(weights).expanduser()
        if not path.is_file():
            raise EvarError(f"weights file not found: {path} (make it with `evar pretrain cola`)")
        state = _backbone_state(path, backbone)
        found = "byola" if "backbone.net.fc.0.weight" in state else "efficientnet_b0"
        if found != backbone:
            raise EvarError(f"{path}: not a COLA {backbone} checkpoint (it holds the {found} backbone; "
                            f"use {'cola_byola' if found == 'byola' else 'cola'})")
        d = state["backbone.net.fc.0.weight"].shape[0] if backbone == "byola" else 512  # the width from the file
        encoder = ColaEncoder(backbone, d=d, pool=pool)
        encoder.load_checkpoint(path)
        return encoder.eval()

    build.__doc__ = f"COLA with the {backbone} backbone and evar-pretrained weights."
    return build


register_encoder("cola", sample_rate=SAMPLE_RATE, embed_dim=1280,
                 description="COLA (ICASSP 2021) EfficientNet-B0, 1280-d; weights from `evar pretrain cola`",
                 weights_note="evar pretrain cola")(
    _builder("cola", "efficientnet_b0"))
register_encoder("cola_byola", sample_rate=SAMPLE_RATE, embed_dim=512,
                 description="COLA with BYOL-A's AudioNTT2020 network (BYOL-A paper's re-implementation); "
                             "weights from `evar pretrain cola --backbone byola`",
                 weights_note="evar pretrain cola")(_builder("cola_byola", "byola"))
