"""The stem of the *released* Inception-ResNet-v2 (no figure in the paper): 299x299x3 -> 35x35x320.

Google's checkpoint (and every port: timm, Keras, Cadene) uses an Inception-v3-like stem and a
"Mixed_5b" block instead of Fig. 3 (docs/architecture.md, "Paper vs released code").
"""

from __future__ import annotations

import torch
from torch import nn

from .fig14_stem_resnet_v1 import add_stem_convs
from .layers import ConvBNReLU, avg_pool_branch, conv_chain, max_pool_valid


class Mixed5b(nn.Module):
    """[1x1 96 | 1x1 48 -> 5x5 64 | 1x1 64 -> 3x3 96 -> 3x3 96 | avgpool -> 1x1 64]: 35x35x192 -> 35x35x320."""

    def __init__(self, in_chs: int = 192) -> None:
        super().__init__()
        self.branch_1x1 = ConvBNReLU(in_chs, 96, 1)
        self.branch_5x5 = conv_chain(in_chs, (48, 1), (64, 5))
        self.branch_3x3dbl = conv_chain(in_chs, (64, 1), (96, 3), (96, 3))
        self.branch_pool = avg_pool_branch(in_chs, 64)
        self.out_chs = 320

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch_1x1(x), self.branch_5x5(x), self.branch_3x3dbl(x), self.branch_pool(x)), 1)


class StemReleasedV2(nn.Sequential):
    """3x3/2 32 V -> 3x3 32 V -> 3x3 64 -> maxpool/2 -> 1x1 80 -> 3x3 192 V -> maxpool/2 -> Mixed_5b."""

    out_chs = 320

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        add_stem_convs(self, in_chans)  # Fig. 14's first six: 71x71x192
        self.pool5a = max_pool_valid()  # 35x35x192
        self.mixed_5b = Mixed5b(192)  # 35x35x320
