"""The int8 artefacts :func:`~inceptionv4.engines.quantize.quantize` writes: which engine each
file suffix is for, what its metadata must hold, and the digest that ties the metadata to the
weights. An artefact is checked here before any engine runs it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..models import Preprocessing
from ..weights.io import file_sha256
from .onnx import openvino_core
from .session import Labels

#: What an int8 artefact's metadata says it is (ONNX ``metadata_props``, OpenVINO ``rt_info``).
ARTEFACT_FORMAT = "inceptionv4.int8"
#: The suffix of each engine's artefact: the one table of it
ARTEFACT_BACKENDS = {".onnx": "onnxruntime", ".xml": "openvino"}
ARTEFACT_SUFFIX = {engine: suffix for suffix, engine in ARTEFACT_BACKENDS.items()}


def is_artefact(source: object) -> bool:
    """Whether ``source`` names an int8 artefact (by its suffix)."""
    return isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() in ARTEFACT_BACKENDS


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


@dataclass(frozen=True)
class ArtefactSet:
    """What one or more int8 artefacts of an ensemble hold in common, checked."""

    paths: list[str]
    labels: Labels
    pre: Preprocessing
    architecture: str


def read_artefacts(paths: list, *, model: str | None) -> ArtefactSet:
    """The metadata of the int8 artefacts of an ensemble, checked each (:func:`artefact_metadata`)
    and against each other: one network (``model`` if given), one set of classes."""
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
    return ArtefactSet([str(p) for p in paths], labels, pre, first["architecture"])


def artefact_weights(path: str | os.PathLike, weights: str | os.PathLike | None = None):
    """The fp32 network an int8 artefact was quantized from: ``weights`` if given, else the file
    its report names, checked against the hash the artefact recorded of them. Gradients (a
    class-activation map) need them; a ValueError says what to pass when they are not at hand or
    are other weights."""
    from ..api import load_network
    from ..weights.io import state_sha256

    meta = artefact_metadata(path)
    named = (meta.get("report") or {}).get("weights")
    source = weights if weights is not None else named
    how = "give them with --explain-weights FILE (explain(..., weights=FILE))"
    if source is None or (weights is None and not Path(source).is_file()):
        where = f"its report names {named}, which is not here" if named else "its report names none"
        raise ValueError(f"{path} is an int8 artefact: a heatmap needs the fp32 weights it was quantized from, and "
                         f"{where}; {how}")  # fmt: skip
    network = load_network(source, meta["architecture"])
    recorded = meta.get("weights_sha256")
    if recorded is not None and state_sha256(network.state_dict()) != recorded:
        raise ValueError(f"{source} are not the fp32 weights {Path(path).name} was quantized from (their hash "
                         f"differs); {how}")  # fmt: skip
    return network
