"""The released weights of these networks: one table, read by every place that names them.

The model cards take their released accuracy, their list of weights and their preprocessing from
it; ``weights.hub`` downloads the rows that are on the Hugging Face Hub; ``create_model`` stamps a
hub download with its row's name and preprocessing, which a saved bundle and the server's
``/v1/model`` then carry; ``inceptionv4 info`` prints the rows of a network.

Accuracy is ILSVRC-2012 validation, single centre crop, top-1 / top-5 in percent, as published
for the checkpoint (the ports of one TensorFlow checkpoint carry its figure); None where none
was published, or where the weights do not classify ImageNet (facenet's faces).
"""

from __future__ import annotations

from dataclasses import dataclass

from .preprocessing import Preprocessing

#: facenet-pytorch's fixed_image_standardization, (x - 127.5) / 128, on 160 px aligned faces: what
#: every facenet checkpoint was trained with, stamped on one loaded from a file
FACENET_PREPROCESSING = Preprocessing(input_size=160, mean=(127.5 / 255,) * 3, std=(128 / 255,) * 3, interpolation="bilinear",
                         crop_pct=1.0)  # fmt: skip
_IRV2 = Preprocessing(crop_pct=0.8975)  # timm's crop for the released Inception-ResNet-v2


@dataclass(frozen=True, kw_only=True)
class ReleasedWeights:
    """One public checkpoint.

    ``name`` is its hub id when ``hub`` is true (``create_model(pretrained=name)`` downloads
    ``file``), else the publisher's name for it (fetch ``file`` yourself and pass its path).
    ``source`` is the converter that reads it (``load_weights(source=...)``); ``classes`` what its
    outputs are; ``where`` where it is published.
    """

    name: str
    model: str
    file: str
    source: str
    classes: str
    preprocessing: Preprocessing
    top1: float | None = None
    top5: float | None = None
    hub: bool = False
    where: str = "the Hugging Face hub"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields (``inceptionv4 info --json``)."""
        return {**self.__dict__, "preprocessing": self.preprocessing.to_dict()}


_SLIM = ("the tensorflow/models research/slim README (inception_v4_2016_09_09.tar.gz, "
         "inception_resnet_v2_2016_08_30.tar.gz; unpack, then give the .ckpt prefix)")
_CADENE = "the Cadene/pretrained-models.pytorch README"
_FACENET_AT = "the timesler/facenet-pytorch GitHub releases"
_KERAS = "keras.applications.InceptionResNetV2(weights='imagenet'), which saves it under ~/.keras/models"

RELEASED_WEIGHTS: tuple[ReleasedWeights, ...] = (
    ReleasedWeights(name="timm/inception_v4.tf_in1k", model="inception_v4", file="model.safetensors",
                    source="timm", classes="imagenet-1k", preprocessing=Preprocessing(), top1=80.2, top5=95.2,
                    hub=True),
    ReleasedWeights(name="tf-slim inception_v4_2016_09_09", model="inception_v4", file="inception_v4.ckpt",
                    source="tf-slim", classes="imagenet-1k + background", preprocessing=Preprocessing(),
                    top1=80.2, top5=95.2, where=_SLIM),
    ReleasedWeights(name="cadene inceptionv4", model="inception_v4", file="inceptionv4-8e4777a0.pth",
                    source="cadene", classes="imagenet-1k + background", preprocessing=Preprocessing(),
                    where=_CADENE),
    ReleasedWeights(name="timm/inception_resnet_v2.tf_in1k", model="inception_resnet_v2", file="model.safetensors",
                    source="timm", classes="imagenet-1k", preprocessing=_IRV2, top1=80.4, top5=95.3, hub=True),
    ReleasedWeights(name="timm/inception_resnet_v2.tf_ens_adv_in1k", model="inception_resnet_v2",
                    file="model.safetensors", source="timm", classes="imagenet-1k", preprocessing=_IRV2, hub=True),
    ReleasedWeights(name="keras InceptionResNetV2", model="inception_resnet_v2",
                    file="inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5", source="keras",
                    classes="imagenet-1k", preprocessing=_IRV2, top1=80.3, top5=95.3, where=_KERAS),
    ReleasedWeights(name="tf-slim inception_resnet_v2_2016_08_30", model="inception_resnet_v2",
                    file="inception_resnet_v2_2016_08_30.ckpt", source="tf-slim",
                    classes="imagenet-1k + background", preprocessing=_IRV2, top1=80.4, top5=95.3, where=_SLIM),
    ReleasedWeights(name="cadene inceptionresnetv2", model="inception_resnet_v2",
                    file="inceptionresnetv2-520b38e4.pth", source="cadene", classes="imagenet-1k + background",
                    preprocessing=_IRV2, where=_CADENE),
    ReleasedWeights(name="facenet-pytorch vggface2", model="inception_resnet_v1", file="20180402-114759-vggface2.pt",
                    source="facenet", classes="8,631 VGGFace2 identities", preprocessing=FACENET_PREPROCESSING,
                    where=_FACENET_AT),
    ReleasedWeights(name="facenet-pytorch casia-webface", model="inception_resnet_v1",
                    file="20180408-102900-casia-webface.pt", source="facenet",
                    classes="10,575 CASIA-WebFace identities", preprocessing=FACENET_PREPROCESSING, where=_FACENET_AT),
)  # fmt: skip


def released_weights(model: str | None = None) -> tuple[ReleasedWeights, ...]:
    """The rows of one network (all rows for None), in the table's order: hub weights first."""
    return tuple(w for w in RELEASED_WEIGHTS if model is None or w.model == model)


def imagenet_weights(model: str) -> ReleasedWeights | None:
    """The network's reference ImageNet checkpoint (its first ImageNet row), if it has one: the
    card's released accuracy and default preprocessing are this row's."""
    return next((w for w in released_weights(model) if w.classes.startswith("imagenet")), None)


def where_to_fetch(source: str) -> str:
    """Where one source publishes its checkpoints of these networks, with their file names (for
    the message of a file that is not there); "" for a source with no released weights."""
    rows = [w for w in RELEASED_WEIGHTS if w.source == source]
    places = {}
    for w in rows:
        places.setdefault(w.where, []).append(w.name if w.hub else w.file)
    return "; ".join(f"{where}: {', '.join(files)}" for where, files in places.items())
