"""The engines: how weights become something that answers, decided once.

:func:`open_session` (:mod:`.open`) takes weights and a :class:`SessionOptions` (:mod:`.options`),
checks them against each other and this machine, picks the engine (:mod:`.torch`, or the ONNX
engines of :mod:`.onnx`: onnxruntime and OpenVINO, over our export or an int8 artefact of
:mod:`.artefacts`) and builds the :class:`Session` (:mod:`.session`). :func:`export_model`
(:mod:`.export`) and ``quantize`` (:mod:`.quantize`; bound as a function in
:mod:`inceptionv4.infer`) write what the engines run.

The names are bound when first asked for, so that reading :class:`SessionOptions` (the CLI's
``--help``) loads no engine and no data pipeline.
"""

import importlib

_WHERE = {"open_session": "open", "auto_precision": "open", "SessionOptions": "options", "BACKENDS": "options",
          "FORMS": "options", "Session": "session", "Labels": "session", "export_model": "export"}  # fmt: skip


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_WHERE)
