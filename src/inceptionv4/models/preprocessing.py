"""``Preprocessing``: what a set of weights expects its pixels to be.

One type, written once: the model card holds one, the table of released weights gives one per
checkpoint, a weights bundle and an int8 artefact store one as JSON (:meth:`Preprocessing.to_dict`,
read back through :meth:`Preprocessing.from_dict`), and the server describes the one it runs.
It is plain data; ``data.transforms`` and ``data.views`` turn it into pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .network import InceptionNet

#: resampling filters the transforms (torchvision and the on-device path) implement
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")

#: The largest input side, and the smallest crop fraction, anything here accepts: 3.4x the 299 of
#: the released weights, and an evaluation resize of at most twice the input. Bounds read from a
#: file before anything is built (a bundle saying 4096 took predict past 17 GB).
MAX_INPUT_SIZE = 1024
#: The crop protocols a network is evaluated with: views per image (docs/evaluation.md)
CROPS = (1, 10, 12, 144)


def check_crops(crops: int) -> int:
    """``crops`` if it is one of :data:`CROPS`, else the ValueError every caller gives."""
    if crops not in CROPS or isinstance(crops, bool):
        raise ValueError(f"crops must be one of {', '.join(map(str, CROPS))}; got {crops!r}")
    return crops
MIN_CROP_PCT = 0.5
FIELDS = ("input_size", "mean", "std", "interpolation", "crop_pct")


@dataclass(frozen=True)
class Preprocessing:
    """Square input of ``input_size`` pixels, evaluated by resizing the shorter side to
    ``resize_size`` (``input_size / crop_pct``) and centre-cropping; pixels in [0, 1] are then
    normalised per channel as ``(x - mean) / std``. The defaults are the released ImageNet
    checkpoints': 299 px, [-1, 1], bicubic, crop 0.875.

    Every field is checked here, so an instance is always usable; a bad value is a ValueError
    naming the field.
    """

    input_size: int = 299
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    def __post_init__(self) -> None:
        size = self.input_size
        if isinstance(size, bool) or not isinstance(size, int) or not 32 <= size <= MAX_INPUT_SIZE:
            raise ValueError(f"input_size {str(size)[:20]} is not an integer side of 32-{MAX_INPUT_SIZE} pixels")
        std = _three("std", self.std)
        if any(s <= 0 for s in std):
            raise ValueError(f"std {list(self.std)} must be positive (it divides)")
        object.__setattr__(self, "mean", _three("mean", self.mean))
        object.__setattr__(self, "std", std)
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {str(self.interpolation)[:20]!r} is not one of {', '.join(INTERPOLATIONS)}")
        crop = self.crop_pct
        if isinstance(crop, bool) or not isinstance(crop, int | float) or not MIN_CROP_PCT <= crop <= 1:
            raise ValueError(f"crop_pct {str(crop)[:20]} is not in [{MIN_CROP_PCT}, 1]")

    @classmethod
    def of(cls, model: InceptionNet, input_size: int | None = None) -> Preprocessing:
        """The preprocessing of a network built by ``create_model`` (its card's), at
        ``input_size`` if given."""
        pre = model.pretrained_cfg.preprocessing
        return pre if input_size is None else pre.at(input_size)

    def at(self, input_size: int) -> Preprocessing:
        """The same preprocessing at another input side."""
        return Preprocessing(input_size, self.mean, self.std, self.interpolation, self.crop_pct)

    @property
    def resize_size(self) -> int:
        """The shorter side an image is resized to before the centre crop."""
        return math.floor(self.input_size / self.crop_pct)

    def summary(self) -> str:
        """One line for people: ``299 px, mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5), bicubic, crop 0.875``."""
        return (f"{self.input_size} px, mean {_short(self.mean)}, std {_short(self.std)}, {self.interpolation}, "
                f"crop {self.crop_pct:g}")  # fmt: skip

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields, as bundles, artefacts and ``/v1/model`` carry them (``input_size``
        as ``[3, H, W]``)."""
        return {
            "input_size": [3, self.input_size, self.input_size],
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
        }

    @classmethod
    def from_dict(cls, d: object) -> Preprocessing:
        """Read :meth:`to_dict`'s form back (``input_size`` may also be one integer); a ValueError
        names what is missing or wrong, for the caller to prefix with the file it came from."""
        if not isinstance(d, Mapping):
            raise ValueError("is not a JSON object")
        missing = [k for k in FIELDS if k not in d]
        if missing:
            raise ValueError(f"lacks {', '.join(missing)}")
        size = d["input_size"]
        if isinstance(size, list | tuple):
            if not (len(size) == 3 and size[0] == 3 and size[1] == size[2]):
                raise ValueError(f"input_size {str(size)[:40]} is not (3, S, S)")
            size = size[1]
        return cls(size, d["mean"], d["std"], d["interpolation"], d["crop_pct"])


def _three(name: str, value: object) -> tuple[float, float, float]:
    if not (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise ValueError(f"{name} is {str(value)[:40]}, not 3 finite numbers")
    return tuple(float(v) for v in value)


def _short(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
