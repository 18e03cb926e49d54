"""What an opened inference session is: its runners, preprocessing, labels and protocol, and the
call that turns views into probabilities. Values only: no engine is imported here, so the engines
that build sessions and the tasks that run them both import this, and not each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..data.views import decode_side, normalize_views
from ..devices import vector_units
from ..models import InceptionNet, Preprocessing
from ..models.preprocessing import check_crops


@dataclass(frozen=True)
class Labels:
    """How a session names its outputs: ``keys`` match a dataset's classes (WordNet ids for
    ImageNet, else class names, else indices), ``names`` are shown to people."""

    keys: list[str]
    names: list[str]
    label_set: str | None = None
    class_names: list[str] | None = None

    @classmethod
    def of(cls, num_classes: int, label_set: str | None = None, class_names: list[str] | None = None) -> Labels:
        """The outputs' keys and names: ImageNet's WordNet ids and names for ``imagenet-1k``, else
        the class names, else the output indices as strings."""
        if label_set == "imagenet-1k":
            from ..weights import class_names as shipped
            from ..weights import imagenet1k

            return cls([c.wnid for c in imagenet1k()], shipped("imagenet-1k"), label_set, None)
        keys = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        return cls(keys, keys, label_set or None, list(class_names) if class_names else None)

    @classmethod
    def of_model(cls, model: InceptionNet) -> Labels:
        """The labels a network declares (its ``label_set`` and ``class_names``)."""
        return cls.of(model.num_classes, model.label_set, model.class_names)


def device_of(model: torch.nn.Module) -> torch.device:
    """Where a model's parameters (or, failing those, buffers) are."""
    first = next(model.parameters(), None)
    if first is None:
        first = next(model.buffers(), None)
    return first.device if first is not None else torch.device("cpu")


#: A runner: normalised float32 views (B, 3, S, S) -> float32 logits (B, classes), on the CPU or
#: where the runner's model is.
Runner = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Session:
    """An opened inference set-up: call it on views to get probabilities.

    ``session(views)`` takes (N*V, 3, S, S) views of N images with V = ``crops`` views each:
    uint8 pixels (normalised here, where the models run, with ``pre``) or float32 already
    normalised. It returns (N, classes) float32 probabilities on the CPU: the softmax of each
    model averaged over the views, then over the models of an ensemble. With ``output =
    "embeddings"`` the models compute embeddings (:meth:`~inceptionv4.models.InceptionNet.embedding_model`)
    and it returns those (N, D), averaged the same way. The result does not depend on how many
    images are passed at once.
    """

    runners: list[Runner]
    pre: Preprocessing
    labels: Labels
    architecture: str
    backend: str
    precision: str
    device: torch.device
    crops: int = 1
    form: str = "eager"  # what the engine runs: "eager" or "compile" (torch), "onnx export", "int8 artefact"
    chunk: int = 64  # views per forward pass
    full_decode: bool = False  # decode every JPEG at full size (else reduced to the protocol's size)
    models: list[torch.nn.Module] = field(default_factory=list)  # torch backend: the modules the runners run
    cache: list[dict] = field(default_factory=list)  # engines: what was built or reused, per model
    # what it was opened from, per model: weights files, hub ids, networks in memory or int8
    # artefacts (the fp32 weights a class-activation map is computed from: infer.explain)
    sources: list = field(default_factory=list)
    output: str = "probabilities"  # or "embeddings"

    def __post_init__(self) -> None:
        check_crops(self.crops)

    @property
    def num_classes(self) -> int:
        return len(self.labels.keys)

    @property
    def reduce_to(self) -> int | None:
        """The shorter side a JPEG may be decoded reduced to for this session's protocol
        (:func:`~inceptionv4.data.decode.load_rgb`), or None with ``full_decode``."""
        return None if self.full_decode else decode_side(self.pre, self.crops)

    @property
    def decode_size(self) -> str:
        """How large JPEGs are decoded, in words, for reports and banners."""
        return "full" if self.full_decode else f"reduced (shorter side >= {self.reduce_to} px)"

    @torch.no_grad()
    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        if views.dim() != 4 or len(views) % self.crops:
            raise ValueError(f"views must be (N*{self.crops}, 3, S, S), got {tuple(views.shape)}")
        total = None
        for run in self.runners:
            parts = []
            for i in range(0, len(views), self.chunk):
                x = views[i : i + self.chunk].to(self.device, non_blocking=True)
                x = normalize_views(x, self.pre) if x.dtype == torch.uint8 else x.float()
                y = run(x).float()
                parts.append(y if self.output == "embeddings" else F.softmax(y, 1))
            probs = torch.cat(parts).cpu()  # one copy back (and one wait) per model, not one per pass
            probs = probs.view(-1, self.crops, probs.shape[-1]).mean(1)
            total = probs if total is None else total + probs
        return total / len(self.runners)

    def describe(self) -> dict:
        """What runs, for ``/v1/model``, reports and logs."""
        return {
            "architecture": self.architecture,
            "num_classes": self.num_classes,
            "models": len(self.runners),
            "backend": self.backend,
            "precision": self.precision,
            "form": self.form,
            "device": str(self.device),
            "crops": self.crops,
            "output": self.output,
            "decode_size": self.decode_size,
            "input_size": self.pre.input_size,
            "preprocessing": self.pre.to_dict(),
            "cpu": vector_units() if self.device.type == "cpu" else None,
        }
