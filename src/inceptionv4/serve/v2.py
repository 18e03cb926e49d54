"""The KServe Open Inference Protocol ("v2"), as Triton, OpenVINO Model Server and KServe speak it:
the shapes of its JSON, and its binary tensor data and classification extensions.

What a request may hold for the served model:

- ``image_bytes``: ``BYTES [N]``, encoded images (JPEG, PNG, ...), decoded and preprocessed by the
  server as ``/v1/predict`` does (in JSON, each element base64);
- ``images``: ``FP32 [N, 3, S, S]``, preprocessed views, as the model that ``export --format
  triton`` writes takes them (a 1-crop session only).

It answers ``probabilities``: ``FP32 [N, classes]`` (and ``logits``, their log), or with
``"classification": k`` the k best as ``BYTES [N, k]`` strings ``"value:index:label"``. Tensors travel as JSON ``data`` or, with the
binary extension, after a JSON header whose length ``Inference-Header-Content-Length`` gives.
Everything here is plain parsing and encoding; the routes that run it are in :mod:`.app`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass, field
from http import HTTPStatus

import numpy as np

from .requests import RequestError, parse_json

#: the names of the served model's tensors; LOGITS is the log of the probabilities: the network's
#: logits up to a constant per image (their softmax is the probabilities, their order the same),
#: the output the model ``export --format triton`` writes gives, so its client.py works here too
BYTES_INPUT, TENSOR_INPUT, OUTPUT, LOGITS = "image_bytes", "images", "probabilities", "logits"
#: the one version of the served model
VERSION = "1"
#: the extensions this server speaks
EXTENSIONS = ["binary_tensor_data", "classification"]
#: the header that gives the JSON header's length in a binary request or answer
HEADER_LENGTH = "Inference-Header-Content-Length"


def _refuse(message: str, reason: str = "v2_bad_request", status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> RequestError:
    return RequestError(status, reason, message)


def model_metadata(name: str, input_size: int, num_classes: int) -> dict:
    """``GET /v2/models/{name}``: the model's inputs and outputs."""
    return {
        "name": name,
        "versions": [VERSION],
        "platform": "inceptionv4",
        "inputs": [
            {"name": BYTES_INPUT, "datatype": "BYTES", "shape": [-1]},
            {"name": TENSOR_INPUT, "datatype": "FP32", "shape": [-1, 3, input_size, input_size]},
        ],
        "outputs": [{"name": out, "datatype": "FP32", "shape": [-1, num_classes]} for out in (OUTPUT, LOGITS)],
    }


@dataclass
class Input:
    """One input tensor of a request: ``data`` is a float32 array (FP32) or a list of bytes (BYTES)."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray | list[bytes]


@dataclass
class RequestedOutput:
    name: str
    binary: bool
    classification: int = 0


@dataclass
class InferRequest:
    """A v2 infer request, read and checked: its one input and the outputs it asks for."""

    input: Input
    outputs: list[RequestedOutput]
    id: str | None = None
    parameters: dict = field(default_factory=dict)


def parse_infer(body: bytes, header_length: str | None, max_images: int) -> InferRequest:
    """A v2 infer request body (JSON, or a JSON header and binary tensor data after it) as an
    :class:`InferRequest`, or a :class:`~inceptionv4.serve.requests.RequestError` (400) naming what
    is wrong: the header length, the JSON, an input's name, datatype, shape or data, a binary size."""
    if header_length is None:
        header, binary = body, b""
    else:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise _refuse(f"{HEADER_LENGTH} must be the length of the JSON header, at most the body's "
                          f"{len(body)} bytes; got {header_length[:20]!r}")  # fmt: skip
        header, binary = body[: int(header_length)], body[int(header_length) :]
    request = parse_json(header)
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _refuse(f"give one input: {BYTES_INPUT} (BYTES [N], encoded images) or {TENSOR_INPUT} "
                      "(FP32 [N, 3, S, S])")  # fmt: skip
    parameters = request.get("parameters") if isinstance(request.get("parameters"), dict) else {}
    tensor, used = read_input(inputs[0], binary, max_images)
    if used != len(binary):
        raise _refuse(f"the body holds {len(binary)} bytes of binary data; the inputs' binary_data_size "
                      f"account for {used}")  # fmt: skip
    rid = request.get("id")
    return InferRequest(tensor, requested_outputs(request.get("outputs"), bool(parameters.get("binary_data_output"))),
                        str(rid) if rid is not None else None, parameters)  # fmt: skip


def read_input(spec: dict, binary: bytes, max_images: int) -> tuple[Input, int]:
    """One input, and how many bytes of the binary data it used."""
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    expected = {BYTES_INPUT: "BYTES", TENSOR_INPUT: "FP32"}
    if name not in expected:
        raise _refuse(f"unknown input {name!r}: give {BYTES_INPUT} (BYTES) or {TENSOR_INPUT} (FP32)")
    if datatype != expected[name]:
        raise _refuse(f"input {name} is {expected[name]}, not {datatype}", "v2_datatype")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                           for d in shape):  # fmt: skip
        raise _refuse(f"input {name}: shape must be a list of sizes, got {str(shape)[:60]}", "v2_shape")
    if not 1 <= shape[0] <= max_images:
        raise _refuse(f"input {name}: {shape[0]} images; this server takes 1 to {max_images} per request",
                      "too_many_images" if shape[0] > max_images else "v2_shape")  # fmt: skip
    count = math.prod(shape)
    params = spec.get("parameters") if isinstance(spec.get("parameters"), dict) else {}
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(binary):
            raise _refuse(f"input {name}: binary_data_size {size!r} is not within the {len(binary)} bytes sent",
                          "v2_binary")  # fmt: skip
        raw = binary[:size]
        data = _binary_bytes(raw, count, name) if datatype == "BYTES" else _binary_fp32(raw, count, name)
        return Input(name, datatype, shape, data), size
    if "data" not in spec:
        raise _refuse(f"input {name} has no data (JSON data, or parameters.binary_data_size)")
    data = _json_bytes(spec["data"], count, name) if datatype == "BYTES" else _json_fp32(spec["data"], count, name)
    return Input(name, datatype, shape, data), 0


def _binary_fp32(raw: bytes, count: int, name: str) -> np.ndarray:
    if len(raw) != 4 * count:
        raise _refuse(f"input {name}: {len(raw)} bytes of FP32 data for a shape of {count} values "
                      f"({4 * count} bytes)", "v2_binary")  # fmt: skip
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def _binary_bytes(raw: bytes, count: int, name: str) -> list[bytes]:
    """The binary BYTES layout: each element a little-endian uint32 length, then its bytes."""
    out, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise _refuse(f"input {name}: BYTES data ends inside an element's length", "v2_binary")
        (n,) = struct.unpack_from("<I", raw, at)
        if at + 4 + n > len(raw):
            raise _refuse(f"input {name}: an element of {n} bytes runs past the data's end", "v2_binary")
        out.append(raw[at + 4 : at + 4 + n])
        at += 4 + n
    if len(out) != count:
        raise _refuse(f"input {name}: {len(out)} elements for a shape of {count}", "v2_shape")
    return out


def _flat(data: object) -> list:
    """Nested JSON lists as one flat list, in order (without recursion: any depth JSON parses)."""
    out, stack = [], [iter([data])]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _json_fp32(data: object, count: int, name: str) -> np.ndarray:
    values = _flat(data)
    if len(values) != count:
        raise _refuse(f"input {name}: {len(values)} values for a shape of {count}", "v2_shape")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise _refuse(f"input {name}: FP32 data must be numbers", "v2_datatype")
    return np.asarray(values, dtype=np.float32)


def _json_bytes(data: object, count: int, name: str) -> list[bytes]:
    values = _flat(data)
    if len(values) != count:
        raise _refuse(f"input {name}: {len(values)} elements for a shape of {count}", "v2_shape")
    out = []
    for i, v in enumerate(values):
        try:
            out.append(base64.b64decode(v, validate=True))
        except (binascii.Error, ValueError, TypeError):
            raise _refuse(f"input {name}[{i}]: in JSON, an image is a base64 string (or send binary data)",
                          "bad_base64") from None  # fmt: skip
    return out


def requested_outputs(specs: object, binary_default: bool) -> list[RequestedOutput]:
    if specs is None:
        return [RequestedOutput(OUTPUT, binary_default)]
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise _refuse('"outputs" must be a list of {"name": ..., "parameters": {...}}')
    out = []
    for s in specs:
        if s.get("name") not in (OUTPUT, LOGITS):
            raise _refuse(f"unknown output {s.get('name')!r}: this model gives {OUTPUT} and {LOGITS}")
        params = s.get("parameters") if isinstance(s.get("parameters"), dict) else {}
        k = params.get("classification", 0)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise _refuse(f"classification must be a count of classes >= 0, got {k!r}")
        out.append(RequestedOutput(s["name"], bool(params.get("binary_data", binary_default)), k))
    return out


def _classification(probs: np.ndarray, k: int, labels: list[str]) -> list[list[bytes]]:
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[f"{probs[n, i]:.6f}:{i}:{labels[i]}".encode() for i in row] for n, row in enumerate(top)]


@dataclass
class OutputTensor:
    """One output of an answer: its name, datatype and shape, its bytes in the binary layout, and
    its values as JSON data."""

    name: str
    datatype: str
    shape: list[int]
    raw: bytes
    data: list


def output_tensors(outputs: list[RequestedOutput], probs: np.ndarray, labels: list[str]) -> list[OutputTensor]:
    """The outputs a request asked for, from the (N, classes) probabilities."""
    out = []
    for o in outputs:
        values = probs if o.name == OUTPUT else np.log(np.maximum(probs, np.finfo(np.float32).tiny))
        if o.classification:
            rows = _classification(values, o.classification, labels)
            flat = [v for row in rows for v in row]
            out.append(OutputTensor(o.name, "BYTES", [len(rows), len(rows[0]) if rows else 0],
                                    b"".join(struct.pack("<I", len(v)) + v for v in flat), [v.decode() for v in flat]))  # fmt: skip
        else:
            values = values.astype(np.float32)
            out.append(OutputTensor(o.name, "FP32", list(values.shape), values.astype("<f4").tobytes(),
                                    values.ravel().tolist()))  # fmt: skip
    return out


def check_views(tensor: Input, input_size: int, crops: int) -> np.ndarray:
    """An ``images`` input as (N, 3, S, S) float32 views, or a 400 for another shape, or for a server
    that cuts several crops from each image (it needs the images themselves)."""
    if tensor.shape[1:] != [3, input_size, input_size]:
        raise _refuse(f"input {tensor.name}: shape must be [N, 3, {input_size}, {input_size}], got {tensor.shape}",
                      "v2_shape")  # fmt: skip
    if crops != 1:
        raise _refuse(f"this server runs {crops} crops per image, cut from the image: send {BYTES_INPUT} "
                      "(encoded images)", "v2_crops")  # fmt: skip
    return tensor.data.reshape(tensor.shape)


def encode_response(request: InferRequest, model: str, probs: np.ndarray, labels: list[str]) -> tuple[bytes, dict]:
    """The answer's body and headers: JSON, or a JSON header and the binary outputs after it."""
    outputs, buffers = [], []
    for o, t in zip(request.outputs, output_tensors(request.outputs, probs, labels), strict=True):
        entry = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if o.binary:
            buffers.append(t.raw)
            entry["parameters"] = {"binary_data_size": len(t.raw)}
        else:
            entry["data"] = t.data
        outputs.append(entry)
    answer = {"model_name": model, "model_version": VERSION, "outputs": outputs}
    if request.id is not None:
        answer["id"] = request.id
    header = json.dumps(answer).encode()
    if not buffers:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(buffers), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
