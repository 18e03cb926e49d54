"""Inception preprocessing (torchvision transforms v2) of a :class:`Preprocessing`.

Training: random-resized crop (area 8%-100%, aspect 3/4-4/3), horizontal flip, optional colour
jitter. Evaluation: resize the shorter side to ``size / crop_pct``, then a centre crop.
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode, v2

from ..models.preprocessing import INTERPOLATIONS, Preprocessing

INTERPOLATION_MODES = {name: InterpolationMode[name.upper()] for name in INTERPOLATIONS}


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
            pre.input_size, scale=scale, ratio=ratio, interpolation=INTERPOLATION_MODES[pre.interpolation], antialias=True
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
            v2.Resize(pre.resize_size, interpolation=INTERPOLATION_MODES[pre.interpolation], antialias=True),
            v2.CenterCrop(pre.input_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(pre.mean), list(pre.std)),
        ]
    )
