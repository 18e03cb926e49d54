"""inceptionv4: Inception-v4, Inception-ResNet-v1 and -v2 (Szegedy et al. 2016) for PyTorch."""

from .api import create_model, load_weights, save_weights
from .models import FeatureInfo, InceptionNet, ModelCard, get_model_card, list_models

from .version import __version__


def register_timm(prefix: str = "iv4_") -> list[str]:
    """Register the networks in timm's registry as ``prefix + name`` (needs timm installed); see
    :func:`inceptionv4.timm_contract.register_timm`."""
    from .timm_contract import register_timm as register

    return register(prefix)


__all__ = [
    "FeatureInfo",
    "InceptionNet",
    "ModelCard",
    "__version__",
    "create_model",
    "get_model_card",
    "list_models",
    "load_weights",
    "register_timm",
    "save_weights",
]
