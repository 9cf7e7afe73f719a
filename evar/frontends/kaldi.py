"""Kaldi-compatible log mel filter banks in plain torch (``compute-fbank-feats``).

Reproduces ``torchaudio.compliance.kaldi.fbank`` for the options AST (and EVAR's AST wrapper) uses,
on batches: frames taken with ``snip_edges`` (no padding, ``1 + (N - window) // shift`` frames),
per-frame DC removal, pre-emphasis with the first sample replicated, a symmetric window, zero
padding to a power of two, power spectrum, Kaldi's triangular mel bank (``1127 ln(1 + f/700)``,
``low_freq`` to ``high_freq``, no area normalisation) and ``log(max(x, float32 eps))``.
Dither is not offered (evaluation uses none); energy features are not computed (``use_energy=False``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from evar.errors import EvarError

WINDOWS = ("hanning", "hamming", "povey", "rectangular", "blackman")
FLOAT32_EPS = float(torch.finfo(torch.float32).eps)


def kaldi_mel_scale(freq: torch.Tensor | float) -> torch.Tensor | float:
    """Kaldi's mel scale, ``1127 ln(1 + f / 700)``."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log1p(freq / 700.0)


def kaldi_window(window: str, length: int, blackman_coeff: float = 0.42) -> torch.Tensor:
    """Kaldi's analysis windows (symmetric, i.e. ``periodic=False``), float64."""
    n = torch.arange(length, dtype=torch.float64)
    a = 2.0 * math.pi / (length - 1)
    if window == "hanning":
        return 0.5 - 0.5 * torch.cos(a * n)
    if window == "povey":
        return (0.5 - 0.5 * torch.cos(a * n)).pow(0.85)
    if window == "hamming":
        return 0.54 - 0.46 * torch.cos(a * n)
    if window == "rectangular":
        return torch.ones(length, dtype=torch.float64)
    if window == "blackman":
        return blackman_coeff - 0.5 * torch.cos(a * n) + (0.5 - blackman_coeff) * torch.cos(2 * a * n)
    raise EvarError(f"unknown Kaldi window {window!r}; choose from {', '.join(WINDOWS)}")


def kaldi_mel_banks(num_bins: int, n_fft: int, sample_rate: float, low_freq: float, high_freq: float) -> torch.Tensor:
    """Triangular mel filters ``(num_bins, n_fft // 2 + 1)`` on Kaldi's mel scale (Nyquist column is zero).

    ``high_freq <= 0`` counts from the Nyquist frequency, as in Kaldi.
    """
    nyquist = 0.5 * sample_rate
    high = high_freq + nyquist if high_freq <= 0.0 else high_freq
    if not 0.0 <= low_freq < high <= nyquist:
        raise EvarError(f"Kaldi fbank: need 0 <= low_freq < high_freq <= {nyquist} Hz, got {low_freq}..{high}")
    mel_low, mel_high = kaldi_mel_scale(low_freq), kaldi_mel_scale(high)
    delta = (mel_high - mel_low) / (num_bins + 1)
    edges = mel_low + delta * torch.arange(num_bins + 2, dtype=torch.float64)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    mel = kaldi_mel_scale(sample_rate / n_fft * torch.arange(n_fft // 2, dtype=torch.float64))[None]
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.cat([banks, torch.zeros(num_bins, 1, dtype=torch.float64)], dim=1)


class KaldiFbank(nn.Module):
    """Kaldi log mel filter banks of a batch of waveforms: ``(B, samples) -> (B, frames, num_mel_bins)``.

    Defaults are Kaldi's except ``num_mel_bins=128`` and ``window="hanning"`` (AST's call).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        num_mel_bins: int = 128,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        window: str = "hanning",
        preemphasis: float = 0.97,
        remove_dc_offset: bool = True,
        low_freq: float = 20.0,
        high_freq: float = 0.0,
        round_to_power_of_two: bool = True,
        use_power: bool = True,
    ) -> None:
        super().__init__()
        self.win_length = int(sample_rate * frame_length_ms * 0.001)
        self.hop_length = int(sample_rate * frame_shift_ms * 0.001)
        if self.win_length < 2 or self.hop_length < 1:
            raise EvarError(f"Kaldi fbank: frame length {frame_length_ms} ms / shift {frame_shift_ms} ms too short")
        self.n_fft = 1 << (self.win_length - 1).bit_length() if round_to_power_of_two else self.win_length
        if self.n_fft % 2:
            raise EvarError(f"Kaldi fbank: padded window {self.n_fft} must be even (use round_to_power_of_two)")
        if not 0.0 <= preemphasis <= 1.0:
            raise EvarError(f"Kaldi fbank: preemphasis must be within [0, 1], got {preemphasis}")
        self.sample_rate, self.num_mel_bins = sample_rate, num_mel_bins
        self.preemphasis, self.remove_dc_offset, self.use_power = preemphasis, remove_dc_offset, use_power
        self.register_buffer("window", kaldi_window(window, self.win_length).float(), persistent=False)
        banks = kaldi_mel_banks(num_mel_bins, self.n_fft, sample_rate, low_freq, high_freq)
        self.register_buffer("mel_banks", banks.float(), persistent=False)

    def num_frames(self, n_samples: int) -> int:
        """Frames Kaldi produces from ``n_samples`` (``snip_edges``)."""
        return 0 if n_samples < self.win_length else 1 + (n_samples - self.win_length) // self.hop_length

    def frame_centre_sec(self, frame: torch.Tensor | float) -> torch.Tensor | float:
        """Centre time in seconds of Kaldi frame index ``frame``."""
        return (frame * self.hop_length + self.win_length / 2) / self.sample_rate

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.shape[-1] < self.win_length:
            raise EvarError(
                f"Kaldi fbank: {wav.shape[-1]} samples is shorter than one {self.win_length}-sample window"
            )
        frames = wav.unfold(-1, self.win_length, self.hop_length)  # (B, T, win)
        if self.remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        if self.preemphasis != 0.0:
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
            frames = frames - self.preemphasis * previous
        frames = frames * self.window
        spectrum = torch.fft.rfft(frames, n=self.n_fft).abs()
        if self.use_power:
            spectrum = spectrum.pow(2)
        mel = torch.matmul(spectrum, self.mel_banks.T)
        return torch.clamp(mel, min=FLOAT32_EPS).log()
