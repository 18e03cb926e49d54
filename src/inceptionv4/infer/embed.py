"""Embeddings, and face verification on them.

An image's embedding is what a network says it is, as a vector: a face-embedding head's
L2-normalised output (facenet's Inception-ResNet-v1, ``embedding_dim=512``), else the pooled
features its classifier reads (``forward_head(pre_logits=True)``: 1536-d for Inception-v4). Faces are
compared by the Euclidean distance between their normalised embeddings, as facenet does: 0 for the
same vector, 2 for opposite ones.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.decode import DecodeError
from ..distributed import World
from ..engines.open import open_session
from ..engines.options import SessionOptions
from ..engines.session import Session
from .predict import Input, session_rows, top_classes


def open_embedder(source, options: SessionOptions | None = None, **settings) -> Session:
    """A session whose output is embeddings (:func:`~inceptionv4.engines.open.open_session` with
    ``output="embeddings"``): weights, a network, or such a session as it is."""
    if isinstance(source, Session):
        if source.output != "embeddings":
            raise ValueError("this session returns probabilities: open one with output='embeddings'")
        return source
    return open_session(source, options, **{**settings, "output": "embeddings"})


def embed_rows(session: Session, inputs: Input | list[Input] | None, *, dataset=None, world: World | None = None,
               batch_size: int | None = None, progress: bool = False, workers: int = 0, decode: str = "workers",
               skip: Container[str] = (), ranks: TopClasses | None = None) -> Iterator[dict]:  # fmt: skip
    """``{"file", "ok": True, "embedding"}`` (float32 numpy; with ``ranks``, also ``"top"``: its
    classes by :class:`TopClasses`) or ``{"file", "ok": False, "error"}`` for every input (or image
    of ``dataset``; those in ``skip`` left out), in order, through the one batch path
    (:func:`~inceptionv4.infer.predict.session_rows`: ``world`` is a torchrun process's share) and
    an embedding session."""

    def rows(outputs: torch.Tensor) -> list[dict]:
        if ranks is None:
            return [{"embedding": v} for v in outputs.numpy()]
        return [{"embedding": v, "top": t} for v, t in zip(outputs.numpy(), ranks(outputs), strict=True)]

    if session.output != "embeddings":
        raise ValueError("this session returns probabilities: open one with output='embeddings' (open_embedder)")
    yield from session_rows(session, inputs, rows, dataset=dataset, world=world, batch_size=batch_size,
                            progress=progress, workers=workers, decode=decode, skip=skip, desc="embed")  # fmt: skip


class TopClasses:
    """The ``k`` best classes of pooled features by the network's own classifier (its last linear
    layer and a softmax, fp32 on this CPU): the ``top`` column ``embed --topk`` writes beside each
    embedding, without a second pass through the network. Over a ``--crops`` protocol it ranks the
    mean of the views' features. ``weights`` is one network's (an embedding head has identities,
    not classes to rank)."""

    def __init__(self, weights, k: int, model: str | None = None) -> None:
        from ..api import load_network
        from ..engines.session import Labels
        from ..models.layers import EmbeddingHead

        if isinstance(weights, (list, tuple)):
            if len(weights) != 1:
                raise ValueError("top classes beside embeddings come from one network: give one weights file")
            weights = weights[0]
        if k < 1:
            raise ValueError(f"topk must be >= 1, got {k}")
        net = load_network(weights, model)
        if net.head is None or isinstance(net.head, EmbeddingHead) or net.num_classes == 0:
            raise ValueError("this network has no classifier over its pooled features (an embedding head, or no "
                             "classes): embed it without --topk")  # fmt: skip
        self.fc = net.head.fc.float().eval()
        self.names = Labels.of_model(net).names
        self.k = min(k, len(self.names))

    @torch.no_grad()
    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D) pooled features -> (N, classes) probabilities."""
        return torch.softmax(self.fc(torch.as_tensor(features).float()), 1)

    def __call__(self, features: torch.Tensor) -> list[list[dict]]:
        """Each row's ``k`` best as ``{"index", "name", "prob"}``, best first."""
        return top_classes(self.probabilities(features), self.names, self.k)


@dataclass(frozen=True)
class Embedded:
    """The embeddings of some images: ``vectors[i]`` (float32) is image ``names[i]``'s."""

    names: list[str]
    vectors: np.ndarray


def embed(source, images: Input | list[Input], options: SessionOptions | None = None, *,
          batch_size: int | None = None, **settings) -> Embedded:  # fmt: skip
    """The embedding of each image (files, folders, globs or PIL images, as
    :func:`~inceptionv4.infer.predict.predict` takes them, through the session's protocol) by
    weights, a network or an embedding session. ``options`` / ``settings`` are
    :func:`~inceptionv4.engines.open.open_session`'s (backend, device, precision, crops, ...). A
    file that cannot be read raises :class:`~inceptionv4.data.decode.DecodeError` naming it."""
    session = open_embedder(source, options, **settings)
    names, vectors = [], []
    for row in embed_rows(session, images, batch_size=batch_size):
        if not row["ok"]:
            raise DecodeError(f"{row['file']}: {row['error']}")
        names.append(row["file"])
        vectors.append(row["embedding"])
    return Embedded(names, np.stack(vectors) if vectors else np.zeros((0, 0), np.float32))


def distance_matrix(vectors: np.ndarray) -> np.ndarray:
    """(N, N) Euclidean distances between the L2-normalised rows of ``vectors`` (N, D)."""
    unit = torch.nn.functional.normalize(torch.as_tensor(vectors, dtype=torch.float64), dim=1)
    return torch.cdist(unit, unit).numpy()


def face_distances(source, faces: Sequence[Input], **settings) -> np.ndarray:
    """(N, N) distances between the embeddings of ``faces`` (aligned face crops, as the network
    was trained on: 160 px for facenet), by :func:`embed` (``settings`` are its)."""
    return distance_matrix(embed(source, list(faces), **settings).vectors)


@dataclass(frozen=True)
class Verdict:
    """Whether two faces are one person's: ``same`` when ``distance`` <= ``threshold``."""

    distance: float
    threshold: float
    same: bool


def verify(source, a: Input, b: Input, *, threshold: float, **settings) -> Verdict:
    """The distance between faces ``a`` and ``b`` and the call at ``threshold``: a distance the
    user picks on pairs whose answer they know (it depends on the weights and the faces)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 2:
        raise ValueError(f"threshold must be a distance between 0 and 2; got {threshold!r}")
    d = float(face_distances(source, [a, b], **settings)[0, 1])
    return Verdict(d, float(threshold), d <= threshold)


__all__ = ["Embedded", "TopClasses", "Verdict", "distance_matrix", "embed", "embed_rows", "face_distances",
           "open_embedder", "verify"]
