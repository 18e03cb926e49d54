"""Figs. 10 and 16: Inception-ResNet-A, the 35x35 residual block (the released code's block35).

| variant | branches | expansion |
|---|---|---|
| v1 (Fig. 10) | 1x1 32 / 1x1 32 -> 3x3 32 / 1x1 32 -> 3x3 32 -> 3x3 32 | 256 |
| v2 (Fig. 16) | 1x1 32 / 1x1 32 -> 3x3 32 / 1x1 32 -> 3x3 48 -> 3x3 64 | 384 (paper), 320 (released) |
"""

from __future__ import annotations

import torch

from .layers import ConvBNReLU, ResidualInception, conv_chain

WIDTHS_V1 = (32, (32, 32), (32, 32, 32))
WIDTHS_V2 = (32, (32, 32), (32, 48, 64))


class InceptionResNetA(ResidualInception):
    """35x35xC -> 35x35xC, C = ``in_chs``; ``widths`` = (1x1, (1x1, 3x3), (1x1, 3x3, 3x3))."""

    def __init__(self, in_chs: int, widths: tuple = WIDTHS_V2, scale: float = 0.17, activate: bool = True) -> None:
        w0, (w1a, w1b), (w2a, w2b, w2c) = widths
        super().__init__(in_chs, w0 + w1b + w2c, scale, activate)
        self.branch_1x1 = ConvBNReLU(in_chs, w0, 1)
        self.branch_3x3 = conv_chain(in_chs, (w1a, 1), (w1b, 3))
        self.branch_3x3dbl = conv_chain(in_chs, (w2a, 1), (w2b, 3), (w2c, 3))

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch_1x1(x), self.branch_3x3(x), self.branch_3x3dbl(x)), 1)
