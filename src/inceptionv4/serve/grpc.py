"""The KServe v2 protocol over gRPC: ``inference.GRPCInferenceService``, from the stubs tritonclient
ships (the ``grpc`` extra), on ``--grpc-port``, beside the HTTP server and sharing its
:class:`~inceptionv4.serve.batching.Classifier`: a gRPC request joins the same batches.

The same limits hold as over HTTP: the message size is ``max_body_bytes``, at most ``queue_size``
calls run at once (beyond, RESOURCE_EXHAUSTED), a call waits for its batch no longer than its
deadline or ``timeout_s``, and a refusal is a status with the reason, never a traceback.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from concurrent import futures
from http import HTTPStatus

import numpy as np
import torch

from ..data.decode import DecodeError
from ..extras import require
from ..version import __version__
from . import v2
from .batching import Classifier, ServerBusy
from .prometheus import ServeMetrics
from .requests import RequestError
from .settings import ServeSettings

for _package in ("grpc", "tritonclient"):
    require(_package, "serve --grpc-port")

import grpc  # noqa: E402 - after the check above, which names the extra to install
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402

log = logging.getLogger("inceptionv4.serve")

#: how a refusal's HTTP status reads as a gRPC status
_CODES = {HTTPStatus.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT, HTTPStatus.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
          HTTPStatus.SERVICE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
          HTTPStatus.REQUEST_ENTITY_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED}  # fmt: skip


class _Service(pb_grpc.GRPCInferenceServiceServicer):
    """The v2 service over one classifier (the methods tritonclient's gRPC client calls)."""

    def __init__(self, classifier: Classifier, settings: ServeSettings, metrics: ServeMetrics,
                 draining: threading.Event) -> None:  # fmt: skip
        self.classifier, self.settings, self.metrics, self.draining = classifier, settings, metrics, draining
        self.name = classifier.architecture

    def ServerLive(self, request, context):  # noqa: N802 - the protocol's names
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):  # noqa: N802
        return pb.ServerReadyResponse(ready=not self.draining.is_set())

    def ServerMetadata(self, request, context):  # noqa: N802
        return pb.ServerMetadataResponse(name="inceptionv4", version=__version__, extensions=v2.EXTENSIONS)

    def ModelReady(self, request, context):  # noqa: N802
        return pb.ModelReadyResponse(ready=self._known(request.name, request.version) and not self.draining.is_set())

    def ModelMetadata(self, request, context):  # noqa: N802
        return self._answer(context, "/v2", lambda: self._metadata(request))

    def ModelInfer(self, request, context):  # noqa: N802
        return self._answer(context, "/v2/infer", lambda: self._infer(request, context))

    def _known(self, name: str, version: str) -> bool:
        return name == self.name and version in ("", v2.VERSION)

    def _check_model(self, name: str, version: str) -> None:
        if name != self.name:
            raise RequestError(HTTPStatus.NOT_FOUND, "v2_unknown_model", f"unknown model {name!r}: this server serves "
                               f"{self.name}")  # fmt: skip
        if version not in ("", v2.VERSION):
            raise RequestError(HTTPStatus.NOT_FOUND, "v2_unknown_version",
                               f"model {self.name} has version {v2.VERSION} only, not {version!r}")  # fmt: skip

    def _answer(self, context, endpoint: str, make):
        """``make()``'s answer, or the call aborted with the refusal's status and reason; counted
        under the gRPC protocol's own labels."""
        started, status = time.perf_counter(), 200
        try:
            return make()
        except RequestError as err:
            status = int(err.status)
            self.metrics.error(err.reason)
            context.abort(_CODES.get(err.status, grpc.StatusCode.INTERNAL), str(err))
        except Exception as err:  # logged; the client gets the type only
            status = 500
            log.error("unhandled error answering gRPC %s", endpoint, exc_info=err)
            self.metrics.error("internal")
            context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(err).__name__}); the server logged it")
        finally:
            self.metrics.request(f"grpc {endpoint}", status, time.perf_counter() - started)

    def _metadata(self, request):
        self._check_model(request.name, request.version)
        meta = v2.model_metadata(self.name, self.classifier.pre.input_size, len(self.classifier.names))
        tensors = [[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta[k]] for k in ("inputs", "outputs")]
        return pb.ModelMetadataResponse(name=self.name, versions=meta["versions"], platform=meta["platform"],
                                        inputs=tensors[0], outputs=tensors[1])  # fmt: skip

    def _infer(self, request, context):
        self._check_model(request.model_name, request.model_version)
        if len(request.inputs) != 1:
            raise RequestError(HTTPStatus.BAD_REQUEST, "v2_bad_request", f"give one input: {v2.BYTES_INPUT} (BYTES [N]"
                               f", encoded images) or {v2.TENSOR_INPUT} (FP32 [N, 3, S, S])")  # fmt: skip
        spec = request.inputs[0]
        raw = request.raw_input_contents[0] if request.raw_input_contents else _packed(spec)
        tensor, _ = v2.read_input({"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape),
                                   "parameters": {"binary_data_size": len(raw)}}, raw, self.settings.max_images)  # fmt: skip
        outputs = v2.requested_outputs([{"name": o.name, "parameters": {"classification": o.parameters[
            "classification"].int64_param if "classification" in o.parameters else 0}} for o in request.outputs]
            or None, True)  # fmt: skip
        remaining = context.time_remaining()
        timeout = self.settings.timeout_s if remaining is None else min(remaining, self.settings.timeout_s)
        probs = self._probabilities(tensor, timeout)
        self.metrics.images(len(probs))
        answer = pb.ModelInferResponse(model_name=self.name, model_version=v2.VERSION, id=request.id)
        for t in v2.output_tensors(outputs, probs.numpy(), self.classifier.names):
            answer.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
            answer.raw_output_contents.append(t.raw)
        return answer

    def _probabilities(self, tensor: v2.Input, timeout: float) -> torch.Tensor:
        c = self.classifier
        try:
            if tensor.name == v2.TENSOR_INPUT:
                return c.submit(torch.from_numpy(v2.check_views(tensor, c.pre.input_size, c.crops)), timeout=timeout)
            names = [f"{tensor.name}[{i}]" for i in range(len(tensor.data))]
            try:
                prepared = [c.prepare(blob, name) for blob, name in zip(tensor.data, names, strict=True)]
            except DecodeError as err:
                raise RequestError(HTTPStatus.BAD_REQUEST, "not_an_image", str(err)) from None
            answers = c.classify(prepared, timeout=timeout, names=names)
        except ServerBusy as err:
            raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, "busy", str(err)) from None
        except RuntimeError as err:
            raise RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, "inference_failed", str(err)) from None
        failed = [a for a in answers if isinstance(a, str)]
        if failed:
            raise RequestError(HTTPStatus.BAD_REQUEST, "not_an_image", "; ".join(failed))
        return torch.stack(answers)


def _packed(spec) -> bytes:
    """A tensor sent as typed contents (not raw), in the binary layout :mod:`.v2` reads."""
    if spec.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in spec.contents.bytes_contents)
    return np.asarray(spec.contents.fp32_contents, dtype="<f4").tobytes()


def start_grpc(classifier: Classifier, settings: ServeSettings, metrics: ServeMetrics, port: int,
               draining: threading.Event | None = None) -> tuple[object, int]:  # fmt: skip
    """A started gRPC server of the v2 service on ``settings.host``:``port`` (0: any free port),
    and the port it listens on; not ready once ``draining`` is set. ``server.stop(grace)`` stops it."""
    limit = settings.max_body_bytes
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=min(32, settings.queue_size),
                                                    thread_name_prefix="inceptionv4-grpc"),
                         maximum_concurrent_rpcs=settings.queue_size,
                         options=[("grpc.max_receive_message_length", limit),
                                  ("grpc.max_send_message_length", limit)])  # fmt: skip
    service = _Service(classifier, settings, metrics, draining or threading.Event())
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise RuntimeError(f"cannot listen for gRPC on {settings.host}:{port}")
    server.start()
    return server, bound
