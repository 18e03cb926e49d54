"""Datasets, robust decoding and Inception preprocessing."""

from .build import build_dataset, run_split, write_list
from .datasets import Augmented, Batch, DigitCanvas, Digits, ImageFolder, ListFile, Synthetic, collate
from .decode import DecodeError, decode_rgb, load_rgb
from .device_augment import DeviceAugment, DeviceBatches, EncodedImages, collate_encoded
from .transforms import Preprocessing, eval_transform, train_transform

__all__ = [
    "Augmented",
    "DecodeError",
    "DeviceAugment",
    "Batch",
    "DeviceBatches",
    "DigitCanvas",
    "Digits",
    "EncodedImages",
    "ImageFolder",
    "ListFile",
    "Preprocessing",
    "Synthetic",
    "build_dataset",
    "collate",
    "collate_encoded",
    "decode_rgb",
    "eval_transform",
    "load_rgb",
    "run_split",
    "train_transform",
    "write_list",
]
