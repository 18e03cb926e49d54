"""Inception preprocessing as torchvision transforms: ranges, sizes, and augmentation as a function of
(seed, epoch, index)."""

import numpy as np
import pytest
import torch
from PIL import Image

from inceptionv4.data import (
    Augmented,
    Preprocessing,
    Synthetic,
    eval_transform,
    train_transform,
)


def test_preprocessing_ranges_and_sizes():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8))
    pre = Preprocessing(input_size=75, crop_pct=0.875)
    assert pre.resize_size == 85
    x = eval_transform(pre)(img)
    assert x.shape == (3, 75, 75) and x.dtype == torch.float32
    assert -1.0 <= x.min() < -0.9 and 0.9 < x.max() <= 1.0  # [-1, 1], as the checkpoints expect
    y = train_transform(pre, color_jitter=0.2)(img)
    assert y.shape == (3, 75, 75)
    with pytest.raises(ValueError, match="interpolation"):
        Preprocessing(interpolation="lanczos9")


def test_augmentation_depends_only_on_seed_epoch_index():
    ds = Synthetic(4, 2, 48, seed=0)
    aug = Augmented(ds, train_transform(Preprocessing(input_size=32)), seed=7)
    first = aug[2][0]
    torch.manual_seed(123)  # the global RNG does not matter
    assert torch.equal(aug[2][0], first)
    aug.set_epoch(1)
    assert not torch.equal(aug[2][0], first)
