"""The inference copy of a convolutional encoder: Conv2d + BatchNorm2d pairs folded, channels-last weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from evar.encoders.base import Encoder


def optimised_for_inference(encoder: Encoder) -> Encoder:
    """A copy with each ``Conv2d`` + ``BatchNorm2d`` pair folded into one convolution and channels-last
    weights (about twice as fast on CPU; equal to the original up to float rounding, ~1e-6 relative).

    A pair is a BatchNorm2d right after a Conv2d in an ``nn.Sequential``, or one a module names in
    ``conv_bn_pairs`` (attribute names, e.g. CNN14's ``(("conv1", "bn1"), ("conv2", "bn2"))``); other
    BatchNorms stay (CNN14's ``bn0`` normalises mel bins, not a convolution's channels). The folded BatchNorm
    becomes ``nn.Identity`` so layer indices stay valid. Channels-last activations also make max-pooling about
    3.5 times faster (VGGish). An encoder without 2-d convolutions: the encoder itself.
    """
    encoder.eval()
    if not any(isinstance(m, nn.Conv2d) for m in encoder.modules()):
        return encoder
    fast = copy.deepcopy(encoder)
    for module in fast.modules():
        if isinstance(module, nn.Sequential):
            children = list(module)
            for i in range(len(children) - 1):
                conv, bn = children[i], children[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i] = nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
                    module[i + 1] = nn.Identity()
        for conv_name, bn_name in getattr(module, "conv_bn_pairs", ()):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, nn.utils.fusion.fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return fast.to(memory_format=torch.channels_last)
