"""Fine-tuning augmentations: mixup and mix-training on waveforms, SpecAugment-style masking and
random resize crop on log-mel features ``(..., F, T)``.

Randomness comes from a ``numpy.random.Generator`` passed in, so a training run can save and
restore it (resume gives the same result as an uninterrupted run).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def _per_example(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` values shaped ``(B, 1, ...)`` to broadcast over ``like``."""
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(-1, *([1] * (like.ndim - 1)))


def sample_mixup(n: int, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """EVAR's mixup draw: one λ ~ Beta(α, α) per example and a random partner permutation."""
    return rng.beta(alpha, alpha, size=n), rng.permutation(n)


def mixup(x: torch.Tensor, y: torch.Tensor, lam: np.ndarray, perm: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``λ_i x_i + (1 − λ_i) x_perm(i)``, the same for the targets (EVAR mixes waveforms and one-hot labels)."""
    index = torch.as_tensor(perm, device=x.device)
    lx, ly = _per_example(lam, x), _per_example(lam, y)
    return x * lx + x[index] * (1 - lx), y * ly + y[index.to(y.device)] * (1 - ly)


def sample_mix_training(n: int, ratio: tuple[float, float], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mix-training draw: a blend weight ``a ~ U(ratio)`` per example and a random partner permutation."""
    return rng.uniform(ratio[0], ratio[1], size=n), rng.permutation(n)


def mix_training(x: torch.Tensor, y: torch.Tensor, a: np.ndarray, perm: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix-training blend (arXiv 1911.09349): ``x = a x_i + (1 − a) x_j``, label ``sign(y_i + y_j)`` (multi-hot)."""
    index = torch.as_tensor(perm, device=x.device)
    ax = _per_example(a, x)
    return x * ax + x[index] * (1 - ax), torch.sign(y + y[index.to(y.device)])


def _mask_span(size: int, max_width: int, rng: np.random.Generator) -> tuple[int, int]:
    """torchaudio's masking rule: width ``⌊U·max_width⌋``, start ``⌊U·(size − width)⌋``."""
    width = min(int(rng.uniform() * max_width), size)
    start = int(rng.uniform() * (size - width))
    return start, width


def mask_axis(lms: torch.Tensor, axis: int, max_width: int, rng: np.random.Generator, fill: float = 0.0,
              shared: bool = False) -> torch.Tensor:
    """Set a random band of up to ``max_width`` bins (axis -2) or frames (axis -1) to ``fill``.

    One band per example, or one for the whole batch when ``shared`` (EVAR/torchaudio on a 3-D batch).
    """
    out = lms.clone()
    size = lms.shape[axis]
    spans = [_mask_span(size, max_width, rng)] * len(lms) if shared else [_mask_span(size, max_width, rng) for _ in lms]
    for b, (start, width) in enumerate(spans):
        if width:
            out[b].narrow(axis, start, width).fill_(fill)
    return out


def _rrc_params(height: int, width: int, rng: np.random.Generator, virtual_scale: tuple[float, float],
                freq_scale: tuple[float, float], time_scale: tuple[float, float]) -> tuple[int, int, int, int, int, int]:
    canvas_h, canvas_w = int(height * virtual_scale[0]), int(width * virtual_scale[1])
    h = int(np.clip(int(rng.uniform(*freq_scale) * height), 1, canvas_h))
    w = int(np.clip(int(rng.uniform(*time_scale) * width), 1, canvas_w))
    i = int(rng.integers(0, canvas_h - h + 1)) if canvas_h > h else 0
    j = int(rng.integers(0, canvas_w - w + 1)) if canvas_w > w else 0
    return canvas_h, canvas_w, i, j, h, w


def random_resize_crop(lms: torch.Tensor, rng: np.random.Generator, fill: float = 0.0, shared: bool = False,
                       virtual_scale: tuple[float, float] = (1.0, 1.5), freq_scale: tuple[float, float] = (0.6, 1.5),
                       time_scale: tuple[float, float] = (0.6, 1.5)) -> torch.Tensor:
    """BYOL-A's random resize crop on ``(B, F, T)``: centre each example on a ``fill`` canvas
    ``virtual_scale`` times its size, crop a random ``freq_scale × time_scale`` area, resize back
    (bicubic, corners aligned). ``shared`` uses one crop for the whole batch (EVAR on 3-D input)."""
    n_freq, n_time = lms.shape[-2:]
    out = torch.empty_like(lms)
    params = None
    for b in range(len(lms)):
        if params is None or not shared:
            params = _rrc_params(n_freq, n_time, rng, virtual_scale, freq_scale, time_scale)
        canvas_h, canvas_w, i, j, h, w = params
        canvas = torch.full((canvas_h, canvas_w), fill, dtype=lms.dtype, device=lms.device)
        y0, x0 = (canvas_h - n_freq) // 2, (canvas_w - n_time) // 2
        canvas[y0:y0 + n_freq, x0:x0 + n_time] = lms[b]
        crop = canvas[i:i + h, j:j + w][None, None]
        out[b] = F.interpolate(crop, size=(n_freq, n_time), mode="bicubic", align_corners=True)[0, 0]
    return out


@dataclass
class FeatureAugment:
    """EVAR's fine-tuning augmentation of log-mel features: frequency mask, time mask, then
    random resize crop. ``fill`` is the value of masked/padded areas in the features' own scale."""

    freq_mask: int = 0
    time_mask: int = 0
    rrc: bool = False
    shared: bool = False

    @property
    def active(self) -> bool:
        return self.freq_mask > 0 or self.time_mask > 0 or self.rrc

    def __call__(self, lms: torch.Tensor, rng: np.random.Generator, fill: float = 0.0) -> torch.Tensor:
        shape = lms.shape
        x = lms.reshape(-1, *shape[-2:])
        if self.freq_mask > 0:
            x = mask_axis(x, -2, self.freq_mask, rng, fill, self.shared)
        if self.time_mask > 0:
            x = mask_axis(x, -1, self.time_mask, rng, fill, self.shared)
        if self.rrc:
            x = random_resize_crop(x, rng, fill, self.shared)
        return x.reshape(shape)
