"""Which optional extra a feature needs, and the error that names it.

The package installs with torch alone; the engines, the server, the data formats and the
converters each come with an extra (``pip install 'inceptionv4[serve]'``). A feature asks
:func:`require` before it imports its library, so a missing one is one line that says what to
install rather than a ModuleNotFoundError from deep inside."""

from __future__ import annotations

import importlib.util

#: the extra that installs each optional distribution (by its import name)
EXTRA_OF = {
    "openvino": "openvino", "nncf": "openvino", "onnxruntime": "export", "onnx": "export", "onnxscript": "export",
    "fastapi": "serve", "uvicorn": "serve", "prometheus_client": "serve", "python_multipart": "serve",
    "swagger_ui_bundle": "serve", "webdataset": "wds", "datasets": "hf", "h5py": "keras", "timm": "timm",
    "huggingface_hub": "hub", "grpc": "grpc", "tritonclient": "grpc", "captum": "explain",
    "pyarrow": "parquet", "ray": "ray",
}  # fmt: skip


def installed(package: str) -> bool:
    """Whether ``package`` can be imported here (torch always can)."""
    return package == "torch" or importlib.util.find_spec(package) is not None


def require(package: str, purpose: str | None = None) -> None:
    """ImportError naming the extra that installs ``package`` when it is missing; ``purpose`` says
    what needed it (default ``--backend PACKAGE``, for the engines)."""
    if not installed(package):
        extra = EXTRA_OF.get(package, "export")
        raise ImportError(f"{purpose or '--backend ' + package} needs {package} installed: "
                          f"pip install 'inceptionv4[{extra}]'")  # fmt: skip
