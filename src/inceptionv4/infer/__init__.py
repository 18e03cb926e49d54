"""Inference: one session (weights -> backend, device, precision, crops -> probabilities) behind
eval, predict, serve and bench, and calibrated int8.

The names below load on first use (PEP 562), so ``import inceptionv4.infer`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "BACKENDS": "session",
    "PRECISIONS": "session",
    "Session": "session",
    "open_session": "session",
    "cpu_features": "session",
    "vector_units": "session",
    "evaluate_protocol": "evaluate",
    "label_map": "evaluate",
    "predict": "predict",
    "InferenceServer": "serve",
    "Classifier": "serve",
    "quantize": "quantize",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


if TYPE_CHECKING:
    from .evaluate import evaluate_protocol, label_map
    from .predict import predict
    from .quantize import quantize
    from .serve import Classifier, InferenceServer
    from .session import BACKENDS, PRECISIONS, Session, cpu_features, open_session, vector_units
