"""Weights: the native safetensors bundle, converters from every released source, safe reading."""

from .bundle import BundleError, describe_bundle, load_weights, read_bundle_metadata, save_weights
from .convert import SOURCES, convert_state_dict
from .hub import HUB_WEIGHTS, PretrainedUnavailableError
from .io import UnsafeFileError
from .labels import class_names, imagenet1k

__all__ = [
    "BundleError",
    "HUB_WEIGHTS",
    "SOURCES",
    "PretrainedUnavailableError",
    "UnsafeFileError",
    "class_names",
    "convert_state_dict",
    "imagenet1k",
    "load_weights",
    "describe_bundle",
    "read_bundle_metadata",
    "save_weights",
]
