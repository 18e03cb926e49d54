"""``build_model`` / ``list_models`` and the model cards (weights as data, torchvision-style).

The public entry point is :func:`inceptionv4.create_model`, which builds through
:func:`build_model` and takes ``pretrained=``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .inception_resnet import inception_resnet_v1, inception_resnet_v2, inception_resnet_v2_paper
from .inception_v4 import inception_v4
from .layers import ClassifierHead
from .network import InceptionNet, check_num_classes
from .preprocessing import Preprocessing
from .released import imagenet_weights, released_weights


@dataclass(frozen=True)
class ModelCard(Mapping):
    """What a user needs to know to feed, judge and cite a network.

    ``num_params`` and ``gflops`` are for 1000 classes at 299x299 (2 FLOPs per multiply-add) and
    are recomputed from the model by the tests. Accuracies are ILSVRC-2012 validation top-1/top-5
    in percent: ``paper_*`` from Table 2 (single crop, 100 - error), ``released_*`` those of the
    network's reference ImageNet checkpoint in :mod:`.released`; None where no such figure exists.
    ``preprocessing`` is what the network's weights expect: that checkpoint's by default, the
    loaded weights' (or the trained resolution) once a model holds weights.

    It is also timm's ``pretrained_cfg``: a read-only mapping of its fields with the
    preprocessing's spelled out (``card["input_size"]`` = (3, S, S), ``mean``, ``std``,
    ``interpolation``, ``crop_pct``; keys it lacks, such as ``hf_hub_id``, are absent), with
    ``pool_size`` the last feature map at ``input_size``, ``first_conv`` and ``classifier`` the
    module names of the first convolution and of the classifier.
    """

    name: str
    title: str
    figures: str
    layout: str  # "released": weight-compatible with the named checkpoints; "paper": the figures
    num_params: int
    gflops: float
    preprocessing: Preprocessing = Preprocessing()
    min_input_size: tuple[int, int, int] = (3, 75, 75)
    num_classes: int = 1000
    paper_top1: float | None = None
    paper_top5: float | None = None
    released_top1: float | None = None
    released_top5: float | None = None
    weights_from: tuple[str, ...] = field(default_factory=tuple)
    notes: str = ""
    pool_size: tuple[int, int] = (8, 8)
    first_conv: str = "stem.conv1a.conv"
    classifier: str = "head.fc"

    @classmethod
    def of(cls, *, name: str, title: str, figures: str, layout: str, num_params: int, gflops: float,
           paper_top1: float | None = None, paper_top5: float | None = None, notes: str = "") -> ModelCard:
        """A card whose released figures, weights list and preprocessing come from the table of
        released weights; the rest is the paper's and the network's own."""  # fmt: skip
        ref = imagenet_weights(name)
        return cls(
            name=name, title=title, figures=figures, layout=layout, num_params=num_params, gflops=gflops,
            paper_top1=paper_top1, paper_top5=paper_top5, notes=notes,
            preprocessing=ref.preprocessing if ref else Preprocessing(),
            released_top1=ref.top1 if ref else None,
            released_top5=ref.top5 if ref else None,
            weights_from=tuple(w.name for w in released_weights(name)),
        )  # fmt: skip

    def at_input_size(self, size: int) -> ModelCard:
        """This card with its preprocessing at another input side (a model trained or run there)."""
        return dataclasses.replace(self, preprocessing=self.preprocessing.at(size))

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (3, self.preprocessing.input_size, self.preprocessing.input_size)

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.preprocessing.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.preprocessing.std

    @property
    def interpolation(self) -> str:
        return self.preprocessing.interpolation

    @property
    def crop_pct(self) -> float:
        return self.preprocessing.crop_pct

    def to_dict(self) -> dict:
        """The mapping as a plain dict (the preprocessing spelled out, as timm has it)."""
        return dict(self)

    # timm's pretrained_cfg / default_cfg: the fields as a read-only mapping
    def __getitem__(self, key: str) -> object:
        if key not in _CARD_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(_CARD_KEYS)

    def __len__(self) -> int:
        return len(_CARD_KEYS)


_CARD_KEYS = tuple(
    key
    for f in dataclasses.fields(ModelCard)
    for key in (("input_size", "mean", "std", "interpolation", "crop_pct") if f.name == "preprocessing" else (f.name,))
)
_BUILDERS: dict[str, Callable[..., InceptionNet]] = {}
_CARDS: dict[str, ModelCard] = {}


def register_model(builder: Callable[..., InceptionNet], card: ModelCard) -> None:
    """Make ``builder`` (keyword options in, an :class:`InceptionNet` out) buildable by the card's
    name, with that card."""
    _BUILDERS[card.name] = builder
    _CARDS[card.name] = card


register_model(
    inception_v4,
    ModelCard.of(
        name="inception_v4", title="Inception-v4", figures="Figs. 3-9", layout="released", num_params=42_679_816,
        gflops=24.51,
        paper_top1=80.0,
        paper_top5=95.0,
        notes="Branch order and 1x7/7x1 order of the released checkpoint (docs/architecture.md).",
    ),
)
register_model(
    inception_resnet_v1,
    ModelCard.of(
        name="inception_resnet_v1", title="Inception-ResNet-v1", figures="Figs. 10-15", layout="paper",
        num_params=24_357_096, gflops=12.62,
        paper_top1=78.7,
        paper_top5=94.5,
        notes="5/10/5 blocks plus facenet's final linear IR-C block (final_linear_block=False drops it).",
    ),
)
register_model(
    inception_resnet_v2,
    ModelCard.of(
        name="inception_resnet_v2", title="Inception-ResNet-v2 (released)",
        figures="Fig. 15 (released layout; see docs/architecture.md, Paper vs released code)", layout="released",
        num_params=55_843_464, gflops=26.31,
        paper_top1=80.1,
        paper_top5=95.1,
        notes="The network of the released checkpoint, not of the figures (docs/architecture.md).",
    ),
)
register_model(
    inception_resnet_v2_paper,
    ModelCard.of(
        name="inception_resnet_v2_paper", title="Inception-ResNet-v2 (paper figures)",
        figures="Figs. 3, 15-19, Table 1", layout="paper", num_params=32_433_928, gflops=18.52,
        paper_top1=80.1,
        paper_top5=95.1,
        notes="Expansions sized 1152 and 2144 where the figures say 1154 and 2048 (docs/architecture.md).",
    ),
)


def builder_of(name: str) -> Callable[..., InceptionNet]:
    """The function that builds network ``name`` (its own keyword arguments are its options)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    return _BUILDERS[name]


def list_models() -> list[str]:
    """Names accepted by :func:`build_model` (and :func:`inceptionv4.create_model`)."""
    return sorted(_BUILDERS)


def get_model_card(name: str) -> ModelCard:
    """The card of a network, by name."""
    _check_name(name)
    return _CARDS[name]


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")


def build_model(
    name: str,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.2,
    residual_scale: float | tuple[float, float, float] | None = None,
    global_pool: str = "avg",
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    **kwargs: object,
) -> InceptionNet:
    """Build a network by name, randomly initialised.

    Args:
        name: one of :func:`list_models`.
        num_classes: classifier outputs; 0 for pooled features.
        in_chans: input channels (3 for RGB).
        drop_rate: dropout before the classifier (the paper keeps 0.8, i.e. drops 0.2).
        residual_scale: Sec. 3.3's scaling of residual branches, a float or an (a, b, c) triple;
            None for the released 0.17 / 0.10 / 0.20. Only for the Inception-ResNets.
        global_pool: "avg" (the paper), "max" or "avgmax".
        features_only: return the feature maps at strides 2, 4, 8, 16, 32 instead of logits.
        out_indices: which of those maps, with ``features_only``.
        kwargs: model-specific options (``final_linear_block`` for inception_resnet_v1).
    """
    _check_name(name)
    check_num_classes(num_classes)
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be an integer >= 1, got {in_chans!r}")
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, int | float) or not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be a float in [0, 1), got {drop_rate!r}")
    if global_pool not in ClassifierHead.POOLS:
        raise ValueError(f"global_pool must be one of {ClassifierHead.POOLS}, got {global_pool!r}")
    if out_indices is not None and not features_only:
        raise ValueError("out_indices is only meaningful with features_only=True")
    try:
        model = _BUILDERS[name](
            in_chans=in_chans,
            residual_scale=residual_scale,
            num_classes=num_classes,
            drop_rate=float(drop_rate),
            global_pool=global_pool,
            **kwargs,
        )
    except TypeError:  # a keyword the network does not take is a TypeError, as Python's and timm's contract says
        raise TypeError(f"{name}() got unexpected keyword argument(s) {', '.join(sorted(kwargs))}") from None
    model.pretrained_cfg = dataclasses.replace(_CARDS[name], num_classes=num_classes)
    model.model_name = name
    # what rebuilds this network from a weights bundle (num_classes and pool are read at save time)
    model.build_kwargs = {
        "in_chans": in_chans,
        "drop_rate": float(drop_rate),
        "residual_scale": residual_scale,
        **kwargs,
    }
    if features_only:
        model.as_features_only(out_indices)
    return model
