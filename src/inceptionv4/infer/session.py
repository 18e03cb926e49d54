"""How inference runs, decided once: weights -> backend, device, precision, crops -> probabilities.

:func:`open_session` takes weights files (several: an ensemble), networks in memory, or an int8
artefact written by :func:`~inceptionv4.infer.quantize.quantize`, checks every setting against
each other and against this machine before anything heavy happens, and returns a
:class:`Session`. ``eval``, ``predict``, ``serve`` and ``bench`` all run one.

Backends (:mod:`inceptionv4.infer.backends`):

========== =================== ================================================================
backend    precisions          notes
========== =================== ================================================================
torch      fp32, bf16, fp16    autocast; CPU, CUDA, MPS; eager, or torch.compile (``form``)
onnxruntime fp32, int8         CPU; built from our ONNX export; int8 from a quantized artefact
openvino   fp32, bf16, fp16,   CPU; bf16 needs AVX-512 BF16 or AMX, fp16 AVX-512 FP16 or AMX-FP16;
           int8                int8 from a quantized artefact (NNCF)
========== =================== ================================================================

``backend="auto"`` takes OpenVINO, else onnxruntime, on a CPU for the precisions they run here,
and torch otherwise (a GPU, a torch option such as ``form="compile"``, or neither engine
installed).

``precision="auto"`` (predict's and serve's default) follows the engine's own default on this
machine (:func:`auto_precision`): bf16 on a CPU that computes BF16 natively (AVX-512 BF16 or AMX),
as OpenVINO itself does, and fp32 elsewhere; an int8 artefact runs in int8.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .. import devices
from ..data.views import CROPS
from ..devices import cpu_features, vector_units  # noqa: F401 (read from here too)
from ..engines.session import Labels, Runner, Session, device_of  # noqa: F401 (read from here too)
from ..models import InceptionNet, Preprocessing
from ..precision import PRECISIONS, TORCH_DTYPES, engine_precision_gap  # noqa: F401 (read from here too)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
#: how torch runs a network: as it is, or through infer.backends.compile_for_inference
FORMS = ("eager", "compile")
#: the suffixes of the int8 artefacts :func:`~inceptionv4.infer.quantize.quantize` writes, and their engine
ARTEFACT_BACKENDS = {".onnx": "onnxruntime", ".xml": "openvino"}


def auto_precision(backend: str, device: torch.device | str = "cpu") -> str:
    """What ``precision="auto"`` runs for ``backend`` on ``device``: OpenVINO's own default inference
    precision on this CPU (its ``INFERENCE_PRECISION_HINT``: bf16 where the CPU computes BF16
    natively), the same rule for torch on a CPU (bf16 with AVX-512 BF16 or AMX, else fp32), bf16 on
    a GPU that has it (else fp16), fp32 on onnxruntime (its CPU engine runs no bf16) and on MPS."""
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if kind != "cpu" or backend == "onnxruntime":
        return "fp32"
    if backend == "openvino":
        from .backends import openvino_core

        hint = openvino_core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()  # "bf16", "f32"
        precision = {"bf16": "bf16", "f16": "fp16"}.get(hint, "fp32")
        return precision if engine_precision_gap(backend, precision) is None else "fp32"
    f = devices.cpu_features()
    return "bf16" if f["avx512_bf16"] or f["amx"] else "fp32"


def installed(backend: str) -> bool:
    """Whether ``backend``'s engine can be imported here (torch always can)."""
    return backend == "torch" or importlib.util.find_spec(backend) is not None


def _require(package: str, purpose: str | None = None) -> None:
    """ImportError naming the extra that installs ``package`` (an engine, nncf, the server's
    libraries) when it is missing."""
    if not installed(package):
        extra = {"openvino": "openvino", "nncf": "openvino", "fastapi": "serve", "uvicorn": "serve",
                 "prometheus_client": "serve", "python_multipart": "serve", "swagger_ui_bundle": "serve"}.get(package, "export")  # fmt: skip
        raise ImportError(f"{purpose or '--backend ' + package} needs {package} installed: "
                          f"pip install 'inceptionv4[{extra}]'")  # fmt: skip


Source = str | os.PathLike | torch.nn.Module


def open_session(
    source: Source | Sequence[Source],
    *,
    model: str | None = None,
    backend: str = "auto",
    device: str | torch.device = "auto",
    precision: str = "fp32",
    crops: int = 1,
    form: str = "eager",
    channels_last: bool = False,
    cache_dir: str | os.PathLike | None = None,
    full_decode: bool = False,
) -> Session:
    """Open weights for inference, checking every setting before anything heavy is done.

    Args:
        source: a weights file (a bundle, or any checkpoint :func:`~inceptionv4.load_weights`
            reads), an int8 artefact from ``inceptionv4 quantize`` (``.onnx``: onnxruntime,
            ``.xml``: OpenVINO), a network in memory, or a list of these: an ensemble whose
            probabilities are averaged. Networks in memory run where they are (torch; moved when a
            ``device`` is given) or are exported (the engines); their layers are not changed.
        model: the network, for weights files that do not say it; a file of another network is
            a ValueError.
        backend: one of :data:`BACKENDS` (see the module docstring for ``auto``).
        device: "auto" (a GPU if PyTorch sees one, for torch), "cpu", "cuda", "cuda:N", "mps".
            The engines run on the CPU.
        precision: one of :data:`PRECISIONS`; "auto" is :func:`auto_precision` for the backend
            chosen. A precision the backend or this CPU lacks is a ValueError naming what is missing.
        crops: the views per image the session is called with (1, 10, 12, 144).
        form: torch only: "eager", or "compile" (``torch.compile`` of the BN-folded network with
            its constants frozen; the first pass per input shape compiles, which takes minutes on a CPU).
        channels_last: torch only: models and views in channels_last.
        cache_dir: where the engines' builds are kept (default ``$INCEPTIONV4_CACHE`` or
            ``~/.cache/inceptionv4``), keyed by the weights' hash, backend, precision and input
            shape: a second open of the same weights is fast, changed weights are rebuilt.
        full_decode: decode every JPEG at full size, the exact pixels published accuracy was
            measured on; by default one much larger than the protocol needs is decoded reduced in
            the DCT domain (:attr:`Session.reduce_to`), several times faster for a phone photo.
    """
    from ..devices import resolve_device

    sources = list(source) if isinstance(source, (list, tuple)) else [source]
    if not sources:
        raise ValueError("give weights: a bundle or checkpoint file, or several for an ensemble")
    for name, value, allowed in (("backend", backend, BACKENDS), ("precision", precision, PRECISIONS),
                                 ("form", form, FORMS)):  # fmt: skip
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")
    if crops not in CROPS:
        raise ValueError(f"crops must be one of {CROPS}, got {crops}")
    artefacts = [s for s in sources if _is_artefact(s)]
    if artefacts:
        if len(artefacts) != len(sources):
            raise ValueError("an ensemble is all int8 artefacts or all weights, not a mix")
        engines = {ARTEFACT_BACKENDS[Path(a).suffix.lower()] for a in artefacts}
        if len(engines) > 1:
            raise ValueError("the artefacts of an ensemble must be for one backend")
        (engine,) = engines
        if backend not in ("auto", engine):
            raise ValueError(f"{artefacts[0]} is a {engine} artefact: drop --backend {backend} or give "
                             f"--backend {engine}")  # fmt: skip
        if precision not in ("auto", "fp32", "int8"):  # fp32: the default, left as it was
            raise ValueError(f"{artefacts[0]} runs in int8, not {precision}")
        backend, precision = engine, "int8"
    elif precision == "int8":
        raise ValueError(
            "int8 runs a calibrated artefact: write one with `inceptionv4 quantize --weights W --calibrate DIR "
            "--backend openvino|onnxruntime --out Q` and give Q as the weights"
        )
    torch_only = form != "eager" or channels_last
    cpu_only = backend in ("onnxruntime", "openvino")  # "auto" means the CPU for these
    dev = resolve_device("cpu" if cpu_only and str(device) == "auto" else str(device))
    if backend == "auto":
        backend = _auto_backend(dev, "fp32" if precision == "auto" else precision, torch_only)
    if backend != "torch":
        if dev.type != "cpu":
            raise ValueError(f"--backend {backend} runs on the CPU here: drop --device {device}, or use --backend torch")
        if torch_only:
            raise ValueError("form and channels_last are torch options: drop them, or use --backend torch")
        _require(backend)
    if precision == "auto":
        precision = auto_precision(backend, dev)
    gap = engine_precision_gap(backend, precision, dev.type)
    if gap:
        raise ValueError(gap)

    from . import backends

    if artefacts:
        return _decoding(backends.open_artefacts(artefacts, backend, crops=crops, model=model), full_decode)
    models = [_load(s, model) for s in sources]
    first = models[0]
    labels = Labels.of_model(first)
    for m in models[1:]:
        if Labels.of_model(m).keys != labels.keys:
            raise ValueError("the models of an ensemble must share their classes")
    pre = Preprocessing.of(first)
    common = {"pre": pre, "labels": labels, "architecture": first.model_name,
              "precision": precision, "crops": crops}  # fmt: skip
    if backend == "torch":
        keep = str(device) == "auto" and all(isinstance(s, torch.nn.Module) for s in sources)  # where they are
        session = backends.torch_session(models, dev, form=form, channels_last=channels_last,
                                         keep_devices=keep, **common)  # fmt: skip
    else:
        session = backends.engine_session(models, backend, cache_dir=cache_dir, **common)
    return _decoding(session, full_decode)


def _decoding(session: Session, full_decode: bool) -> Session:
    """``session`` with how large it decodes JPEGs set (the backends build it without)."""
    session.full_decode = full_decode
    return session


def _auto_backend(device: torch.device, precision: str, torch_only: bool) -> str:
    if device.type != "cpu" or torch_only:
        return "torch"
    for engine in ("openvino", "onnxruntime"):
        if installed(engine) and engine_precision_gap(engine, precision) is None:
            return engine
    return "torch"


def _is_artefact(source: Source) -> bool:
    return isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() in ARTEFACT_BACKENDS


def _load(source: Source, model: str | None) -> torch.nn.Module:
    if isinstance(source, torch.nn.Module):
        if not isinstance(source, InceptionNet):
            raise TypeError(f"expected a network built by inceptionv4.create_model (an InceptionNet), got "
                            f"{type(source).__name__}")  # fmt: skip
        if model is not None and source.model_name != model:
            raise ValueError(f"the network given is {source.model_name}, not {model}")
        return source
    from ..api import create_model
    from ..weights import load_weights

    from ..weights.hub import HUB_WEIGHTS, is_local

    path = os.fspath(source)
    if not is_local(path):  # a hub id, as create_model(pretrained=...) takes: "timm/inception_v4.tf_in1k"
        known = HUB_WEIGHTS.get(path)
        if known is None:
            ids = ", ".join(sorted(HUB_WEIGHTS))
            raise ValueError(f"{path} is neither a weights file here nor a known hub id ({ids})")
        return create_model(model or known.model, pretrained=path)  # another --model: a ValueError
    if model is not None and not path.endswith(".safetensors"):
        return create_model(model, pretrained=path)
    return load_weights(path, architecture=model)


def as_session(models: Session | torch.nn.Module | Sequence[torch.nn.Module]) -> Session:
    """A session as it is, or networks in memory as a torch session that runs them where they
    are, eager and in float32 (what :func:`~inceptionv4.infer.predict.predict` and
    :func:`~inceptionv4.infer.evaluate.evaluate_protocol` do with bare modules)."""
    return models if isinstance(models, Session) else open_session(models, backend="torch")
