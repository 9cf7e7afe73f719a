"""Fine-tuning augmentations against hand-computed values (exact unless stated)."""

from __future__ import annotations

import numpy as np
import torch

from evar.protocols.augment import (
    FeatureAugment, mask_axis, mix_training, mixup, random_resize_crop, sample_mix_training, sample_mixup,
)


class ScriptedRng:
    """Stands in for numpy's Generator with scripted draws: ``uniform`` returns the next value mapped
    into [low, high), ``integers`` the next integer."""

    def __init__(self, uniforms=(), integers=()) -> None:
        self.uniforms, self.ints = list(uniforms), list(integers)

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        return low + (high - low) * self.uniforms.pop(0)

    def integers(self, low: int, high: int) -> int:
        value = self.ints.pop(0)
        assert low <= value < high
        return value


def test_mixup_per_example_lambda_and_partner():
    x = torch.tensor([[1.0, 1.0], [3.0, 3.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    xm, ym = mixup(x, y, np.array([0.25, 1.0]), np.array([1, 0]))
    assert torch.equal(xm, torch.tensor([[2.5, 2.5], [3.0, 3.0]]))  # 0.25*1 + 0.75*3; 1.0*3
    assert torch.equal(ym, torch.tensor([[0.25, 0.75], [0.0, 1.0]]))
    lam, perm = sample_mixup(1000, 0.5, np.random.default_rng(0))
    assert lam.shape == (1000,) and ((lam >= 0) & (lam <= 1)).all() and sorted(perm) == list(range(1000))
    assert abs(lam.mean() - 0.5) < 0.05 and (lam < 0.1).mean() > 0.15  # Beta(0.5, 0.5): mean 1/2, U-shaped


def test_mix_training_blend_and_multi_hot_label():
    x = torch.tensor([[2.0, 2.0], [4.0, 4.0], [8.0, 8.0]])
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    xm, ym = mix_training(x, y, np.array([0.5, 0.25, 1.0]), np.array([1, 2, 0]))
    assert torch.equal(xm, torch.tensor([[3.0, 3.0], [7.0, 7.0], [8.0, 8.0]]))  # .5*2+.5*4; .25*4+.75*8; 8
    # sign(y_i + y_j): union of the two clips' classes, 1 not 2 when they share a class
    assert torch.equal(ym, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    a, perm = sample_mix_training(500, (0.3, 0.7), np.random.default_rng(0))
    assert a.min() >= 0.3 and a.max() <= 0.7 and sorted(perm) == list(range(500))


def test_mask_axis_follows_torchaudio_rule():
    lms = torch.arange(2 * 3 * 10, dtype=torch.float32).reshape(2, 3, 10)
    # width = int(0.6 * 4) = 2, start = int(0.5 * (10 - 2)) = 4 -> frames 4, 5 of example 0;
    # example 1: width int(0.99 * 4) = 3, start int(0.0 * 7) = 0 -> frames 0..2
    out = mask_axis(lms, -1, 4, ScriptedRng([0.6, 0.5, 0.99, 0.0]), fill=-1.0)
    expected = lms.clone()
    expected[0, :, 4:6] = -1.0
    expected[1, :, 0:3] = -1.0
    assert torch.equal(out, expected)
    # frequency axis, one band shared by the batch (EVAR/torchaudio on 3-D input):
    # width int(0.7 * 2) = 1, start int(0.5 * (3 - 1)) = 1 -> bin 1 of both examples
    out = mask_axis(lms, -2, 2, ScriptedRng([0.7, 0.5]), fill=0.0, shared=True)
    expected = lms.clone()
    expected[:, 1:2, :] = 0.0
    assert torch.equal(out, expected)
    assert torch.equal(lms, torch.arange(60, dtype=torch.float32).reshape(2, 3, 10))  # input untouched


def test_random_resize_crop_hand_values():
    lms = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])  # (B=1, F=2, T=3)
    # no virtual margin, full frequency, 2 of 3 frames (w = int(2/3 * 3) = 2) starting at frame 1:
    # crop (2, 5 | 3, 6) resized back to 3 frames (bicubic, corners aligned) -> x1, (x1 + x2)/2, x2
    out = random_resize_crop(lms, ScriptedRng([0.0, 0.0], [1]), virtual_scale=(1.0, 1.0),
                             freq_scale=(1.0, 1.0), time_scale=(2 / 3, 2 / 3))
    assert torch.allclose(out, torch.tensor([[[2.0, 2.5, 3.0], [5.0, 5.5, 6.0]]]), atol=1e-6)
    # virtual canvas 2x wider (6 frames, input centred at frames 1..3, fill 9 elsewhere);
    # a 3-frame crop from canvas frame 0 is (fill, x0, x1) at the original size
    out = random_resize_crop(lms, ScriptedRng([0.0, 0.0], [0]), fill=9.0, virtual_scale=(1.0, 2.0),
                             freq_scale=(1.0, 1.0), time_scale=(1.0, 1.0))
    assert torch.allclose(out, torch.tensor([[[9.0, 1.0, 2.0], [9.0, 4.0, 5.0]]]), atol=1e-6)
    # identity when the crop is the input itself
    out = random_resize_crop(lms, np.random.default_rng(0), virtual_scale=(1.0, 1.0), freq_scale=(1.0, 1.0),
                             time_scale=(1.0, 1.0))
    assert torch.allclose(out, lms, atol=1e-6)


def test_feature_augment_shapes_sharing_and_fill():
    rng = np.random.default_rng(3)
    lms = torch.randn(4, 16, 40)
    aug = FeatureAugment(freq_mask=6, time_mask=10, rrc=False)
    out = aug(lms, rng, fill=123.0)
    assert out.shape == lms.shape and aug.active
    masked = out == 123.0
    assert masked.any() and not FeatureAugment().active
    shared = FeatureAugment(freq_mask=6, time_mask=10, shared=True)(lms, np.random.default_rng(1), fill=123.0)
    assert all(torch.equal(shared[0] == 123.0, shared[b] == 123.0) for b in range(4))
    four_d = FeatureAugment(freq_mask=4, time_mask=4, rrc=True)(lms[:, None], np.random.default_rng(2))
    assert four_d.shape == (4, 1, 16, 40) and torch.isfinite(four_d).all()
