"""Fig. 3: the stem of Inception-v4 and of the paper's Inception-ResNet-v2.

299x299x3 -> 35x35x384. Branch order inside the three split points follows the released
checkpoint (the figure draws the same branches; only the concatenation order matters).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNReLU, conv_chain, max_pool_valid


class StemSplit1(nn.Module):
    """[maxpool 3x3/2 V | 3x3/2 96 V]: 147x147x64 -> 73x73x160 (the released code's Mixed_3a)."""

    def __init__(self, in_chs: int = 64) -> None:
        super().__init__()
        self.branch_pool = max_pool_valid()
        self.branch_conv = ConvBNReLU(in_chs, 96, 3, stride=2, padding="valid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch_pool(x), self.branch_conv(x)), 1)


class StemSplit2(nn.Module):
    """[1x1 64 -> 3x3 96 V | 1x1 64 -> 7x1 64 -> 1x7 64 -> 3x3 96 V]: 73x73x160 -> 71x71x192 (Mixed_4a)."""

    def __init__(self, in_chs: int = 160) -> None:
        super().__init__()
        self.branch_3x3 = conv_chain(in_chs, (64, 1), (96, 3, 1, "valid"))
        # The released checkpoint applies 1x7 before 7x1 (the figure draws 7x1 first).
        self.branch_7x7 = conv_chain(in_chs, (64, 1), (64, (1, 7)), (64, (7, 1)), (96, 3, 1, "valid"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch_3x3(x), self.branch_7x7(x)), 1)


class StemSplit3(nn.Module):
    """[3x3/2 192 V | maxpool /2 V]: 71x71x192 -> 35x35x384 (Mixed_5a)."""

    def __init__(self, in_chs: int = 192) -> None:
        super().__init__()
        self.branch_conv = ConvBNReLU(in_chs, 192, 3, stride=2, padding="valid")
        self.branch_pool = max_pool_valid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch_conv(x), self.branch_pool(x)), 1)


class Stem(nn.Sequential):
    """Fig. 3. A Sequential, so that feature taps can sit between its steps."""

    out_chs = 384

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.conv1a = ConvBNReLU(in_chans, 32, 3, stride=2, padding="valid")  # 149x149x32
        self.conv2a = ConvBNReLU(32, 32, 3, padding="valid")  # 147x147x32
        self.conv2b = ConvBNReLU(32, 64, 3)  # 147x147x64
        self.mixed_3a = StemSplit1(64)  # 73x73x160
        self.mixed_4a = StemSplit2(160)  # 71x71x192
        self.mixed_5a = StemSplit3(192)  # 35x35x384
