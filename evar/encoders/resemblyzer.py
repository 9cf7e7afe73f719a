"""Resemblyzer's GE2E speaker encoder with the weights its wheel ships: ``resemblyzer`` (256-d).

As Resemblyzer 0.1.4 computes an utterance embedding (``audio.preprocess_wav`` then
``VoiceEncoder.embed_utterance``): 16-kHz audio raised to −30 dBFS when quieter (never lowered); long silences
trimmed (webrtcvad mode 3 on 30-ms windows, a moving average over 8 windows rounded half to even, dilated by 3
windows each side); partial windows of 160 mel frames (1.6 s) every 77 frames, the last one dropped when it
covers less than 75 % of its length (unless it is the only one), the audio zero-padded to the last window's end;
a 40-band mel power spectrogram (25-ms Hann window, 10-ms hop, zero-padded centring, Slaney mels, no log) of the
whole padded utterance, sliced per window; a 3-layer LSTM (256), Linear + ReLU on the last hidden state, each
partial L2-normalised, their mean normalised again.

Frames are the partial embeddings of the untrimmed (volume-normalised) clip, timed at each window's centre, so
their times are the clip's; the clip embedding follows ``preprocess_wav`` (with the trimming, ``trim_silence``).
The weights are the wheel's ``resemblyzer/pretrained.pt`` (``model_state``; the GE2E loss's
``similarity_weight``/``similarity_bias`` left out), found without importing Resemblyzer:
``pip install --no-deps Resemblyzer==0.1.4``; trimming needs ``webrtcvad`` (``pip install webrtcvad-wheels``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from evar.encoders import register_encoder
from evar.encoders.base import Encoder
from evar.encoders.weights import PackagedWeights, load_checkpoint, load_weights
from evar.errors import EvarError
from evar.frontends.logmel import LogMelSpectrogram

INSTALL = "pip install --no-deps Resemblyzer==0.1.4"
PACKAGED = PackagedWeights("Resemblyzer", "resemblyzer/pretrained.pt", INSTALL)
SAMPLE_RATE = 16000
HOP = 160  # samples per mel frame (10 ms)
PARTIAL_FRAMES = 160  # 1.6 s
PARTIAL_RATE = 1.3  # partial windows per second
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0
VAD_WINDOW = 480  # 30 ms
VAD_AVERAGE_WIDTH = 8
VAD_MAX_SILENCE = 6  # windows: dilation by a structuring element of VAD_MAX_SILENCE + 1
INT16_MAX = 2 ** 15 - 1
GE2E_LOSS_KEYS = ("similarity_weight", "similarity_bias")
PACKAGED_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"


def normalise_volume(wav: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Raise ``wav`` to ``target_dbfs`` when it is quieter; louder audio is left as is."""
    rms = np.sqrt(np.mean((wav * INT16_MAX) ** 2)) if len(wav) else 0.0
    if rms == 0:
        return wav
    change = target_dbfs - 20 * np.log10(rms / INT16_MAX)
    return wav if change < 0 else (wav * 10 ** (change / 20)).astype(np.float32)


def trim_long_silences(wav: np.ndarray) -> np.ndarray:
    """Resemblyzer's ``trim_long_silences``: drop the 30-ms windows that webrtcvad, smoothed and dilated, calls
    silent (the audio is first cut to whole windows)."""
    try:
        import webrtcvad
    except ImportError:
        raise EvarError("resemblyzer: trimming silences needs webrtcvad: pip install webrtcvad-wheels "
                        "(or trim_silence=False in --model-options)") from None
    wav = wav[:len(wav) - len(wav) % VAD_WINDOW]
    if not len(wav):
        return wav
    pcm = np.round(wav * INT16_MAX).astype(np.int16).astype("<i2").tobytes()
    vad = webrtcvad.Vad(3)
    flags = np.array([vad.is_speech(pcm[2 * s:2 * (s + VAD_WINDOW)], SAMPLE_RATE)
                      for s in range(0, len(wav), VAD_WINDOW)], dtype=float)
    padded = np.concatenate([np.zeros((VAD_AVERAGE_WIDTH - 1) // 2), flags, np.zeros(VAD_AVERAGE_WIDTH // 2)])
    total = np.cumsum(padded)
    total[VAD_AVERAGE_WIDTH:] = total[VAD_AVERAGE_WIDTH:] - total[:-VAD_AVERAGE_WIDTH]
    voiced = np.round(total[VAD_AVERAGE_WIDTH - 1:] / VAD_AVERAGE_WIDTH).astype(bool)
    reach = VAD_MAX_SILENCE // 2  # binary dilation by ones(VAD_MAX_SILENCE + 1), centred
    kept = np.convolve(voiced, np.ones(VAD_MAX_SILENCE + 1), mode="full")[reach:reach + len(voiced)] > 0
    return wav[np.repeat(kept, VAD_WINDOW)]


def partial_slices(n_samples: int) -> list[tuple[int, int]]:
    """Mel-frame ranges ``[start, stop)`` of the partial windows of an ``n_samples`` utterance."""
    n_frames = math.ceil((n_samples + 1) / HOP)
    step = int(np.round(SAMPLE_RATE / PARTIAL_RATE / HOP))
    slices = [(i, i + PARTIAL_FRAMES) for i in range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step)]
    last_start = slices[-1][0] * HOP
    coverage = (n_samples - last_start) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(slices) > 1:
        slices = slices[:-1]
    return slices


class SpeakerNetwork(nn.Module):
    """GE2E's network in Resemblyzer's key format (``lstm.*``, ``linear.*``)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(40, 256, num_layers=3, batch_first=True)
        self.linear = nn.Linear(256, 256)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings of mel windows ``(N, 160, 40)``."""
        _, (hidden, _) = self.lstm(mels)
        embedding = torch.relu(self.linear(hidden[-1]))
        return embedding / embedding.norm(dim=1, keepdim=True)


class ResemblyzerEncoder(Encoder):
    """Resemblyzer's utterance embedding (clip) and partial-window embeddings (frames)."""

    sample_rate = SAMPLE_RATE
    embed_dim = 256
    frame_hop_sec = int(np.round(SAMPLE_RATE / PARTIAL_RATE / HOP)) * HOP / SAMPLE_RATE

    def __init__(self, trim_silence: bool = True) -> None:
        super().__init__()
        self.trim_silence = trim_silence
        self.network = SpeakerNetwork()
        self.mel = LogMelSpectrogram(SAMPLE_RATE, n_fft=400, hop_length=HOP, n_mels=40, f_min=0, f_max=8000,
                                     pad_mode="constant", log=False)

    def partials(self, wav: np.ndarray) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Normalised embeddings of ``wav``'s partial windows and their mel-frame ranges (``embed_utterance``)."""
        slices = partial_slices(len(wav))
        end = slices[-1][1] * HOP
        padded = np.pad(wav, (0, max(0, end - len(wav))))
        mel = self.mel(torch.from_numpy(padded).to(self.device)[None])[0].T  # (frames, 40)
        return self.network(torch.stack([mel[a:b] for a, b in slices])), slices

    def utterance(self, wav: np.ndarray) -> torch.Tensor:
        """``preprocess_wav`` then ``embed_utterance`` of one 16-kHz clip."""
        wav = normalise_volume(wav)
        if self.trim_silence:
            wav = trim_long_silences(wav)
        mean = self.partials(wav)[0].mean(dim=0)
        return mean / mean.norm()

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        clips = wav.detach().cpu().numpy().astype(np.float32)
        return torch.stack([self.utterance(clip) for clip in clips])

    def forward_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        clips = wav.detach().cpu().numpy().astype(np.float32)
        frames = [self.partials(normalise_volume(clip)) for clip in clips]
        stacked = torch.stack([embeddings for embeddings, _ in frames])
        return stacked, self.frame_timestamps(stacked.shape[1])

    def frame_timestamps(self, n_frames: int) -> torch.Tensor:
        """Centre of each partial window (1.6 s long, every 77 mel frames)."""
        return torch.arange(n_frames, dtype=torch.float32) * self.frame_hop_sec + PARTIAL_FRAMES * HOP / SAMPLE_RATE / 2

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        mean = frames.mean(dim=1)
        return mean / mean.norm(dim=1, keepdim=True)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "trim_silence": self.trim_silence}


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The network's tensors of Resemblyzer's checkpoint (``{"step", "model_state", "optimizer_state"}``), read
    with ``weights_only=True``."""
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict) or "model_state" not in checkpoint:
        raise EvarError(f"{path}: not a Resemblyzer checkpoint (no 'model_state')")
    return {k: v for k, v in checkpoint["model_state"].items() if k not in GE2E_LOSS_KEYS}


@register_encoder("resemblyzer", sample_rate=SAMPLE_RATE, embed_dim=256, packaged=PACKAGED,
                  description="Resemblyzer GE2E speaker encoder, utterance embedding (0.1.4 pretrained.pt)")
def build_resemblyzer(weights: str | None = None, trim_silence: bool = True) -> ResemblyzerEncoder:
    """Resemblyzer's voice encoder with the packaged weights (or ``--weights`` a file in its format)."""
    encoder = ResemblyzerEncoder(trim_silence)
    path = str(weights or PACKAGED.path())
    encoder.weights_sha256 = load_weights(encoder.network, path, "Resemblyzer", state=read_checkpoint(path))
    return encoder.eval()
