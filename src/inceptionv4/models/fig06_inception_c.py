"""Fig. 6: Inception-C, the 8x8 block of Inception-v4 (x3). 8x8x1536 -> 8x8x1536."""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNReLU, avg_pool_branch


class InceptionC(nn.Module):
    """[1x1 256 | 1x1 384 -> {1x3 256, 3x1 256} | 1x1 384 -> 3x1 448 -> 1x3 512 -> {1x3 256, 3x1 256}
    | avgpool -> 1x1 256] = 1536.

    The 3x1 -> 1x3 order of the 4th branch is the released checkpoint's (the figure draws 1x3 first).
    """

    def __init__(self, in_chs: int = 1536) -> None:
        super().__init__()
        self.branch_1x1 = ConvBNReLU(in_chs, 256, 1)
        self.branch_3x3_reduce = ConvBNReLU(in_chs, 384, 1)
        self.branch_3x3_1x3 = ConvBNReLU(384, 256, (1, 3))
        self.branch_3x3_3x1 = ConvBNReLU(384, 256, (3, 1))
        self.branch_3x3dbl_reduce = ConvBNReLU(in_chs, 384, 1)
        self.branch_3x3dbl_3x1 = ConvBNReLU(384, 448, (3, 1))
        self.branch_3x3dbl_1x3 = ConvBNReLU(448, 512, (1, 3))
        self.branch_3x3dbl_split_1x3 = ConvBNReLU(512, 256, (1, 3))
        self.branch_3x3dbl_split_3x1 = ConvBNReLU(512, 256, (3, 1))
        self.branch_pool = avg_pool_branch(in_chs, 256)
        self.out_chs = 1536

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # branches run in the released code's order, which the Keras/TF-slim converters rely on
        x0 = self.branch_1x1(x)  # 8x8x256
        b1 = self.branch_3x3_reduce(x)  # 8x8x384
        x1a, x1b = self.branch_3x3_1x3(b1), self.branch_3x3_3x1(b1)  # 2 x 8x8x256
        b2 = self.branch_3x3dbl_1x3(self.branch_3x3dbl_3x1(self.branch_3x3dbl_reduce(x)))  # 8x8x512
        x2a, x2b = self.branch_3x3dbl_split_1x3(b2), self.branch_3x3dbl_split_3x1(b2)  # 2 x 8x8x256
        return torch.cat((x0, x1a, x1b, x2a, x2b, self.branch_pool(x)), 1)  # 8x8x1536
