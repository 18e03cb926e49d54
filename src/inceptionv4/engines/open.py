"""How inference runs, decided once: weights -> backend, device, precision, crops -> probabilities.

:func:`open_session` takes weights files (several: an ensemble), networks in memory, or an int8
artefact written by :func:`~inceptionv4.engines.quantize.quantize`, checks every setting against
each other and against this machine before anything heavy happens, and returns a
:class:`Session`. ``eval``, ``predict``, ``serve`` and ``bench`` all run one.

Backends (:mod:`.torch`, :mod:`.onnx`):

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

import dataclasses
import os
from collections.abc import Sequence

import torch

from .. import devices, extras
from ..models import Preprocessing
from ..precision import engine_precision_gap
from .artefacts import ARTEFACT_BACKENDS, is_artefact, read_artefacts
from .options import SessionOptions
from .session import Labels, Session

Source = str | os.PathLike | torch.nn.Module


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
        from .onnx import openvino_core

        hint = openvino_core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()  # "bf16", "f32"
        precision = {"bf16": "bf16", "f16": "fp16"}.get(hint, "fp32")
        return precision if engine_precision_gap(backend, precision) is None else "fp32"
    f = devices.cpu_features()
    return "bf16" if f["avx512_bf16"] or f["amx"] else "fp32"


def open_session(source: Source | Sequence[Source], options: SessionOptions | None = None, **settings) -> Session:
    """Open weights for inference, checking every setting before anything heavy is done.

    Args:
        source: a weights file (a bundle, or any checkpoint :func:`~inceptionv4.load_weights`
            reads), a hub id, an int8 artefact from ``inceptionv4 quantize`` (``.onnx``:
            onnxruntime, ``.xml``: OpenVINO), a network in memory, or a list of these: an
            ensemble whose probabilities are averaged. Networks in memory run where they are
            (torch; moved when a ``device`` is given) or are exported (the engines); their layers
            are not changed.
        options: a :class:`~inceptionv4.engines.options.SessionOptions`, whose fields say what
            each setting means and takes (model, backend, device, precision, crops, form,
            channels_last, full_decode, cache_dir).
        settings: any of those fields by keyword, over ``options``; an unknown one is a TypeError.

    A setting the backend, the weights or this machine cannot honour is a ValueError naming what
    is missing, said before any network is built.
    """
    opts = dataclasses.replace(options or SessionOptions(), **settings)
    sources = list(source) if isinstance(source, (list, tuple)) else [source]
    if not sources:
        raise ValueError("give weights: a bundle or checkpoint file, or several for an ensemble")
    artefacts = [s for s in sources if is_artefact(s)]
    opts = _artefact_engine(artefacts, sources, opts) if artefacts else opts
    if opts.precision == "int8" and not artefacts:
        raise ValueError(
            "int8 runs a calibrated artefact: write one with `inceptionv4 quantize --weights W --calibrate DIR "
            "--backend openvino|onnxruntime --out Q` and give Q as the weights"
        )
    opts, device = _placed(opts)
    if artefacts:
        if opts.output == "embeddings":
            raise ValueError("an int8 artefact computes class probabilities: embed with the fp32 weights it was "
                             "quantized from")  # fmt: skip
        return _artefact_session(artefacts, opts)
    from ..api import load_network

    models = [load_network(s, opts.model) for s in sources]
    labels = Labels.of_model(models[0])
    for m in models[1:]:
        if Labels.of_model(m).keys != labels.keys:
            raise ValueError("the models of an ensemble must share their classes")
    if opts.output == "embeddings":  # the engines run the embedding network like any other
        models = [m.embedding_model() for m in models]
    if opts.backend == "torch":
        keep = opts.device == "auto" and all(isinstance(s, torch.nn.Module) for s in sources)  # where they are
        return _torch_session(models, labels, device, opts, keep_devices=keep, sources=sources)
    from .onnx import onnx_runners

    runners, cache = onnx_runners(models, opts.backend, opts.precision, opts.cache_dir)
    return _session(runners, Preprocessing.of(models[0]), labels, models[0].model_name, opts, torch.device("cpu"),
                    form="onnx export", cache=cache, sources=sources)  # fmt: skip


def _artefact_engine(artefacts: list, sources: list, opts: SessionOptions) -> SessionOptions:
    """The options for int8 artefacts: their engine and int8, or a ValueError for what contradicts them."""
    if len(artefacts) != len(sources):
        raise ValueError("an ensemble is all int8 artefacts or all weights, not a mix")
    engines = {ARTEFACT_BACKENDS[os.path.splitext(os.fspath(a))[1].lower()] for a in artefacts}
    if len(engines) > 1:
        raise ValueError("the artefacts of an ensemble must be for one backend")
    (engine,) = engines
    if opts.backend not in ("auto", engine):
        raise ValueError(f"{artefacts[0]} is a {engine} artefact: drop --backend {opts.backend} or give "
                         f"--backend {engine}")  # fmt: skip
    if opts.precision not in ("auto", "fp32", "int8"):  # fp32: the default, left as it was
        raise ValueError(f"{artefacts[0]} runs in int8, not {opts.precision}")
    return dataclasses.replace(opts, backend=engine, precision="int8")


def _placed(opts: SessionOptions) -> tuple[SessionOptions, torch.device]:
    """The backend, device and precision ``auto`` stand for here, checked against each other and
    this machine (engines run on the CPU; torch forms need torch; a precision the CPU lacks)."""
    torch_only = opts.form != "eager" or opts.channels_last
    cpu_only = opts.backend in ("onnxruntime", "openvino")  # "auto" means the CPU for these
    device = devices.resolve_device("cpu" if cpu_only and opts.device == "auto" else opts.device)
    backend = opts.backend
    if backend == "auto":
        backend = _auto_backend(device, "fp32" if opts.precision == "auto" else opts.precision, torch_only)
    if backend != "torch":
        if device.type != "cpu":
            raise ValueError(f"--backend {backend} runs on the CPU here: drop --device {opts.device}, or use "
                             "--backend torch")  # fmt: skip
        if torch_only:
            raise ValueError("form and channels_last are torch options: drop them, or use --backend torch")
        extras.require(backend)
    precision = auto_precision(backend, device) if opts.precision == "auto" else opts.precision
    gap = engine_precision_gap(backend, precision, device.type)
    if gap:
        raise ValueError(gap)
    return dataclasses.replace(opts, backend=backend, precision=precision), device


def _auto_backend(device: torch.device, precision: str, torch_only: bool) -> str:
    if device.type != "cpu" or torch_only:
        return "torch"
    for engine in ("openvino", "onnxruntime"):
        if extras.installed(engine) and engine_precision_gap(engine, precision) is None:
            return engine
    return "torch"


def _torch_session(models: list, labels: Labels, device: torch.device, opts: SessionOptions, *,
                   keep_devices: bool, sources: list) -> Session:  # fmt: skip
    from .torch import torch_runners

    built = torch_runners(models, device, precision=opts.precision, form=opts.form,
                          channels_last=opts.channels_last, keep_devices=keep_devices)  # fmt: skip
    return _session(built.runners, Preprocessing.of(models[0]), labels, models[0].model_name, opts, built.device,
                    form=opts.form, chunk=built.chunk, models=built.modules, sources=sources)  # fmt: skip


def _artefact_session(paths: list, opts: SessionOptions) -> Session:
    from .onnx import onnx_runner

    found = read_artefacts(paths, model=opts.model)
    runners = [onnx_runner(p, opts.backend, "int8") for p in paths]
    return _session(runners, found.pre, found.labels, found.architecture, opts, torch.device("cpu"),
                    form="int8 artefact", cache=[{"artefact": p} for p in found.paths], sources=list(paths))  # fmt: skip


def _session(runners: list, pre, labels: Labels, architecture: str, opts: SessionOptions, device: torch.device,
             **facts) -> Session:  # fmt: skip
    """The one place a :class:`Session` is built: by keyword, from the checked options."""
    return Session(runners=runners, pre=pre, labels=labels, architecture=architecture, backend=opts.backend,
                   precision=opts.precision, device=device, crops=opts.crops, full_decode=opts.full_decode,
                   output=opts.output, **facts)  # fmt: skip


def as_session(models: Session | torch.nn.Module | Sequence[torch.nn.Module]) -> Session:
    """A session as it is, or networks in memory as a torch session that runs them where they
    are, eager and in float32 (what :func:`~inceptionv4.infer.predict.predict` and
    :func:`~inceptionv4.infer.evaluate.evaluate_protocol` do with bare modules)."""
    return models if isinstance(models, Session) else open_session(models, backend="torch")
