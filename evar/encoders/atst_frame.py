"""ATST-Frame (Li, Shao & Li, IEEE/ACM TASLP 2024) in plain torch: ``atst_frame`` (EVAR's 9216-d stacking of the
12 blocks) and ``atst_frame_last`` (the last block's 768-d frames).

Re-implemented from audiossl (Audio-WestlakeU/audiossl ec3a14d, ``methods/atstframe/embedding.py``,
``audio_transformer.py`` ``FrameAST``, ``modules/transformer.py``) and loading its checkpoint format, the
PyTorch Lightning file ``atstframe_base.ckpt`` whose ``state_dict`` holds the teacher's encoder under
``model.teacher.encoder.`` (what ``load_model`` keeps), strictly. As ``get_timestamp_embedding`` /
``get_scene_embedding``: 16-kHz audio → torchaudio's MelSpectrogram (n_fft 1024, Hann 1024, hop 160, centred,
reflect, 64 HTK mels 60–7800 Hz, power) → ``10 log10(max(x, 1e-10))`` floored 80 dB below each clip's maximum →
min-max scaling with the training set's constants (−79.6482, 50.6842) to [−1, 1] → chunks of 1001 frames (10 s)
→ 64 × 4 patches flattened mel-major (a linear projection; frames beyond a multiple of 4 dropped) → the learnt
position embedding from index 1 → pre-norm blocks (no qkv bias, LayerNorm eps 1e-6) → every block's output through
the shared final LayerNorm (``norm_frame``), the 12 concatenated in block order.

Frames: one per 40-ms patch, the chunks concatenated; timestamps as the original's (``40 ms × index``, the patch's
start). Clip embedding: per chunk the mean over its patches (as the original, ``sum / (n + 1e-6)``), the chunks
averaged with equal weight. EVAR's ``AR_ATST_Frame`` calls these two functions; ``n_blocks`` 12 gives its 9216.
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
from evar.frontends.logmel import LogMelSpectrogram

SOURCE = "https://github.com/Audio-WestlakeU/audiossl/tree/main/audiossl/methods/atstframe (README: checkpoints)"
WEIGHTS = WeightFile("atstframe_base.ckpt", "https://drive.google.com/file/d/1bGJSZWlAIIJ6GL5Id5dW0PTB72DL-QDQ/view",
                     None, SOURCE, "CC BY 4.0 (the audiossl repository's LICENSE for its checkpoints)")
PREFIX = "model.teacher.encoder."
SAMPLE_RATE, N_FFT, HOP, N_MELS, F_MIN, F_MAX = 16000, 1024, 160, 64, 60.0, 7800.0
TOP_DB, DB_MIN, DB_MAX = 80.0, -79.6482, 50.6842
CHUNK_FRAMES = 1001  # 10 s: the position embedding's length
#: attention heads of the released sizes (FrameAST_small / FrameAST_base fix them; the state dict does not say)
HEADS = {("small", 384): 6, ("base", 768): 12}
PATCH_FRAMES = 4


class FrameAST(nn.Module):
    """audiossl's FrameAST encoder in its key format (``patch_embed.patch_embed``, ``mask_embed``, ``pos_embed``,
    ``blocks.N``, ``norm_frame``)."""

    def __init__(self, embed_dim: int, depth: int, num_heads: int, mlp_hidden: int, positions: int) -> None:
        super().__init__()
        self.melspec = LogMelSpectrogram(SAMPLE_RATE, N_FFT, HOP, N_MELS, F_MIN, F_MAX, mel_scale="htk",
                                         mel_norm=None, log=False)
        self.patch_embed = nn.Module()
        self.patch_embed.patch_embed = nn.Linear(N_MELS * PATCH_FRAMES, embed_dim)
        self.mask_embed = nn.Parameter(torch.zeros(1, 1, embed_dim))  # pre-training only, kept for strict loading
        self.pos_embed = nn.Parameter(torch.zeros(1, positions, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_hidden, qkv_bias=False) for _ in range(depth))
        self.norm_frame = nn.LayerNorm(embed_dim, eps=1e-6)

    def spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """Min-max scaled dB mel spectrogram ``(B, 64, frames)``, the 80-dB floor per clip."""
        db = 10.0 * torch.log10(self.melspec(wav).clamp(min=1e-10))
        db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - TOP_DB)
        return (db - DB_MIN) / (DB_MAX - DB_MIN) * 2.0 - 1.0

    def chunk_layers(self, mel: torch.Tensor) -> list[torch.Tensor]:
        """Every block's normalised output ``(B, patches, D)`` for one chunk of at most 1001 frames."""
        n = mel.shape[-1] // PATCH_FRAMES
        patches = mel[..., :n * PATCH_FRAMES].reshape(mel.shape[0], N_MELS, n, PATCH_FRAMES)
        x = self.patch_embed.patch_embed(patches.permute(0, 2, 1, 3).flatten(2))  # mel-major (p1 p2)
        x = x + self.pos_embed[:, 1:n + 1]
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(self.norm_frame(x))
        return outputs

    def forward(self, wav: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per chunk, every block's normalised output (the original's chunking: 1001-frame pieces, none empty)."""
        mel = self.spectrogram(wav)
        return [self.chunk_layers(mel[..., start:start + CHUNK_FRAMES])
                for start in range(0, mel.shape[-1], CHUNK_FRAMES)]


class ATSTFrameEncoder(Encoder):
    """ATST-Frame's frames every 40 ms: the stacked blocks (``layer="stack"``, EVAR's) or the last block."""

    sample_rate = SAMPLE_RATE
    frame_hop_sec = PATCH_FRAMES * HOP / SAMPLE_RATE

    def __init__(self, backbone: FrameAST, layer: str = "stack") -> None:
        super().__init__()
        if layer not in ("stack", "last"):
            raise EvarError(f"ATST-Frame layer must be 'stack' or 'last', got {layer!r}")
        self.backbone, self.layer = backbone, layer
        dim, depth = backbone.norm_frame.normalized_shape[0], len(backbone.blocks)
        self.embed_dim = dim * depth if layer == "stack" else dim
        self.layers = tuple(f"block{i + 1}" for i in range(depth))

    def _chunks(self, wav: torch.Tensor) -> list[list[torch.Tensor]]:
        if wav.shape[1] < PATCH_FRAMES * HOP:
            raise EvarError(f"ATST-Frame needs at least {PATCH_FRAMES * HOP} samples (one 40-ms patch)")
        return self.backbone(wav)

    def _selected(self, layers: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(layers, dim=-1) if self.layer == "stack" else layers[-1]

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = torch.cat([self._selected(chunk) for chunk in self._chunks(wav)], dim=1)
        return frames, self.frame_timestamps(frames.shape[1])

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """The original's scene embedding: each chunk's patch mean (``sum / (n + 1e-6)``), chunks averaged."""
        means = [self._selected(chunk).sum(dim=1) / (chunk[0].shape[1] + 1e-6) for chunk in self._chunks(wav)]
        return torch.stack(means).mean(dim=0)

    def forward_layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        return [torch.cat(per_chunk, dim=1) for per_chunk in zip(*self._chunks(wav))]

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """The original's timestamps: 40 ms × the patch index (its start), in seconds."""
        return torch.arange(n_frames, dtype=torch.float32) * self.frame_hop_sec

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.mean(dim=1)

    layer_pool = pool

    def config(self) -> dict[str, Any]:
        return {**super().config(), "layer": self.layer, "depth": len(self.backbone.blocks),
                "chunk_frames": CHUNK_FRAMES}


def load_atst_frame(path: str, layer: str = "stack") -> ATSTFrameEncoder:
    """An audiossl ATST-Frame Lightning checkpoint: the teacher encoder's tensors, sizes from them (heads from
    ``hyper_parameters``: ``arch`` small 6, base 12, or an explicit ``num_heads``), strictly."""
    checkpoint = load_checkpoint(path, allow_numpy=True)  # Lightning files can hold numpy scalars (callbacks)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise EvarError(f"{path}: not an ATST-Frame checkpoint (expected a Lightning file with a 'state_dict')")
    own = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    if "pos_embed" not in own or "patch_embed.patch_embed.weight" not in own:
        raise EvarError(f"{path}: no ATST-Frame teacher encoder ({PREFIX}pos_embed, "
                        f"{PREFIX}patch_embed.patch_embed.weight) among {len(state)} tensors")
    dim = own["pos_embed"].shape[-1]
    hyper = checkpoint.get("hyper_parameters") or {}
    heads = int(hyper.get("num_heads") or HEADS.get((hyper.get("arch"), dim), dim // 64))
    try:
        depth, mlp_hidden = block_geometry(own)
        backbone = FrameAST(dim, depth, heads, mlp_hidden, own["pos_embed"].shape[1])
    except (ValueError, RuntimeError) as exc:
        raise EvarError(f"{path}: not a loadable ATST-Frame checkpoint ({exc})") from exc
    sha256 = load_weights(backbone, path, "loadable ATST-Frame", own)
    encoder = ATSTFrameEncoder(backbone, layer)
    encoder.weights_sha256 = sha256
    return encoder.eval()


def _builder(layer: str):
    def build(weights: str | None = None, allow_download: bool = True) -> ATSTFrameEncoder:
        return load_atst_frame(str(resolve_weights(WEIGHTS, weights, allow_download)), layer)

    build.__doc__ = f"ATST-Frame base ({layer} output) from audiossl's checkpoint, or ``weights``."
    return build


register_encoder("atst_frame", sample_rate=SAMPLE_RATE, embed_dim=9216, weights=WEIGHTS,
                 description="ATST-Frame base, 12 blocks stacked (EVAR's 9216-d), frames every 40 ms, mean"
                 )(_builder("stack"))
register_encoder("atst_frame_last", sample_rate=SAMPLE_RATE, embed_dim=768, weights=WEIGHTS,
                 description="ATST-Frame base, last block (768-d), frames every 40 ms, mean")(_builder("last"))
