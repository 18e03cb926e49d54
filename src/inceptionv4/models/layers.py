"""The few layers every block is made of.

Every convolution in the paper is conv -> BN -> ReLU unless marked "linear" (docs/architecture.md), so one
small module, :class:`ConvBNReLU`, carries all of them. Padding is spelled the way the paper
draws it: ``"valid"`` (the figures' "V") or ``"same"`` (everything else, stride 1 only).
"""

from __future__ import annotations

import torch
from torch import nn

#: BatchNorm epsilon of the released TensorFlow checkpoints (and of every port of them).
BN_EPS = 1e-3

Size2 = int | tuple[int, int]


def _pair(v: Size2) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _padding(kernel_size: Size2, stride: int, padding: str) -> tuple[int, int]:
    """TensorFlow's SAME (stride 1, odd kernel) or VALID as explicit symmetric padding."""
    kh, kw = _pair(kernel_size)
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        if stride != 1 or kh % 2 == 0 or kw % 2 == 0:
            # SAME with stride 2 pads asymmetrically in TF; the paper never uses it.
            raise ValueError(f"'same' padding needs stride 1 and odd kernels, got {kernel_size}/{stride}")
        return (kh // 2, kw // 2)
    raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")


class ConvBNReLU(nn.Module):
    """conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU: the paper's ordinary layer."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: Size2,
        stride: int = 1,
        padding: str = "same",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride=stride, padding=_padding(kernel_size, stride, padding), bias=False
        )
        self.bn = nn.BatchNorm2d(out_chs, eps=BN_EPS)
        self.act = nn.ReLU(inplace=True)
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def conv_chain(in_chs: int, *layers: tuple) -> nn.Sequential:
    """A branch: a chain of ConvBNReLU given as ``(out_chs, kernel[, stride[, padding]])`` tuples."""
    mods = []
    for spec in layers:
        out_chs, kernel, *rest = spec
        mods.append(ConvBNReLU(in_chs, out_chs, kernel, *rest))
        in_chs = out_chs
    return nn.Sequential(*mods)


def avg_pool_branch(in_chs: int, out_chs: int) -> nn.Sequential:
    """3x3 average pool (stride 1, SAME) -> 1x1 conv.

    ``count_include_pad=False`` matches TensorFlow, which averages only real pixels at the border.
    """
    return nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), ConvBNReLU(in_chs, out_chs, 1))


def max_pool_valid() -> nn.MaxPool2d:
    """The 3x3/2 VALID max pool that every reduction uses."""
    return nn.MaxPool2d(3, stride=2)


class ClassifierHead(nn.Module):
    """Global pool -> dropout (keep 0.8 in the paper) -> fully connected (Fig. 9, Fig. 15).

    ``pool=""`` (timm's unpooled head) keeps the (N, C, H, W) map: with classes, the classifier
    runs at every position.
    """

    POOLS = ("avg", "max", "avgmax", "")

    def __init__(self, in_chs: int, num_classes: int, pool: str = "avg", drop_rate: float = 0.2) -> None:
        super().__init__()
        if pool not in self.POOLS:
            raise ValueError(f"global_pool must be one of {self.POOLS}, got {pool!r}")
        self.pool_type = pool
        self.in_chs = in_chs
        self.num_features = in_chs * (2 if pool == "avgmax" else 1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, C) or (N, 2C); "": unpooled
        if self.pool_type == "":
            return x
        if self.pool_type == "avg":
            return x.mean((2, 3))
        if self.pool_type == "max":
            return x.amax((2, 3))
        return torch.cat((x.mean((2, 3)), x.amax((2, 3))), 1)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.pool(x))
        if pre_logits:
            return x
        if self.pool_type == "":  # unpooled: the classifier at every position, (N, classes, H, W)
            return self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.fc(x)

    def reset(self, num_classes: int, pool: str | None = None) -> ClassifierHead:
        """The same kind of head for another class count (a fresh classifier)."""
        return ClassifierHead(self.in_chs, num_classes, self.pool_type if pool is None else pool, self.drop.p)


class EmbeddingHead(ClassifierHead):
    """facenet's face-embedding head: pool -> dropout -> linear (no bias) -> BatchNorm1d ->
    L2-normalised embedding, or logits over identities when ``num_classes`` > 0."""

    def __init__(
        self, in_chs: int, embedding_dim: int, num_classes: int = 0, pool: str = "avg", drop_rate: float = 0.2
    ):
        if pool == "":
            raise ValueError("an embedding head pools its input: global_pool='' is not available with embedding_dim")
        super().__init__(in_chs, 0, pool, drop_rate)
        self.embedding_dim = embedding_dim
        self.proj = nn.Linear(self.num_features, embedding_dim, bias=False)
        self.bn = nn.BatchNorm1d(embedding_dim, eps=BN_EPS)
        self.fc = nn.Linear(embedding_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.normalize = num_classes == 0

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.pool(x))  # (N, C)
        if pre_logits:
            return x
        emb = self.bn(self.proj(x))  # (N, embedding_dim)
        return nn.functional.normalize(emb, dim=1) if self.normalize else self.fc(emb)

    def reset(self, num_classes: int, pool: str | None = None) -> EmbeddingHead:
        """A fresh classifier over the embedding; the projection and its BatchNorm are kept."""
        head = EmbeddingHead(self.in_chs, self.embedding_dim, num_classes, self.pool_type if pool is None else pool,
                             self.drop.p)  # fmt: skip
        head.proj, head.bn = self.proj, self.bn
        return head


class ResidualInception(nn.Module):
    """What every Inception-ResNet block shares (Figs. 10-13, 16-19, Sec. 3.3 and Fig. 20).

    ``branches(x)`` -> concatenation -> 1x1 *linear* "filter expansion" conv back to the input
    width (no BN, no ReLU; with a bias, as in every released checkpoint) -> multiply by the
    residual ``scale`` -> add to the input -> ReLU (skipped for the released code's last block).
    """

    def __init__(self, in_chs: int, mixed_chs: int, scale: float, activate: bool = True) -> None:
        super().__init__()
        self.expand = nn.Conv2d(mixed_chs, in_chs, 1, bias=True)
        self.scale = float(scale)
        self.activate = activate
        self.out_chs = in_chs

    def branches(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.expand(self.branches(x)) * self.scale
        return torch.relu(out) if self.activate else out

    def extra_repr(self) -> str:
        return f"scale={self.scale}, activate={self.activate}"


class AuxHead(nn.Module):
    """The released code's auxiliary classifier on the 17x17 map (TF-slim ``AuxLogits``; the paper
    does not mention it): avg pool 5x5/3 VALID -> 1x1 conv 128 -> 5x5 conv 768 VALID -> fc.

    At 299x299 the 17x17 map pools to exactly 5x5; at other sizes an adaptive pool brings it to
    5x5, so the head works at every input size the network takes.
    """

    def __init__(self, in_chs: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3)
        self.conv1 = ConvBNReLU(in_chs, 128, 1)
        self.conv2 = ConvBNReLU(128, 768, 5, padding="valid")
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] >= 5 and x.shape[-2] >= 5:
            x = self.pool(x)  # 17x17 -> 5x5
        x = self.conv1(x)
        if x.shape[-2:] != (5, 5):
            x = nn.functional.adaptive_avg_pool2d(x, 5)
        return self.fc(self.conv2(x).flatten(1))  # (N, 768) -> (N, classes)
