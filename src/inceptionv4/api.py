"""The top-level entry points: ``create_model`` with ``pretrained=``, ``save_weights``, ``load_weights``."""

from __future__ import annotations

import os

from .models import InceptionNet
from .models import create_model as _build
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
    """Build a network by name (see :func:`inceptionv4.models.create_model` for the options).

    ``pretrained`` is a hub id (``"timm/inception_v4.tf_in1k"``) or a local weights file of any
    supported source (a bundle, timm/Cadene/facenet ``.safetensors``/``.pth``, Keras ``.h5``, a
    TF-slim checkpoint). With ``num_classes`` unset the checkpoint's classes are kept; with
    another count the backbone is loaded and the classifier is fresh, ready to fine-tune.
    """
    if pretrained is None:
        return _build(name, num_classes=1000 if num_classes is None else num_classes, **kwargs)
    if not isinstance(pretrained, str | os.PathLike):
        raise TypeError(f"pretrained must be a hub id or a file path, got {type(pretrained).__name__}")
    pretrained = os.fspath(pretrained)
    if is_local(pretrained):
        path = os.path.expanduser(pretrained)
    else:
        known = HUB_WEIGHTS.get(pretrained)
        if known is not None and known.model != name:  # before any download
            raise ValueError(f"{pretrained} holds {known.model} weights, not {name}")
        path, hub = download(pretrained)
        source = source or hub.source
    full = load_weights(path, architecture=name, source=source)  # a bundle of another network: ValueError
    if kwargs or (num_classes is not None and num_classes != full.num_classes):
        extra = {"embedding_dim": full.head.embedding_dim} if hasattr(full.head, "embedding_dim") else {}
        model = _build(name, num_classes=full.num_classes if num_classes is None else num_classes, **extra, **kwargs)
        backbone_only = model.num_classes != full.num_classes or model.features_only
        _copy_weights(full, model, backbone_only)
        return model
    return full


def _copy_weights(src: InceptionNet, dst: InceptionNet, backbone_only: bool) -> None:
    sd = src.state_dict()
    if backbone_only:
        sd = {k: v for k, v in sd.items() if not k.startswith("head.") and k in dst.state_dict()}
    missing, unexpected = dst.load_state_dict(sd, strict=False)
    fresh = ("head.", "aux_head.") if backbone_only else ("aux_head.",)  # an auxiliary head starts fresh
    bad = [k for k in missing if not k.startswith(fresh)]
    if bad or unexpected:
        raise ValueError(
            f"the pretrained weights do not fit the requested model: missing {bad[:3]}, unexpected {unexpected[:3]}"
        )
    if not backbone_only:
        dst.class_names, dst.label_set = getattr(src, "class_names", None), getattr(src, "label_set", None)
    dst.weights_source = getattr(src, "weights_source", "")


__all__ = ["create_model", "load_weights", "save_weights"]
