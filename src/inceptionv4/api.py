"""The top-level entry points: ``create_model`` with ``pretrained=``, ``load_network`` (any weights source -> a
network), ``save_weights``, ``load_weights``."""

from __future__ import annotations

import dataclasses
import os

from .models import InceptionNet, ReleasedWeights
from .models import build_model
from .weights.bundle import load_weights, save_weights
from .weights.hub import HUB_WEIGHTS, download, is_local


def create_model(
    name: str,
    *,
    pretrained: str | None = None,
    num_classes: int | None = None,
    source: str | None = None,
    **kwargs: object,
) -> InceptionNet:
    """Build a network by name (see :func:`inceptionv4.models.build_model` for the options).

    ``pretrained`` is a hub id (``"timm/inception_v4.tf_in1k"``) or a local weights file of any
    supported source (a bundle, timm/Cadene/facenet ``.safetensors``/``.pth``, Keras ``.h5``, a
    TF-slim checkpoint). With ``num_classes`` unset the checkpoint's classes are kept; with
    another count the backbone is loaded and the classifier is fresh, ready to fine-tune.
    Weights from the hub are stamped with their row of the released-weights table: its name as
    ``weights_source`` and its preprocessing on the card, which a saved bundle then carries.
    """
    if pretrained is None:
        return build_model(name, num_classes=1000 if num_classes is None else num_classes, **kwargs)
    if not isinstance(pretrained, str | os.PathLike):
        raise TypeError(f"pretrained must be a hub id or a file path, got {type(pretrained).__name__}")
    pretrained = os.fspath(pretrained)
    hub = None
    if is_local(pretrained):
        path = os.path.expanduser(pretrained)
    else:
        known = HUB_WEIGHTS.get(pretrained)
        if known is not None and known.model != name:  # before any download
            raise ValueError(f"{pretrained} holds {known.model} weights, not {name}")
        path, hub = download(pretrained)
        source = source or hub.source
    full = load_weights(path, architecture=name, source=source)  # a bundle of another network: ValueError
    if not kwargs and (num_classes is None or num_classes == full.num_classes):
        return _stamped(full, hub)
    # another head or other options: the network asked for, with the checkpoint's backbone (and its
    # classifier too when the class count is the same)
    extra = {"embedding_dim": full.head.embedding_dim} if hasattr(full.head, "embedding_dim") else {}
    model = build_model(name, num_classes=full.num_classes if num_classes is None else num_classes, **extra, **kwargs)
    backbone_only = model.num_classes != full.num_classes or model.features_only
    return _stamped(load_weights(path, model, source=source, backbone_only=backbone_only), hub)


def _stamped(model: InceptionNet, hub: ReleasedWeights | None) -> InceptionNet:
    if hub is not None:
        model.weights_source = hub.name
        model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg, preprocessing=hub.preprocessing)
    return model


__all__ = ["create_model", "load_weights", "save_weights"]


def load_network(source: str | os.PathLike | InceptionNet, model: str | None = None) -> InceptionNet:
    """Any weights source -> a network: the one loader every command uses.

    ``source`` is a network in memory (returned as it is), a hub id as
    :func:`create_model`'s ``pretrained`` takes (``"timm/inception_v4.tf_in1k"``), a bundle, or
    any checkpoint :func:`~inceptionv4.load_weights` reads. ``model`` names the network for files
    that do not say it; a source holding another network is a ValueError, anything that is not a
    network a TypeError."""
    import torch

    if isinstance(source, torch.nn.Module):
        if not isinstance(source, InceptionNet):
            raise TypeError(f"expected a network built by inceptionv4.create_model (an InceptionNet), got "
                            f"{type(source).__name__}")  # fmt: skip
        if model is not None and source.model_name != model:
            raise ValueError(f"the network given is {source.model_name}, not {model}")
        return source
    path = os.fspath(source)
    if not is_local(path):
        known = HUB_WEIGHTS.get(path)
        if known is None:
            ids = ", ".join(sorted(HUB_WEIGHTS))
            raise ValueError(f"{path} is neither a weights file here nor a known hub id ({ids})")
        return create_model(model or known.model, pretrained=path)  # another model: a ValueError
    if model is not None and not path.endswith(".safetensors"):
        return create_model(model, pretrained=path)
    return load_weights(path, architecture=model)
