"""Fig. 7: Reduction-A, 35x35 -> 17x17, shared by all three networks with Table 1's k, l, m, n."""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNReLU, conv_chain, max_pool_valid

#: Table 1 of the paper (plus the released Inception-ResNet-v2), filter counts (k, l, m, n).
TABLE1 = {
    "inception_v4": (192, 224, 256, 384),
    "inception_resnet_v1": (192, 192, 256, 384),
    "inception_resnet_v2": (256, 256, 384, 384),
}


class ReductionA(nn.Module):
    """[3x3/2 n V | 1x1 k -> 3x3 l -> 3x3/2 m V | maxpool 3x3/2 V]; out = C_in + n + m.

    The figure draws the pool branch first; every released checkpoint concatenates it last.
    """

    def __init__(self, in_chs: int, k: int, l: int, m: int, n: int) -> None:
        super().__init__()
        self.branch_3x3 = ConvBNReLU(in_chs, n, 3, stride=2, padding="valid")
        self.branch_3x3dbl = conv_chain(in_chs, (k, 1), (l, 3), (m, 3, 2, "valid"))
        self.branch_pool = max_pool_valid()
        self.out_chs = in_chs + n + m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch_3x3(x), self.branch_3x3dbl(x), self.branch_pool(x)), 1)
