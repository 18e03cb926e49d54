"""The networks of Szegedy et al. 2016, one module per figure (see docs/architecture.md)."""

from .complexity import count_flops, count_params
from .inference import BatchParallel, compile_for_inference, optimize_for_inference, retain_freed_memory
from .network import FeatureInfo, InceptionNet
from .onednn_graph import OneDNNGraph, fuse_for_inference, onednn_graph_available
from .registry import ModelCard, create_model, get_model_card, list_models

__all__ = [
    "BatchParallel",
    "FeatureInfo",
    "InceptionNet",
    "ModelCard",
    "OneDNNGraph",
    "compile_for_inference",
    "count_flops",
    "count_params",
    "create_model",
    "fuse_for_inference",
    "get_model_card",
    "list_models",
    "onednn_graph_available",
    "optimize_for_inference",
    "retain_freed_memory",
]
