"""Figs. 13 and 19: Inception-ResNet-C, the 8x8 residual block (the released code's block8).

| variant | branches | expansion |
|---|---|---|
| v1 (Fig. 13) | 1x1 192 / 1x1 192 -> 1x3 192 -> 3x1 192 | 1792 |
| v2 (Fig. 19) | 1x1 192 / 1x1 192 -> 1x3 224 -> 3x1 256 | 2048 drawn, 2144 built (paper layout), 2080 (released) |
"""

from __future__ import annotations

import torch

from .layers import ConvBNReLU, ResidualInception, conv_chain

WIDTHS_V1 = (192, (192, 192, 192))
WIDTHS_V2 = (192, (192, 224, 256))


class InceptionResNetC(ResidualInception):
    """8x8xC -> 8x8xC; ``widths`` = (1x1, (1x1, 1x3, 3x1))."""

    def __init__(self, in_chs: int, widths: tuple = WIDTHS_V2, scale: float = 0.20, activate: bool = True) -> None:
        w0, (w1a, w1b, w1c) = widths
        super().__init__(in_chs, w0 + w1c, scale, activate)
        self.branch_1x1 = ConvBNReLU(in_chs, w0, 1)
        self.branch_3x3 = conv_chain(in_chs, (w1a, 1), (w1b, (1, 3)), (w1c, (3, 1)))

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch_1x1(x), self.branch_3x3(x)), 1)
