"""Log-mel front ends on ``torch.stft``; mel filter banks from ``transformers.audio_utils``.

torchaudio and nnAudio are not dependencies: the STFT is torch's own and the filter bank
comes from a maintained implementation with HTK and Slaney scales.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def mel_filter_bank(**kwargs) -> np.ndarray:
    """transformers' ``audio_utils.mel_filter_bank``, imported on first use (importing transformers takes about
    0.6 s, which finding the encoders or a run from the embedding cache does not need)."""
    from transformers.audio_utils import mel_filter_bank as filter_bank

    return filter_bank(**kwargs)


class LogMelSpectrogram(nn.Module):
    """``log(mel(|STFT|^power) + log_offset)`` of a batch of waveforms, shape ``(B, n_mels, frames)``.

    ``mel_scale``/``mel_norm`` choose the convention: ``"slaney"``/``"slaney"`` is librosa's and
    nnAudio's default (EVAR), ``"htk"``/``None`` is torchaudio's default (the BYOL-A repository).
    ``log=False`` returns the mel power itself (Resemblyzer's input).
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        n_mels: int,
        f_min: float,
        f_max: float,
        win_length: int | None = None,
        mel_scale: str = "slaney",
        mel_norm: str | None = "slaney",
        center: bool = True,
        pad_mode: str = "reflect",
        power: float = 2.0,
        log_offset: float = FLOAT32_EPS,
        log: bool = True,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.win_length = win_length or n_fft
        self.center, self.pad_mode, self.power, self.log_offset, self.log = center, pad_mode, power, log_offset, log
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.mel_bank = dict(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=f_min,
                             max_frequency=f_max, sampling_rate=sample_rate, norm=mel_norm, mel_scale=mel_scale)
        self.register_buffer("mel_fb", None, persistent=False)  # built by the first forward (a cached run has none)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        stft = torch.stft(
            wav, n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
            window=self.window, center=self.center, pad_mode=self.pad_mode, return_complex=True,
        )
        # the power spectrum without the square root of |z| (5x faster than abs().pow(2) on CPU)
        spec = stft.real.square() + stft.imag.square() if self.power == 2.0 else stft.abs().pow(self.power)
        if self.mel_fb is None:
            self.mel_fb = torch.tensor(mel_filter_bank(**self.mel_bank).T, dtype=torch.float32, device=wav.device)
        mel = torch.matmul(self.mel_fb, spec)
        return torch.log(mel + self.log_offset) if self.log else mel
