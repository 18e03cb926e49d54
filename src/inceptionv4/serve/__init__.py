"""The inference server: an HTTP API and a page over a session, batching requests across clients.

:class:`ServeSettings` (:mod:`.settings`) is imported eagerly: it needs nothing but the standard
library, and the CLI reads its flags from it. The server itself needs the ``serve`` extra
(FastAPI, uvicorn, prometheus_client), so :class:`InferenceServer`, :class:`Classifier`,
:func:`create_app` and :func:`serve_workers` are imported when first asked for.
"""

from .settings import ServeSettings

_LAZY = {"InferenceServer": "server", "serve_workers": "server", "RequestError": "requests", "create_app": "app",
         "Classifier": "batching", "ServerBusy": "batching", "DecodeBudget": "batching"}  # fmt: skip


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Classifier", "DecodeBudget", "InferenceServer", "RequestError", "ServeSettings", "ServerBusy",
           "create_app", "serve_workers"]  # fmt: skip
