"""Datasets, robust decoding and Inception preprocessing."""

from .datasets import Augmented, Digits, ImageFolder, ListFile, Synthetic, build_dataset, collate
from .decode import DecodeError, decode_rgb, load_rgb
from .transforms import Preprocessing, eval_transform, train_transform

__all__ = [
    "Augmented",
    "DecodeError",
    "Digits",
    "ImageFolder",
    "ListFile",
    "Preprocessing",
    "Synthetic",
    "build_dataset",
    "collate",
    "decode_rgb",
    "eval_transform",
    "load_rgb",
    "train_transform",
]
