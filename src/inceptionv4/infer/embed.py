"""Embeddings, and face verification on them.

An image's embedding is what a network says it is, as a vector: a face-embedding head's
L2-normalised output (facenet's Inception-ResNet-v1, ``embedding_dim=512``), else the pooled
features its classifier reads (``forward_head(pre_logits=True)``: 1536-d for Inception-v4). Faces are
compared by the Euclidean distance between their normalised embeddings, as facenet does: 0 for the
same vector, 2 for opposite ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.views import crop_views
from ..models import InceptionNet, Preprocessing
from ..models.layers import EmbeddingHead
from .predict import Input, InputFiles, expand_inputs


def embeddings(network: InceptionNet, views: torch.Tensor) -> torch.Tensor:
    """(N, D) float32 embeddings of normalised views (N, 3, H, W): an embedding head's
    L2-normalised output (also when it carries a classifier over identities), else the pooled
    features. No gradients; the network is used as it is (put it in eval mode)."""
    if network.head is None:
        raise ValueError("this network has no head (features_only): build it with a head to embed")
    with torch.no_grad():
        pooled = network.forward_head(network.forward_features(views), pre_logits=True)
        head = network.head
        if isinstance(head, EmbeddingHead):
            return F.normalize(head.bn(head.proj(pooled)), dim=1).float()
        return pooled.float()


@dataclass(frozen=True)
class Embedded:
    """The embeddings of some images: ``vectors[i]`` (float32) is image ``names[i]``'s."""

    names: list[str]
    vectors: np.ndarray


def embed(model_or_weights, images: Input | list[Input], *, model: str | None = None, batch_size: int = 16,
          device: torch.device | str = "cpu") -> Embedded:  # fmt: skip
    """The embedding of each image (files, folders, globs or PIL images, as
    :func:`~inceptionv4.infer.predict.predict` takes them; each seen through the network's 1-crop
    view) by a network, or weights as :func:`~inceptionv4.api.load_network` takes (``model``:
    the network, for files that do not say it). In torch fp32 on ``device``. A file that cannot be
    read raises :class:`~inceptionv4.data.decode.DecodeError` naming it."""
    from ..api import load_network

    network = load_network(model_or_weights, model).eval().to(device)
    pre = Preprocessing.of(network)
    files = InputFiles(expand_inputs(images))
    names = [files.name_of(i) for i in range(len(files))]
    parts = []
    for start in range(0, len(files), batch_size):
        views = torch.cat([crop_views(files.load(i)[0], pre) for i in range(start, min(start + batch_size, len(files)))])
        parts.append(embeddings(network, views.to(device)).cpu())
    width = network.head.embedding_dim if isinstance(network.head, EmbeddingHead) else network.head_hidden_size
    vectors = torch.cat(parts).numpy() if parts else np.zeros((0, width), np.float32)
    return Embedded(names, vectors)


def distance_matrix(vectors: np.ndarray) -> np.ndarray:
    """(N, N) Euclidean distances between the L2-normalised rows of ``vectors`` (N, D)."""
    unit = torch.nn.functional.normalize(torch.as_tensor(vectors, dtype=torch.float64), dim=1)
    return torch.cdist(unit, unit).numpy()


def face_distances(model_or_weights, faces: Sequence[Input], **options) -> np.ndarray:
    """(N, N) distances between the embeddings of ``faces`` (aligned face crops, as the network
    was trained on: 160 px for facenet), by :func:`embed` (``options`` are its)."""
    return distance_matrix(embed(model_or_weights, list(faces), **options).vectors)


@dataclass(frozen=True)
class Verdict:
    """Whether two faces are one person's: ``same`` when ``distance`` <= ``threshold``."""

    distance: float
    threshold: float
    same: bool


def verify(model_or_weights, a: Input, b: Input, *, threshold: float, **options) -> Verdict:
    """The distance between faces ``a`` and ``b`` and the call at ``threshold``: a distance the
    user picks on pairs whose answer they know (it depends on the weights and the faces)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 2:
        raise ValueError(f"threshold must be a distance between 0 and 2; got {threshold!r}")
    d = float(face_distances(model_or_weights, [a, b], **options)[0, 1])
    return Verdict(d, float(threshold), d <= threshold)


__all__ = ["Embedded", "Verdict", "distance_matrix", "embed", "embeddings", "face_distances", "verify"]
