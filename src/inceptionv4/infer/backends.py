"""The runners behind a :class:`~inceptionv4.engines.session.Session`: torch modules, and the ONNX
engines (onnxruntime, OpenVINO) built from our own ONNX export and kept in a disk cache.

Only :func:`~inceptionv4.infer.session.open_session` calls these, after it has checked the
settings; each returns a ready Session.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..data import Preprocessing
from ..weights.io import file_sha256, state_sha256
from ..precision import OV_HINTS, TORCH_DTYPES
from ..engines.session import Labels, Session, device_of

#: What an int8 artefact's metadata says it is (ONNX ``metadata_props``, OpenVINO ``rt_info``).
ARTEFACT_FORMAT = "inceptionv4.int8"


@functools.cache
def openvino_core():
    """The process's one OpenVINO ``Core``, kept for the process's life. Compiling for the CPU
    registers an alternate signal stack on the calling thread that OpenVINO frees when its last
    Core goes; freed from another thread (a garbage collection there), the registration would
    outlive the memory, and the next signal handled in Python (a DataLoader's SIGCHLD) would be a
    segmentation fault. One Core that never goes keeps that stack valid, and shares the plugin."""
    import openvino as ov

    return ov.Core()


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$INCEPTIONV4_CACHE``, else ``~/.cache/inceptionv4``."""
    root = cache_dir or os.environ.get("INCEPTIONV4_CACHE") or Path.home() / ".cache" / "inceptionv4"
    return Path(root).expanduser()


def compile_for_inference(model: torch.nn.Module, *, cpp_wrapper: bool = True) -> torch.nn.Module:
    """``torch.compile`` of a copy of ``model`` with BatchNorm folded, in channels_last, with its
    constants frozen (eval only; ``model`` itself is left as it is).

    Inductor then packs every conv's weights once and fuses ReLUs and residual adds into the
    kernels; ``cpp_wrapper`` calls them from generated C++ rather than Python (on a CPU: the
    lowest torch batch-1 latency). The first call per input shape compiles, which takes minutes on
    a CPU.
    """
    from ..models.fold import fold_batchnorm

    # With ATen's kernels held below the CPU's own units (ATEN_CPU_CAPABILITY=avx2 or default on an
    # AVX-512 machine), torch 2.14.1's C++ wrapper over frozen channels_last convolutions returned
    # values of 1e24 where eager gives the right ones; the Python wrapper stays exact there.
    cpp_wrapper = cpp_wrapper and not os.environ.get("ATEN_CPU_CAPABILITY")
    fast = fold_batchnorm(model).to(memory_format=torch.channels_last).eval()
    return torch.compile(fast, options={"freezing": True, "cpp_wrapper": cpp_wrapper})


def torch_session(models: list[torch.nn.Module], device: torch.device, *, pre: Preprocessing, labels: Labels,
                  architecture: str, precision: str, crops: int, form: str = "eager", channels_last: bool = False,
                  keep_devices: bool = False) -> Session:  # fmt: skip
    """Torch runners: each model as it is (``form="eager"``) or compiled
    (:func:`compile_for_inference`), on ``device`` or where it is with ``keep_devices``, under
    autocast in ``precision``. A model not on ``device`` is moved there (in place, as
    ``Module.to`` is) and put in eval mode; a compiled form is a copy, so a caller's own module
    keeps its layers."""
    from ..devices import to_device

    runners, forms = [], []
    for m in models:
        m = m.eval() if keep_devices else to_device([m], device)[0]
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        if form == "compile":
            m = compile_for_inference(m, cpp_wrapper=device_of(m).type == "cpu")
        forms.append(m)
        runners.append(_torch_runner(m, TORCH_DTYPES[precision], channels_last or form == "compile"))
    device = device_of(models[0]) if keep_devices else device
    chunk = 256 if device.type == "cuda" else 64
    return Session(runners, pre, labels, architecture, "torch", precision, device, crops, form, chunk, forms)


def _torch_runner(module: torch.nn.Module, dtype: torch.dtype | None, channels_last: bool):
    device = device_of(module)

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return module(x)

    return run


def exported_onnx(model: torch.nn.Module, cache_dir: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """Our ONNX export of ``model`` (BatchNorm folded, dynamic batch, checked against eager), from
    the cache when it holds one for these weights: (path, whether it was built now)."""
    from ..tools.export import export_model

    size = Preprocessing.of(model).input_size
    name = model.model_name
    path = cache_root(cache_dir) / "onnx" / f"{name}-{state_sha256(model.state_dict())[:20]}-{size}.onnx"
    if path.is_file():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    export_model(model.eval(), path, format="onnx", fold_bn=True)
    return path, True


def engine_session(models: list[torch.nn.Module], backend: str, *, pre: Preprocessing, labels: Labels,
                   architecture: str, precision: str, crops: int, cache_dir=None) -> Session:  # fmt: skip
    """onnxruntime or OpenVINO runners over each model's cached ONNX export."""
    runners, cache = [], []
    for m in models:
        path, built = exported_onnx(m, cache_dir)
        runners.append(onnx_runner(path, backend, precision, cache_dir))
        cache.append({"onnx": str(path), "built": built})
    return Session(runners, pre, labels, architecture, backend, precision, torch.device("cpu"), crops, backend,
                   64, cache=cache)  # fmt: skip


def onnx_runner(path: str | os.PathLike, backend: str, precision: str, cache_dir=None):
    """A runner for an ONNX (or OpenVINO IR) file on ``backend``, compiled for ``precision``.
    OpenVINO keeps its compiled blobs under the cache (its ``CACHE_DIR``), so a second open of the
    same file and precision skips compiling."""
    if backend == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # no warnings on stderr for shapes it infers
        sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(sess.run(None, {name: np.ascontiguousarray(x.numpy())})[0])

        return run
    compiled = openvino_core().compile_model(str(path), "CPU", {
        "INFERENCE_PRECISION_HINT": OV_HINTS[precision], "PERFORMANCE_HINT": "LATENCY",
        "CACHE_DIR": str(cache_root(cache_dir) / "openvino")})  # fmt: skip
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        request.infer({0: np.ascontiguousarray(x.numpy())})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    return run


def artefact_digest(path: str | os.PathLike, proto=None) -> str:
    """SHA-256 of what an int8 artefact computes with: an ONNX file's graph (``proto``, loaded,
    if given; the metadata it carries is outside the graph), or an OpenVINO IR's ``.bin``. Recorded
    when the artefact is written and checked when it is opened, so flipped bytes, or the ``.bin`` of
    another model beside the ``.xml``, are refused rather than answered from."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        import hashlib

        import onnx

        proto = proto if proto is not None else onnx.load(str(path), load_external_data=False)
        return hashlib.sha256(proto.graph.SerializeToString(deterministic=True)).hexdigest()
    return file_sha256(path.with_suffix(".bin"))


#: what an artefact's metadata must hold, and of what type, before anything is built from it
_ARTEFACT_FIELDS = {"architecture": str, "num_classes": int, "preprocessing": dict}


def artefact_metadata(path: str | os.PathLike) -> dict:
    """The metadata an int8 artefact carries (architecture, classes, preprocessing, calibration
    report), checked: its fields, its digest against its weights (:func:`artefact_digest`), and
    its class count against the outputs. ValueError, naming the file, for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such int8 artefact: {path}")
    text, proto, width = None, None, None
    if path.suffix.lower() == ".onnx":
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as err:  # noqa: BLE001 - onnx raises DecodeError and others for a damaged file
            raise ValueError(f"{path} is not a readable ONNX file: {err}") from None
        text = {p.key: p.value for p in proto.metadata_props}.get(ARTEFACT_FORMAT)
        dims = proto.graph.output[0].type.tensor_type.shape.dim if proto.graph.output else []
        width = dims[-1].dim_value if len(dims) == 2 and dims[-1].HasField("dim_value") else None
    else:
        try:
            model = openvino_core().read_model(str(path))
        except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError for a damaged IR
            raise ValueError(f"{path} is not a readable OpenVINO IR: {str(err).splitlines()[0]}") from None
        if model.has_rt_info([ARTEFACT_FORMAT]):
            text = model.get_rt_info([ARTEFACT_FORMAT]).astype(str)
        shape = model.outputs[0].get_partial_shape() if model.outputs else None
        width = shape[-1].get_length() if shape is not None and shape.rank.get_length() == 2 and shape[-1].is_static else None
    if not text:
        raise ValueError(f"{path} is not an inceptionv4 int8 artefact (write one with `inceptionv4 quantize`)")
    try:
        meta = json.loads(text)
    except ValueError:
        raise ValueError(f"{path}: its int8 metadata is not valid JSON; write the artefact again") from None
    for field, kind in _ARTEFACT_FIELDS.items():
        value = meta.get(field) if isinstance(meta, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{path}: its int8 metadata lacks a valid {field!r}; write the artefact again")
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != meta["num_classes"]):
        raise ValueError(f"{path}: its metadata names {len(names) if isinstance(names, list) else 'no list of'} "
                         f"classes for {meta['num_classes']}; write the artefact again")  # fmt: skip
    if width is not None and width != meta["num_classes"]:
        raise ValueError(f"{path}: the network gives {width} outputs but its metadata says {meta['num_classes']} "
                         "classes: the artefact was altered; write it again")  # fmt: skip
    recorded = meta.get("digest")
    if recorded is not None and recorded != artefact_digest(path, proto):
        what = "its .bin is not the one written with it (another model's, or damaged)" if proto is None else \
            "its graph changed since it was written (damaged)"  # fmt: skip
        raise ValueError(f"{path}: {what}; refused. Write it again with `inceptionv4 quantize`")
    return meta


def open_artefacts(paths: list, backend: str, *, crops: int, model: str | None) -> Session:
    """A session over int8 artefacts (an ensemble if several) on their engine."""
    metas = [artefact_metadata(p) for p in paths]
    first = metas[0]
    for p, meta in zip(paths, metas, strict=True):
        if model is not None and meta["architecture"] != model:
            raise ValueError(f"{p} holds int8 {meta['architecture']} weights, not {model}")
    labels = Labels.of(first["num_classes"], first.get("label_set"), first.get("class_names"))
    for p, meta in zip(paths[1:], metas[1:], strict=True):
        if Labels.of(meta["num_classes"], meta.get("label_set"), meta.get("class_names")).keys != labels.keys:
            raise ValueError(f"the models of an ensemble must share their classes ({p} differs)")
    try:
        pre = Preprocessing.from_dict(first.get("preprocessing"))
    except ValueError as err:
        raise ValueError(f"{paths[0]}: the artefact's preprocessing {err}") from None
    runners = [onnx_runner(p, backend, "int8") for p in paths]
    return Session(runners, pre, labels, first["architecture"], backend, "int8", torch.device("cpu"), crops,
                   f"{backend} int8 artefact", 64, cache=[{"artefact": str(p)} for p in paths])  # fmt: skip
