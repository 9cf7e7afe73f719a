"""Wav2CLIP (Wu et al., ICASSP 2022): a ResNet-18 on a log power spectrogram, distilled from CLIP.

Checkpoint: the official ``Wav2CLIP.pt`` (release ``v0.1.0-alpha`` of descriptinc/lyrebird-wav2clip), a flat
state_dict of the pre-training module: ``audio_encoder.*`` (the ResNet-18, including the spectrogram's
``audio_encoder.spectrogram.window``) and ``audio_transform.sequential.{0,3}.*`` (the MLP projecting into CLIP's
512-d space); other entries (``image_transform.*``, loss scales) are ignored, as the original does. The state_dict
of the original ``wav2clip.get_model()`` module (``encoder.*``, ``transform.*``) loads too.

Front end (the original's ``ResNet.forward``): power spectrogram (n_fft 512, window 512 from the checkpoint,
hop 353, centred, reflect padding), ``log(x + 1e-7)``, then ``(x - mean) / (std + 1e-9)`` with the mean and
unbiased std of the whole input tensor. The original therefore normalises over the whole batch, which makes an
embedding depend on the other clips of its batch; evar's default ``norm="clip"`` uses each clip's own statistics
(identical to the original run on one clip at a time); ``norm="batch"`` reproduces batched original runs.

Outputs: ``wav2clip`` is the projection into CLIP space (what ``wav2clip.get_model()`` returns and what the HEAR
2021 submission used), ``wav2clip_encoder`` the 512-d ResNet output before it. The clip embedding is the
original's utterance embedding (global average pooling inside the network), not EVAR's mean+max.

Text (zero-shot, retrieval): the projection shares CLIP ViT-B/32's space (the image tower it was distilled from; the
repository's VQGAN-CLIP script pairs it with that perceptor), so ``embed_text`` runs CLIP ViT-B/32's text tower,
``openai/clip-vit-base-patch32`` in transformers (or ``text_weights``: a folder written by ``save_pretrained`` with
its tokenizer), loaded on first use, its projected embedding L2-normalised as CLIP's zero-shot does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from evar.errors import EvarError
from evar.encoders.weights import WeightFile, load_state_dict, load_weights, resolve_weights
from evar.encoders import register_encoder
from evar.encoders.base import Encoder

WAV2CLIP_SOURCE = "https://github.com/descriptinc/lyrebird-wav2clip/releases/tag/v0.1.0-alpha"
WAV2CLIP_URL = "https://github.com/descriptinc/lyrebird-wav2clip/releases/download/v0.1.0-alpha/Wav2CLIP.pt"
# The release publishes no checksum and the file could not be downloaded to compute one: sha256 unknown.
WAV2CLIP_WEIGHTS = WeightFile("Wav2CLIP.pt", WAV2CLIP_URL, None, WAV2CLIP_SOURCE, "MIT (the lyrebird-wav2clip repository)")

SAMPLE_RATE = 16000
N_FFT, HOP = 512, 353
OUTPUTS = ("projection", "encoder")
#: CLIP's text tower in the projection's space (transformers' conversion of OpenAI's ViT-B/32)
CLIP_TEXT = "openai/clip-vit-base-patch32"
NORMS = ("clip", "batch")
#: key prefixes of the official file -> of the original get_model() module -> evar's submodules
PREFIXES = {"audio_encoder.": "encoder.", "audio_transform.": "transform."}


class _Spectrogram(nn.Module):
    """Holds the STFT window under the official key ``spectrogram.window``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wav, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, window=self.window,
                          center=True, pad_mode="reflect", return_complex=True)
        return spec.abs().pow(2.0)


class _BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convolutions, identity or 1x1 projection shortcut)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Wav2CLIPResNet(nn.Module):
    """ResNet-18 with a one-channel 7x7 stem, as in the original ``wav2clip/model/resnet.py``."""

    def __init__(self) -> None:
        super().__init__()
        self.spectrogram = _Spectrogram()
        self.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = (64, 128, 256, 512)
        for i, width in enumerate(widths):
            in_ch = widths[i - 1] if i else 64
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", nn.Sequential(_BasicBlock(in_ch, width, stride), _BasicBlock(width, width, 1)))

    def log_spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """``log(power spectrogram + 1e-7)``, shape ``(N, 1, 257, frames)``."""
        return torch.log(self.spectrogram(wav).unsqueeze(1) + 1e-7)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of layer1..layer4 ``(N, C, F', T')`` for a normalised log spectrogram."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        maps = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            maps.append(x)
        return maps


class MLPProjection(nn.Module):
    """The projection into CLIP space: Linear-ReLU-Dropout-Linear (``sequential.{0,3}``)."""

    def __init__(self, dim: int = 512) -> None:
        super().__init__()
        self.sequential = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(0.1), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sequential(x)


def _normalise(x: torch.Tensor, n_clips: int, norm: str) -> torch.Tensor:
    """``(x - mean) / (std + 1e-9)`` over the whole tensor (``batch``) or over each clip's rows (``clip``)."""
    if norm == "batch":
        return (x - x.mean()) / (x.std() + 1e-9)
    grouped = x.reshape(n_clips, -1)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)
    return ((grouped - mean) / (std + 1e-9)).reshape(x.shape)


class Wav2CLIPEncoder(Encoder):
    """Wav2CLIP audio encoder; clip embeddings from the whole clip, frames from fixed windows."""

    layers = ("layer1", "layer2", "layer3", "layer4", "embedding", "projection")

    def __init__(self, output: str = "projection", norm: str = "clip",
                 frame_length: int = SAMPLE_RATE, frame_hop: int = SAMPLE_RATE, text_weights: str = CLIP_TEXT) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise EvarError(f"unknown Wav2CLIP output {output!r}; choose from {', '.join(OUTPUTS)}")
        if norm not in NORMS:
            raise EvarError(f"unknown Wav2CLIP normalisation {norm!r}; choose from {', '.join(NORMS)}")
        if frame_length < N_FFT or frame_hop < 1:
            raise EvarError(f"Wav2CLIP frames need frame_length >= {N_FFT} and frame_hop >= 1 samples")
        self.sample_rate, self.embed_dim = SAMPLE_RATE, 512
        self.output, self.norm = output, norm
        self.frame_length, self.frame_hop = frame_length, frame_hop
        self.frame_hop_sec = frame_hop / SAMPLE_RATE
        self.encoder = Wav2CLIPResNet()
        self.transform = MLPProjection()
        self.text_weights, self._text = text_weights, None

    def load_checkpoint(self, path: str | Path) -> None:
        """Load the official ``Wav2CLIP.pt`` (or a ``get_model()`` / evar state_dict), strictly."""
        state = load_state_dict(path)
        own = {}
        for key, value in state.items():
            for official, local in PREFIXES.items():
                if key.startswith(official):
                    key = local + key[len(official):]
            if key.startswith(tuple(PREFIXES.values())):
                own[key] = value
        self.weights_sha256 = load_weights(self, path, "Wav2CLIP", own)

    def _normalised(self, wav: torch.Tensor, n_clips: int) -> torch.Tensor:
        if wav.shape[-1] <= N_FFT // 2:
            raise EvarError(f"Wav2CLIP needs more than {N_FFT // 2} samples per clip, got {wav.shape[-1]}")
        return _normalise(self.encoder.log_spectrogram(wav), n_clips, self.norm)

    def _head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.transform(embedding) if self.output == "projection" else embedding

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Utterance embeddings ``(B, 512)``: the whole clip through the network, as the original."""
        maps = self.encoder.feature_maps(self._normalised(wav, wav.shape[0]))
        return self._head(maps[-1].mean(dim=(2, 3)))

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One embedding per ``frame_length`` window every ``frame_hop`` samples (the original's frame mode).

        Clips shorter than one window are zero-padded to it (the original raises).
        """
        if wav.shape[-1] < self.frame_length:
            wav = F.pad(wav, (0, self.frame_length - wav.shape[-1]))
        windows = wav.unfold(-1, self.frame_length, self.frame_hop)  # (B, n, L)
        batch, n_windows = windows.shape[:2]
        flat = windows.reshape(batch * n_windows, self.frame_length)
        maps = self.encoder.feature_maps(self._normalised(flat, batch))
        frames = self._head(maps[-1].mean(dim=(2, 3))).reshape(batch, n_windows, -1)
        return frames, self.frame_timestamps(n_windows)

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Centre of each window in seconds (HEAR's wav2clip wrapper reported window starts)."""
        starts = torch.arange(n_frames, dtype=torch.float32) * self.frame_hop
        return (starts + self.frame_length / 2) / SAMPLE_RATE

    def forward_layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        """layer1..layer4 averaged over frequency ``(B, T', C)``, then the embedding and projection ``(B, 1, 512)``."""
        maps = self.encoder.feature_maps(self._normalised(wav, wav.shape[0]))
        outputs = [m.mean(dim=2).transpose(1, 2) for m in maps]
        embedding = maps[-1].mean(dim=(2, 3))
        return outputs + [embedding.unsqueeze(1), self.transform(embedding).unsqueeze(1)]

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """CLIP's normalised text embeddings ``(len(texts), 512)``, comparable with the projection output."""
        if self.output != "projection":
            raise EvarError("wav2clip_encoder's output is not in CLIP's space; use wav2clip to embed texts")
        if self._text is None:
            self._text = _clip_text_tower(self.text_weights)
        tokenizer, model = self._text
        tokens = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            features = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).text_embeds
        return F.normalize(features, dim=-1)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "output": self.output, "norm": self.norm, "frame_length": self.frame_length,
                "frame_hop": self.frame_hop, "weights_sha256": self.weights_sha256}


def _clip_text_tower(weights: str):
    """(tokenizer, CLIPTextModelWithProjection) from a hub id (``id@revision``) or a save_pretrained folder."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    from evar.encoders.hf import first_line, model_location, parse_model_id

    model_id, revision = parse_model_id(weights)
    where, kwargs = model_location(model_id), ({"revision": revision} if revision else {})
    try:
        return (CLIPTokenizer.from_pretrained(where, **kwargs),
                CLIPTextModelWithProjection.from_pretrained(where, **kwargs).eval())
    except (OSError, ValueError) as exc:
        raise EvarError(f"wav2clip: cannot load CLIP's text tower {model_id} ({first_line(exc)}); give "
                        "text_weights=FOLDER (CLIPModel or CLIPTextModelWithProjection.save_pretrained with its "
                        "CLIPTokenizer) on a machine without network access") from exc


def _builder(output: str):
    def build(weights: str | None = None, norm: str = "clip", frame_length: int = SAMPLE_RATE,
              frame_hop: int = SAMPLE_RATE, text_weights: str = CLIP_TEXT,
              allow_download: bool = True) -> Wav2CLIPEncoder:
        encoder = Wav2CLIPEncoder(output=output, norm=norm, frame_length=frame_length, frame_hop=frame_hop,
                                  text_weights=text_weights)
        encoder.load_checkpoint(resolve_weights(WAV2CLIP_WEIGHTS, weights, allow_download=allow_download))
        return encoder.eval()  # inference mode before anything (e.g. LayerFusion's probe) runs it

    build.__doc__ = f"Wav2CLIP, {output} output, official checkpoint."
    return build


register_encoder("wav2clip", sample_rate=SAMPLE_RATE, embed_dim=512, weights=WAV2CLIP_WEIGHTS,
                 description="Wav2CLIP (ICASSP 2022), 512-d projection into CLIP space")(_builder("projection"))
register_encoder("wav2clip_encoder", sample_rate=SAMPLE_RATE, embed_dim=512, weights=WAV2CLIP_WEIGHTS,
                 description="Wav2CLIP (ICASSP 2022), 512-d ResNet-18 output before the CLIP projection")(_builder("encoder"))
