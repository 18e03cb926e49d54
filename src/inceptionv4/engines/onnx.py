"""The ONNX engines, onnxruntime and OpenVINO: runners over our own ONNX export of a network
(kept in a disk cache keyed by the weights' hash) or over an int8 artefact.

:func:`~inceptionv4.engines.open.open_session` calls these after it has checked the settings,
and builds the session from what they return.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from ..models import Preprocessing
from ..precision import OV_HINTS
from ..weights.io import state_sha256
from .session import Runner


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


def exported_onnx(model: torch.nn.Module, cache_dir: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """Our ONNX export of ``model`` (BatchNorm folded, dynamic batch, checked against eager), from
    the cache when it holds one for these weights: (path, whether it was built now)."""
    from .export import export_model

    size = Preprocessing.of(model).input_size
    name = model.model_name
    path = cache_root(cache_dir) / "onnx" / f"{name}-{state_sha256(model.state_dict())[:20]}-{size}.onnx"
    if path.is_file():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    export_model(model.eval(), path, format="onnx", fold_bn=True)
    return path, True


def onnx_runners(models: list[torch.nn.Module], backend: str, precision: str,
                 cache_dir: str | os.PathLike | None = None) -> tuple[list[Runner], list[dict]]:  # fmt: skip
    """onnxruntime or OpenVINO runners over each model's cached ONNX export, and for each what
    was built or reused (``{"onnx": path, "built": bool}``)."""
    runners, cache = [], []
    for m in models:
        path, built = exported_onnx(m, cache_dir)
        runners.append(onnx_runner(path, backend, precision, cache_dir))
        cache.append({"onnx": str(path), "built": built})
    return runners, cache


def onnx_runner(path: str | os.PathLike, backend: str, precision: str, cache_dir=None) -> Runner:
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


