"""PANNs CNN14 (Kong et al., TASLP 2020) with EVAR's pooling.

Checkpoints (zenodo record 3987831): ``Cnn14_16k_mAP=0.438.pth`` (16 kHz; EVAR's ``cnn14``) and
``Cnn14_mAP=0.431.pth`` (32 kHz). Both are ``{"iteration", "model", "sampler"}`` dicts; ``model`` holds
the torchlibrosa front end (``spectrogram_extractor.stft.conv_{real,imag}.weight``,
``logmel_extractor.melW``), ``bn0``, ``conv_block1..6``, ``fc1`` and ``fc_audioset``. Every key is
used: the network and the AudioSet head are loaded strictly; the front-end tensors are fixed
functions of the STFT/mel settings (Hann-windowed DFT kernels and librosa's Slaney mel matrix), so they
are compared with this module's own front end (a mismatch means a checkpoint for another sample rate)
instead of being loaded, which lets the STFT run as ``torch.stft``.

Front end (torchlibrosa, here on ``torch.stft``): periodic Hann window = n_fft, centred reflect-padded
STFT, power, Slaney mel with Slaney area normalisation, ``10 log10(max(mel, 1e-10))`` (ref 1, no top_db);
16 kHz: n_fft 512, hop 160, 64 mels, 50-8000 Hz; 32 kHz: n_fft 1024, hop 320, 64 mels, 50-14000 Hz.

Output (EVAR's ``AR_Cnn14``): frames = the last conv block averaged over frequency, 2048-d, one per
32 STFT frames (320 ms); clip embedding = ``ReLU(fc1(max_t + mean_t))``, 2048-d.

Layers: ``block1`` .. ``block6`` (0-indexed 0..5 in ``layers=[...]``). As in composing-general-audio-repr's
``GeneralPurposeCnn14``, each block output is max-pooled along time to the 320 ms grid of block 6 and
flattened channel-major (channel x frequency): 2048, 2048, 2048, 2048, 2048, 4096-d. The paper's
CNN14-Fusion#3#6 (blocks 3 and 6, 1-indexed) is ``layers=[2, 5]`` or ``["block3", "block6"]``: 6144-d.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evar.errors import EvarError
from evar.frontends.logmel import mel_filter_bank
from evar.encoders.numpy_checkpoint import load_state_dict_with_numpy
from evar.encoders.weights import WeightFile, load_weights, resolve_weights
from evar.encoders import register_encoder
from evar.encoders.base import Encoder

PANNS_SOURCE = "https://zenodo.org/record/3987831"
# zenodo publishes md5 checksums only; no sha256 is known for these files.
PANNS_LICENCE = "CC BY 4.0 (the Zenodo record)"
CNN14_WEIGHTS = {
    "cnn14": WeightFile("Cnn14_16k_mAP=0.438.pth", "https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth",
                        None, PANNS_SOURCE, PANNS_LICENCE),
    "cnn14_32k": WeightFile("Cnn14_mAP=0.431.pth", "https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth",
                            None, PANNS_SOURCE, PANNS_LICENCE),
}

#: sample_rate, n_fft (= window), hop, n_mels, f_min, f_max of the two official checkpoints
VARIANTS = {"cnn14": (16000, 512, 160, 64, 50.0, 8000.0), "cnn14_32k": (32000, 1024, 320, 64, 50.0, 14000.0)}
FRONTEND_KEYS = ("spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
                 "logmel_extractor.melW")
BLOCK_CHANNELS = (64, 128, 256, 512, 1024, 2048)
TIME_REDUCTION = 32  # five 2x2 average pools; block 6 does not pool
FRONTEND_ATOL = 1e-5  # float32 DFT kernels / mel weights vs torchlibrosa (observed max 6e-8)


class PannsLogMel(nn.Module):
    """torchlibrosa's ``Spectrogram`` + ``LogmelFilterBank`` on ``torch.stft``: ``(B, N) -> (B, 1, T, n_mels)``."""

    def __init__(self, sample_rate: int, n_fft: int, hop: int, n_mels: int, f_min: float, f_max: float) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft, dtype=torch.float64).float(), persistent=False)
        mel = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=f_min,
                              max_frequency=f_max, sampling_rate=sample_rate, norm="slaney", mel_scale="slaney")
        self.register_buffer("mel_matrix", torch.tensor(mel, dtype=torch.float32), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wav, n_fft=self.n_fft, hop_length=self.hop, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True)
        power = torch.view_as_real(spec).pow(2).sum(-1).transpose(1, 2)  # (B, T, freq)
        mel = power @ self.mel_matrix
        return (10.0 * torch.log10(mel.clamp(min=1e-10))).unsqueeze(1)

    def torchlibrosa_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors torchlibrosa stores for this front end (windowed DFT kernels, mel matrix)."""
        n = torch.arange(self.n_fft, dtype=torch.float64)
        angle = 2 * np.pi * torch.outer(n[: self.n_fft // 2 + 1], n) / self.n_fft
        window = self.window.double()
        return {FRONTEND_KEYS[0]: (torch.cos(angle) * window)[:, None].float(),
                FRONTEND_KEYS[1]: (-torch.sin(angle) * window)[:, None].float(),
                FRONTEND_KEYS[2]: self.mel_matrix.cpu()}


class ConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU, then 2-D average pooling (PANNs' ``ConvBlock``)."""

    #: what the inference copy folds (evar.embeddings.inference)
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.avg_pool2d(x, kernel_size=pool) if pool > 1 else x


class Cnn14Net(nn.Module):
    """CNN14 without its front end, in the official layout (``bn0``, ``conv_block1..6``, ``fc1``, ``fc_audioset``)."""

    def __init__(self, n_mels: int = 64, classes: int = 527) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(n_mels)
        for i, (in_ch, out_ch) in enumerate(zip((1,) + BLOCK_CHANNELS[:-1], BLOCK_CHANNELS), start=1):
            self.add_module(f"conv_block{i}", ConvBlock(in_ch, out_ch))
        self.fc1 = nn.Linear(2048, 2048)
        self.fc_audioset = nn.Linear(2048, classes)

    def blocks(self, logmel: torch.Tensor) -> list[torch.Tensor]:
        """The six block outputs ``(B, C, T_i, F_i)`` for log-mel ``(B, 1, T, n_mels)``."""
        x = self.bn0(logmel.transpose(1, 3)).transpose(1, 3)
        outputs = []
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, pool=2 if i < 6 else 1)
            outputs.append(x)
        return outputs

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """PANNs' clip embedding from frames ``(B, T, 2048)``: ``ReLU(fc1(max_t + mean_t))``."""
        return F.relu(self.fc1(frames.max(dim=1).values + frames.mean(dim=1)))


class Cnn14Encoder(Encoder):
    """CNN14 with the torchlibrosa front end (ported) and EVAR's temporal pooling."""

    layers = tuple(f"block{i}" for i in range(1, 7))
    embed_dim = 2048

    def __init__(self, variant: str = "cnn14") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise EvarError(f"unknown CNN14 variant {variant!r}; choose from {', '.join(VARIANTS)}")
        self.variant = variant
        self.sample_rate, n_fft, self.hop, n_mels, f_min, f_max = VARIANTS[variant]
        self.frame_hop_sec = TIME_REDUCTION * self.hop / self.sample_rate
        self.frontend = PannsLogMel(self.sample_rate, n_fft, self.hop, n_mels, f_min, f_max)
        self.net = Cnn14Net(n_mels=n_mels)

    def load_checkpoint(self, path: str | Path) -> None:
        """Load an official PANNs checkpoint (or its plain ``model`` state_dict); every key is accounted for."""
        state = {k.removeprefix("module."): v for k, v in load_state_dict_with_numpy(path).items()}
        expected = self.frontend.torchlibrosa_tensors()
        for key in FRONTEND_KEYS:
            if key not in state:
                continue
            stored = state.pop(key)
            if tuple(stored.shape) != tuple(expected[key].shape) or not torch.allclose(
                    stored.float(), expected[key], rtol=0, atol=FRONTEND_ATOL):
                raise EvarError(f"{path}: its front end ({key} {tuple(stored.shape)}) is not {self.variant}'s "
                                f"({self.sample_rate} Hz, n_fft {self.frontend.n_fft}); "
                                f"use {'cnn14_32k' if self.variant == 'cnn14' else 'cnn14'} for this file?")
        self.weights_sha256 = load_weights(self.net, path, f"PANNs CNN14 ({self.variant})", state)

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """Log-mel in dB, ``(B, 1, T, n_mels)`` (T = 1 + N // hop), before ``bn0``."""
        min_samples = (TIME_REDUCTION - 1) * self.hop  # shorter input has no output frame: zero-pad
        if wav.shape[-1] < min_samples:
            wav = F.pad(wav, (0, min_samples - wav.shape[-1]))
        return self.frontend(wav)

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Frame i averages STFT frames 32 i .. 32 i + 31, centred at multiples of the hop."""
        centres = torch.arange(n_frames, dtype=torch.float32) * TIME_REDUCTION + (TIME_REDUCTION - 1) / 2
        return centres * self.hop / self.sample_rate

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Block 6 averaged over frequency: ``(B, T // 32, 2048)``."""
        frames = self.net.blocks(self.features(wav))[-1].mean(dim=3).transpose(1, 2)
        return frames, self.frame_timestamps(frames.shape[1])

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        """EVAR / PANNs: max + mean over time, then ``fc1`` + ReLU."""
        return self.net.embed(frames)

    def forward_layers(self, wav: torch.Tensor) -> list[torch.Tensor]:
        """Each block max-pooled along time to block 6's frames, flattened as channel x frequency."""
        outputs = []
        for x in self.net.blocks(self.features(wav)):
            k = 2 ** max(0, 4 - len(outputs))  # blocks 1-4 are at T/2 .. T/16 of block 5-6's T/32
            if k > 1:
                x = F.max_pool2d(x, kernel_size=(k, 1))
            outputs.append(x.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1))
        return outputs

    @torch.no_grad()
    def audioset_probs(self, wav: torch.Tensor) -> torch.Tensor:
        """PANNs' ``clipwise_output``: sigmoid of the AudioSet head, ``(B, 527)``."""
        self.eval()
        wav = self._as_batch(wav)
        return torch.sigmoid(self.net.fc_audioset(self.forward(wav)))

    def config(self) -> dict[str, Any]:
        sr, n_fft, hop, n_mels, f_min, f_max = VARIANTS[self.variant]
        return {**super().config(), "variant": self.variant, "n_fft": n_fft, "hop": hop, "n_mels": n_mels,
                "f_min": f_min, "f_max": f_max, "frontend": "torchlibrosa (torch.stft port)",
                "weights_sha256": self.weights_sha256}


def _builder(variant: str, description: str):
    def build(weights: str | None = None, allow_download: bool = True) -> Cnn14Encoder:
        encoder = Cnn14Encoder(variant)
        encoder.load_checkpoint(resolve_weights(CNN14_WEIGHTS[variant], weights, allow_download=allow_download))
        return encoder

    build.__doc__ = description
    return build


for _variant, _description in (("cnn14", "PANNs CNN14 16 kHz (Cnn14_16k_mAP=0.438, EVAR's CNN14)"),
                               ("cnn14_32k", "PANNs CNN14 32 kHz (Cnn14_mAP=0.431)")):
    register_encoder(_variant, sample_rate=VARIANTS[_variant][0], embed_dim=2048, weights=CNN14_WEIGHTS[_variant],
                     description=_description)(_builder(_variant, _description))
