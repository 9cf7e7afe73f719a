"""The inference copy of an encoder: Conv2d + BatchNorm2d pairs folded, channels-last weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from evar.encoders.base import Encoder


def optimised_for_inference(encoder: Encoder) -> Encoder:
    """A copy with each ``Conv2d`` + ``BatchNorm2d`` pair folded into one convolution and channels-last
    weights (about twice as fast on CPU; equal to the original up to float rounding, ~1e-6 relative).

    Returned only when every BatchNorm2d follows a Conv2d in an ``nn.Sequential``; otherwise the encoder
    itself. The folded BatchNorm becomes ``nn.Identity`` so layer indices stay valid.
    """
    encoder.eval()
    if not any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules()):
        return encoder
    fast = copy.deepcopy(encoder)
    folded = 0
    for module in fast.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module)
        for i in range(len(children) - 1):
            conv, bn = children[i], children[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module[i] = nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
                module[i + 1] = nn.Identity()
                folded += 1
    if folded != sum(isinstance(m, nn.BatchNorm2d) for m in encoder.modules()) or \
            any(isinstance(m, nn.BatchNorm2d) for m in fast.modules()):
        return encoder
    return fast.to(memory_format=torch.channels_last)
