"""The top-level entry points: ``create_model`` with ``pretrained=``, ``save_weights``, ``load_weights``."""

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
