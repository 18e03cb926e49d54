"""Fig. 14: the stem of Inception-ResNet-v1, 299x299x3 -> 35x35x256 (facenet's layout)."""

from __future__ import annotations

from torch import nn

from .layers import ConvBNReLU, max_pool_valid


def add_stem_convs(stem: nn.Sequential, in_chans: int) -> None:
    """Add Fig. 14's first six layers to ``stem``, in order, under the checkpoints' names: 299x299x3
    -> 71x71x192. The released Inception-ResNet-v2 stem opens with the same six."""
    stem.conv1a = ConvBNReLU(in_chans, 32, 3, stride=2, padding="valid")  # 149x149x32
    stem.conv2a = ConvBNReLU(32, 32, 3, padding="valid")  # 147x147x32
    stem.conv2b = ConvBNReLU(32, 64, 3)  # 147x147x64
    stem.pool3a = max_pool_valid()  # 73x73x64
    stem.conv3b = ConvBNReLU(64, 80, 1)  # 73x73x80
    stem.conv4a = ConvBNReLU(80, 192, 3, padding="valid")  # 71x71x192


class StemResNetV1(nn.Sequential):
    """3x3/2 32 V -> 3x3 32 V -> 3x3 64 -> maxpool 3x3/2 V -> 1x1 80 -> 3x3 192 V -> 3x3/2 256 V."""

    out_chs = 256

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        add_stem_convs(self, in_chans)
        self.conv4b = ConvBNReLU(192, 256, 3, stride=2, padding="valid")  # 35x35x256
