"""Inference form: BatchNorm folded into the convolution before it (same function, fewer ops)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .layers import ConvBNReLU


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every ConvBNReLU's BN folded into its conv.

    conv(x) * g / sqrt(var + eps) + (b - mean * g / sqrt(var + eps)): the conv gains a bias and
    the BN becomes an identity. Only valid for inference (the running statistics are frozen in).
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if isinstance(module, ConvBNReLU) and isinstance(module.bn, nn.BatchNorm2d):
            conv, bn = module.conv, module.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              conv.dilation, conv.groups, bias=True).to(conv.weight.device, conv.weight.dtype)  # fmt: skip
            fused.weight.copy_(conv.weight * scale[:, None, None, None])
            base = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            fused.bias.copy_((base - bn.running_mean) * scale + bn.bias)
            module.conv, module.bn = fused, nn.Identity()
    return folded
