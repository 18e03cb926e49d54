"""Figs. 12 and 18: Reduction-B of the Inception-ResNets, 17x17 -> 8x8 (the released Mixed_7a).

| variant | branches | output |
|---|---|---|
| v1 (Fig. 12) | 256 -> 3x3/2 384 / 256 -> 3x3/2 256 / 256 -> 3x3 256 -> 3x3/2 256 / maxpool | 896 + 896 = 1792 |
| v2 (Fig. 18) | 256 -> 3x3/2 384 / 256 -> 3x3/2 288 / 256 -> 3x3 288 -> 3x3/2 320 / maxpool | C_in + 992 |

Fig. 18's caption says "v1" where v2 is meant (docs/architecture.md, "Paper vs released code").
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import conv_chain, max_pool_valid

WIDTHS_V1 = (384, 256, (256, 256))
WIDTHS_V2 = (384, 288, (288, 320))


class ReductionBResNet(nn.Module):
    """17x17xC -> 8x8x(C + a + b + c2); ``widths`` = (a, b, (c1, c2)), each branch opened by 1x1 256."""

    def __init__(self, in_chs: int, widths: tuple = WIDTHS_V2) -> None:
        super().__init__()
        a, b, (c1, c2) = widths
        self.branch_3x3a = conv_chain(in_chs, (256, 1), (a, 3, 2, "valid"))
        self.branch_3x3b = conv_chain(in_chs, (256, 1), (b, 3, 2, "valid"))
        self.branch_3x3dbl = conv_chain(in_chs, (256, 1), (c1, 3), (c2, 3, 2, "valid"))
        self.branch_pool = max_pool_valid()
        self.out_chs = in_chs + a + b + c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch_3x3a(x), self.branch_3x3b(x), self.branch_3x3dbl(x), self.branch_pool(x)), 1)
