"""Inference: one session (weights -> backend, device, precision, crops -> probabilities) behind
eval, predict, serve and bench, and calibrated int8.

The functions are bound here eagerly: ``predict`` and ``quantize`` are also the names of their
submodules, and a lazy binding would be replaced by the submodule whenever another module
imported it first (use ``importlib.import_module("inceptionv4.infer.predict")`` for the module).
``InferenceServer`` is the exception: it needs the ``serve`` extra, so it is imported when used.
"""

from .evaluate import evaluate_protocol, label_map
from .predict import predict
from .quantize import quantize
from .batching import Classifier
from .session import BACKENDS, PRECISIONS, Session, cpu_features, open_session, vector_units


def __getattr__(name: str):
    if name == "InferenceServer":  # needs the serve extra (FastAPI, uvicorn): imported when asked for
        from .serve import InferenceServer

        return InferenceServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Classifier",
    "InferenceServer",
    "Session",
    "cpu_features",
    "evaluate_protocol",
    "label_map",
    "open_session",
    "predict",
    "quantize",
    "vector_units",
]
