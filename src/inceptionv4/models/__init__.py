"""The networks of Szegedy et al. 2016, one module per figure (see docs/architecture.md)."""

from .complexity import count_flops, count_params
from .network import FeatureInfo, InceptionNet
from .preprocessing import Preprocessing
from .registry import ModelCard, build_model, get_model_card, list_models
from .released import RELEASED_WEIGHTS, ReleasedWeights, released_weights

__all__ = [
    "FeatureInfo",
    "InceptionNet",
    "ModelCard",
    "Preprocessing",
    "RELEASED_WEIGHTS",
    "ReleasedWeights",
    "released_weights",
    "count_flops",
    "count_params",
    "build_model",
    "get_model_card",
    "list_models",
]
