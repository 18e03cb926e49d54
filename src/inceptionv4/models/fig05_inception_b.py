"""Fig. 5: Inception-B, the 17x17 block of Inception-v4 (x7). 17x17x1024 -> 17x17x1024."""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNReLU, avg_pool_branch, conv_chain


class InceptionB(nn.Module):
    """[1x1 384 | 1x1 192 -> 1x7 224 -> 7x1 256 | 1x1 192 -> 7x1 192 -> 1x7 224 -> 7x1 224 -> 1x7 256
    | avgpool -> 1x1 128] = 1024.

    The 4th branch alternates 7x1/1x7 as in the released checkpoint (the figure starts with 1x7).
    """

    def __init__(self, in_chs: int = 1024) -> None:
        super().__init__()
        self.branch_1x1 = ConvBNReLU(in_chs, 384, 1)
        self.branch_7x7 = conv_chain(in_chs, (192, 1), (224, (1, 7)), (256, (7, 1)))
        self.branch_7x7dbl = conv_chain(in_chs, (192, 1), (192, (7, 1)), (224, (1, 7)), (224, (7, 1)), (256, (1, 7)))
        self.branch_pool = avg_pool_branch(in_chs, 128)
        self.out_chs = 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch_1x1(x), self.branch_7x7(x), self.branch_7x7dbl(x), self.branch_pool(x)), 1)
