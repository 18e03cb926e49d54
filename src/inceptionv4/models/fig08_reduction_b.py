"""Fig. 8: Reduction-B of Inception-v4, 17x17x1024 -> 8x8x1536."""

from __future__ import annotations

import torch
from torch import nn

from .layers import conv_chain, max_pool_valid


class ReductionB(nn.Module):
    """[1x1 192 -> 3x3/2 192 V | 1x1 256 -> 1x7 256 -> 7x1 320 -> 3x3/2 320 V | maxpool 3x3/2 V] = 1536."""

    def __init__(self, in_chs: int = 1024) -> None:
        super().__init__()
        self.branch_3x3 = conv_chain(in_chs, (192, 1), (192, 3, 2, "valid"))
        self.branch_7x7x3 = conv_chain(in_chs, (256, 1), (256, (1, 7)), (320, (7, 1)), (320, 3, 2, "valid"))
        self.branch_pool = max_pool_valid()
        self.out_chs = in_chs + 192 + 320

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch_3x3(x), self.branch_7x7x3(x), self.branch_pool(x)), 1)
