"""Inference tasks over a session: evaluation (:mod:`.evaluate`) and prediction (:mod:`.predict`).

How a session is opened lives in :mod:`inceptionv4.engines`; :func:`open_session`,
:func:`quantize` and the session's types are bound here too, the names a user reaches for.
"""

from ..devices import cpu_features, vector_units
from ..engines.open import open_session
from ..engines.options import BACKENDS, SessionOptions
from ..engines.quantize import quantize
from ..engines.session import Session
from ..precision import PRECISIONS
from .evaluate import evaluate_protocol, label_map
from .predict import predict

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Session",
    "SessionOptions",
    "cpu_features",
    "evaluate_protocol",
    "label_map",
    "open_session",
    "predict",
    "quantize",
    "vector_units",
]
