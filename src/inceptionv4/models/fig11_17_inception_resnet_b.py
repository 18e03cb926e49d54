"""Figs. 11 and 17: Inception-ResNet-B, the 17x17 residual block (the released code's block17).

| variant | branches | expansion |
|---|---|---|
| v1 (Fig. 11) | 1x1 128 / 1x1 128 -> 1x7 128 -> 7x1 128 | 896 |
| v2 (Fig. 17) | 1x1 192 / 1x1 128 -> 1x7 160 -> 7x1 192 | 1154 drawn, 1152 built (paper layout), 1088 (released) |
"""

from __future__ import annotations

import torch

from .layers import ConvBNReLU, ResidualInception, conv_chain

WIDTHS_V1 = (128, (128, 128, 128))
WIDTHS_V2 = (192, (128, 160, 192))


class InceptionResNetB(ResidualInception):
    """17x17xC -> 17x17xC; ``widths`` = (1x1, (1x1, 1x7, 7x1))."""

    def __init__(self, in_chs: int, widths: tuple = WIDTHS_V2, scale: float = 0.10, activate: bool = True) -> None:
        w0, (w1a, w1b, w1c) = widths
        super().__init__(in_chs, w0 + w1c, scale, activate)
        self.branch_1x1 = ConvBNReLU(in_chs, w0, 1)
        self.branch_7x7 = conv_chain(in_chs, (w1a, 1), (w1b, (1, 7)), (w1c, (7, 1)))

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch_1x1(x), self.branch_7x7(x)), 1)
