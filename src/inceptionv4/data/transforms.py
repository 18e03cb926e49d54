"""Inception preprocessing (torchvision transforms v2): pixels scaled to [-1, 1].

Training: random-resized crop (area 8%-100%, aspect 3/4-4/3), horizontal flip, optional colour
jitter. Evaluation: resize the shorter side to ``size / crop_pct``, then a centre crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.transforms import InterpolationMode, v2

_INTERP = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class Preprocessing:
    """What a network expects; a model card or a weights bundle carries one."""

    input_size: int = 299
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERP:
            raise ValueError(f"interpolation must be one of {sorted(_INTERP)}, got {self.interpolation!r}")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")

    @classmethod
    def of(cls, model: torch.nn.Module, input_size: int | None = None) -> Preprocessing:
        """The preprocessing of a model built by create_model (its card), at ``input_size`` if given."""
        card = model.pretrained_cfg
        return cls(
            input_size or card.input_size[-1], tuple(card.mean), tuple(card.std), card.interpolation, card.crop_pct
        )

    @property
    def resize_size(self) -> int:
        return math.floor(self.input_size / self.crop_pct)


def train_transform(
    pre: Preprocessing,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    color_jitter: float = 0.0,
) -> v2.Compose:
    """Inception-style training augmentation; a PIL image in, a normalised (3, S, S) float tensor out."""
    steps = [
        v2.ToImage(),
        v2.RandomResizedCrop(
            pre.input_size, scale=scale, ratio=ratio, interpolation=_INTERP[pre.interpolation], antialias=True
        ),
    ]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if color_jitter > 0:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(pre.mean), list(pre.std))]
    return v2.Compose(steps)


def eval_transform(pre: Preprocessing) -> v2.Compose:
    """Resize the shorter side to ``input_size / crop_pct``, centre-crop ``input_size``, normalise."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(pre.resize_size, interpolation=_INTERP[pre.interpolation], antialias=True),
            v2.CenterCrop(pre.input_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(pre.mean), list(pre.std)),
        ]
    )
