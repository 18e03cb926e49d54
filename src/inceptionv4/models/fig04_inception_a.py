"""Fig. 4: Inception-A, the 35x35 block of Inception-v4 (x4). 35x35x384 -> 35x35x384."""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNReLU, avg_pool_branch, conv_chain


class InceptionA(nn.Module):
    """[1x1 96 | 1x1 64 -> 3x3 96 | 1x1 64 -> 3x3 96 -> 3x3 96 | avgpool -> 1x1 96] = 384.

    The figure draws the pool branch first; the released checkpoint concatenates it last.
    """

    def __init__(self, in_chs: int = 384) -> None:
        super().__init__()
        self.branch_1x1 = ConvBNReLU(in_chs, 96, 1)
        self.branch_3x3 = conv_chain(in_chs, (64, 1), (96, 3))
        self.branch_3x3dbl = conv_chain(in_chs, (64, 1), (96, 3), (96, 3))
        self.branch_pool = avg_pool_branch(in_chs, 96)
        self.out_chs = 384

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch_1x1(x), self.branch_3x3(x), self.branch_3x3dbl(x), self.branch_pool(x)), 1)
