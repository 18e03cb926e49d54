"""How inference runs, as one record: :class:`SessionOptions`, the settings
:func:`~inceptionv4.engines.open.open_session` takes and every session command's flags
(``eval``, ``predict``, ``serve``, ``quantize``'s checks) are generated from; and how a
prediction is explained, :class:`ExplainOptions` (:mod:`inceptionv4.infer.explain`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..models.preprocessing import CROPS
from ..precision import PRECISIONS
from ..settings import check_fields, setting

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
#: what a session returns: class probabilities, or each image's embedding
OUTPUTS = ("probabilities", "embeddings")
#: how torch runs a network: as it is, or through :func:`~inceptionv4.engines.torch.compile_for_inference`
FORMS = ("eager", "compile")


@dataclass(frozen=True)
class SessionOptions:
    """Every setting of an inference session but its weights, checked against its own values
    when made (against each other and this machine by :func:`~inceptionv4.engines.open.open_session`)."""

    model: str | None = setting(None, "the network, for weights files that do not say it")
    backend: str = setting(
        "auto",
        "what runs the network: auto (OpenVINO, else onnxruntime, on a CPU; torch on a GPU or for a torch form)",
        choices=BACKENDS,
    )
    device: str = setting("auto", "where it runs: auto (a GPU if PyTorch sees one), cpu, cuda, cuda:N, mps")
    precision: str = setting(
        "fp32",
        "auto (the engine's own default on this CPU: bf16 where it computes BF16 natively, else fp32); fp32; "
        "bf16 / fp16 (torch autocast, OpenVINO's precision hint); int8: give an artefact from `inceptionv4 "
        "quantize` as the weights",
        choices=PRECISIONS,
    )
    crops: int = setting(1, "views per image: 1 (centre crop), 10 (corners + centre, mirrored), 12 or 144 "
                         "(docs/evaluation.md)", choices=CROPS)  # fmt: skip
    form: str = setting(
        "eager",
        "torch: eager, or compile (torch.compile of the BN-folded network, constants frozen; the first pass per "
        "input shape compiles, minutes on a CPU)",
        choices=FORMS,
    )
    channels_last: bool = setting(False, "torch: models and views in channels_last")
    full_decode: bool = setting(
        False,
        "decode every JPEG at full size: the exact pixels published accuracy is measured on (default: a JPEG at "
        "least twice the size the crops need is decoded reduced, 1/2 to 1/8, in the DCT domain; docs/evaluation.md)",
    )
    output: str = setting(
        "probabilities",
        "what the session returns: probabilities (softmax), or embeddings (an embedding head's normalised output, "
        "else the pooled features); averaged over crops and models either way",
        choices=OUTPUTS,
    )
    cache_dir: str | None = setting(
        None,
        "where the engines' builds are kept (default $INCEPTIONV4_CACHE or ~/.cache/inceptionv4), keyed by the "
        "weights' hash, backend, precision and input shape",
    )

    def __post_init__(self) -> None:
        if isinstance(self.cache_dir, os.PathLike):
            object.__setattr__(self, "cache_dir", os.fspath(self.cache_dir))
        if not isinstance(self.device, str):  # a torch.device
            object.__setattr__(self, "device", str(self.device))
        check_fields(self)


#: the ways a map is computed: HiResCAM (each activation times its own gradient, summed over
#: channels: the map sums to the class score's first-order change) and Grad-CAM (each channel
#: weighted by its mean gradient); docs/explain.md compares them
METHODS = ("hirescam", "gradcam")


@dataclass(frozen=True)
class ExplainOptions:
    """How a class-activation map is computed: the settings ``predict --explain``, ``eval
    --explain-errors`` and ``serve`` take (their flags are generated from these fields)."""

    method: str = setting("hirescam", "how the map is computed: hirescam (each activation times its gradient) or "
                          "gradcam (channels weighted by their mean gradient; docs/explain.md)", choices=METHODS,
                          flag="--explain-method")  # fmt: skip
    layer: str | None = setting(None, "the stage the map is taken at, as the network's feature_info names it "
                                "(default: the last; stage_b: finer and noisier)", flag="--explain-layer",
                                metavar="STAGE")  # fmt: skip

    def __post_init__(self) -> None:
        check_fields(self)
