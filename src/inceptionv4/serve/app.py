"""The HTTP API and the page: a FastAPI app around a :class:`~inceptionv4.serve.batching.Classifier`.

Endpoints::

    GET  /             the page: choose or drop images, see each one's top-5 (offline: no CDN)
    POST /v1/predict   the image as the body (any Content-Type but JSON and multipart),
                       JSON {"images": [<base64>, ...], "topk": k}, or a multipart form with one
                       or more files (curl -F file=@photo.jpg) -> {"results": [{"ok", "top"}, ...]}
                       (?topk=K in the query works for all three)
    POST /v1/explain   the same bodies (?target=top1|index|name, or JSON "target") -> per image the
                       class explained and a heatmap overlay PNG (:mod:`.explain`)
    GET  /v1/model     the model card: network, classes, preprocessing, backend, precision, batching
    GET  /health       {"status": "ok"} once the model is loaded and warmed up
    GET  /metrics      Prometheus text format
    GET  /docs         OpenAPI docs, offline too (/openapi.json: the schema)

Every error is JSON ``{"error": "<reason>"}`` with its status; no traceback reaches a client.
Uploads are decoded on a thread pool, and a request waits for its batch without holding a thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..data.decode import DecodeError
from ..infer.predict import top_classes
from ..version import __version__
from .batching import Classifier, ServerBusy
from .explain import ExplainService, parse_target
from .prometheus import ServeMetrics
from . import v2
from .requests import RequestError, check_topk, form_files, images_of, parse_json, read_body
from .settings import ServeSettings

log = logging.getLogger("inceptionv4.serve")

#: The paths metrics are labelled with; any other path counts as "other".
ENDPOINTS = ("/", "/v1/predict", "/v1/explain", "/v1/model", "/health", "/metrics", "/docs", "/openapi.json", "/favicon.ico",
             "/v2/infer", "/v2")  # fmt: skip


def create_app(
    classifier: Classifier,
    settings: ServeSettings | None = None,
    *,
    metrics: ServeMetrics | None = None,
    in_flight: Callable[[int], None] | None = None,
    draining: threading.Event | None = None,
    explain: ExplainService | None = None,
) -> FastAPI:
    """The app serving ``classifier`` under ``settings`` (its topk, body and image limits, body
    timeout and batch timeout; default :class:`ServeSettings`'s).

    ``metrics`` is where requests, errors, batches and latencies are counted (default: a registry
    of this app's own); ``in_flight`` is called with +1 / -1 as each request starts and ends (a
    server's drain count); once ``draining`` is set, the readiness endpoints say 503. ``explain``
    answers ``/v1/explain`` (default: Grad-CAM at the last stage, from the session's fp32 weights).
    """
    settings = settings or ServeSettings()
    metrics = metrics or ServeMetrics()
    classifier_hook(classifier, metrics)
    app = FastAPI(
        title="inceptionv4",
        summary=f"{classifier.architecture}: images in, top-k classes out",
        version=__version__,
        docs_url=None,  # served below from the installed swagger-ui-bundle, not a CDN
        redoc_url=None,
    )
    # swagger-ui-bundle ships Swagger UI 4, which reads OpenAPI 3.0; this schema (no models, no
    # nullable fields) is the same in 3.0 and 3.1
    app.openapi_version = "3.0.3"
    app.state.classifier, app.state.metrics = classifier, metrics
    app.add_middleware(_Count, metrics=metrics, in_flight=in_flight)
    _error_handlers(app, metrics)
    _page_routes(app)
    app.state.draining = draining or threading.Event()
    explain = explain or ExplainService(classifier.session, queue_size=settings.queue_size, budget=classifier.budget)
    _api_routes(app, classifier, settings, metrics, explain)
    _v2_routes(app, classifier, settings, metrics)
    return app


def _check_ready(app: FastAPI) -> None:
    if app.state.draining.is_set():
        raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, "draining",
                           "the server is stopping: it answers the requests in flight and takes no new ones")  # fmt: skip


def _error_handlers(app: FastAPI, metrics: ServeMetrics) -> None:
    """Every refusal as JSON ``{"error": reason}``, counted by reason; never a traceback."""

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError) -> JSONResponse:
        metrics.error(err.reason)
        headers = {**err.headers, **({"Connection": "close"} if err.close else {})}
        return JSONResponse({"error": str(err)}, status_code=err.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        path = request.url.path
        if err.status_code == HTTPStatus.NOT_FOUND:
            reason, message = "not_found", f"no such endpoint: {path}"
        elif err.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
            allowed = (err.headers or {}).get("Allow", "")
            reason = "method_not_allowed"
            message = f"{request.method} is not served at {path}" + (f": use {allowed}" if allowed else "")
        else:
            reason, message = f"http_{err.status_code}", str(err.detail)
        metrics.error(reason)
        return JSONResponse({"error": message}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        metrics.error("invalid_request")
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=400)

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:  # logged; the client gets the type only
        log.error("unhandled error answering %s %s", request.method, request.url.path, exc_info=err)
        metrics.error("internal")
        # Starlette raises the error on after this answer, and uvicorn then closes the connection:
        # say so, so that a keep-alive client opens a new one rather than failing its next request
        return JSONResponse({"error": f"internal error ({type(err).__name__}); the server logged it"},
                            status_code=500, headers={"Connection": "close"})  # fmt: skip


def _page_routes(app: FastAPI) -> None:
    """The page, its files, its icon and the offline API docs."""
    web = resources.files("inceptionv4.serve") / "web"
    page = (web / "index.html").read_text(encoding="utf-8")
    favicon = (web / "favicon.ico").read_bytes()
    app.mount("/static", StaticFiles(packages=[("inceptionv4.serve", "web")]), name="static")
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/favicon.ico", include_in_schema=False)
    async def icon() -> Response:  # browsers ask for it on every page: a 404 there is noise in every log
        return Response(favicon, media_type="image/x-icon", headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="inceptionv4 API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")  # fmt: skip


#: /v1/predict's three request bodies, for the OpenAPI schema
_PREDICT_BODY = {"requestBody": {"content": {
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/json": {"schema": {"type": "object", "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "byte"}},
        "topk": {"type": "integer", "minimum": 1}}, "required": ["images"]}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
}}}  # fmt: skip


def _api_routes(app: FastAPI, classifier: Classifier, settings: ServeSettings, metrics: ServeMetrics,
                explain: ExplainService) -> None:  # fmt: skip
    """/health, /v1/model, /metrics, /v1/predict and /v1/explain."""

    @app.get("/health", summary="Whether the model is loaded and warmed up, and the server not stopping")
    async def health() -> dict:
        _check_ready(app)
        return {"status": "ok"}

    @app.head("/health", include_in_schema=False)  # load balancers and uptime checks probe with HEAD
    async def health_head() -> Response:
        return Response(status_code=503 if app.state.draining.is_set() else 200)

    @app.get("/v1/model", summary="The model card: network, classes, preprocessing, backend, precision, batching")
    async def model() -> dict:
        return {**classifier.describe(), "class_names": classifier.names, "topk": settings.topk,
                "explain": explain.describe()}  # fmt: skip

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.post("/v1/predict", summary="Classify images: a raw body, JSON base64 or a multipart upload",
              openapi_extra=_PREDICT_BODY)  # fmt: skip
    async def predict(request: Request) -> JSONResponse:
        upload = await read_predict_request(request, settings)
        results = await classify_uploads(classifier, upload, settings.timeout_s, metrics)
        return JSONResponse({"results": results})

    @app.post("/v1/explain", summary="Why: the class explained and a heatmap overlay (PNG) per image",
              openapi_extra=_PREDICT_BODY)  # fmt: skip
    async def explain_route(request: Request) -> JSONResponse:
        upload = await read_predict_request(request, settings)
        results = await explain.explain(upload.blobs, upload.names, upload.target, settings.timeout_s)
        if not any(r["ok"] for r in results):
            raise RequestError(HTTPStatus.BAD_REQUEST, "not_an_image", "; ".join(r["error"] for r in results))
        for r in results:
            if not r["ok"]:
                metrics.error("not_an_image")
        metrics.images(sum(r["ok"] for r in results))
        return JSONResponse({"results": results})


def _v2_routes(app: FastAPI, classifier: Classifier, settings: ServeSettings, metrics: ServeMetrics) -> None:
    """The KServe v2 protocol (:mod:`.v2`): health, server and model metadata, infer."""
    name = classifier.architecture
    metadata = v2.model_metadata(name, classifier.pre.input_size, len(classifier.names))

    def model_of(model: str, version: str | None) -> None:
        if model != name:
            raise RequestError(HTTPStatus.NOT_FOUND, "v2_unknown_model",
                               f"unknown model {model!r}: this server serves {name}")  # fmt: skip
        if version is not None and version != v2.VERSION:
            raise RequestError(HTTPStatus.NOT_FOUND, "v2_unknown_version",
                               f"model {name} has version {v2.VERSION} only, not {version!r}")  # fmt: skip

    @app.get("/v2", summary="v2: the server's name, version and extensions")
    async def server_metadata() -> dict:
        return {"name": "inceptionv4", "version": __version__, "extensions": v2.EXTENSIONS}

    @app.get("/v2/health/live", summary="v2: the server is up")
    async def v2_live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready", summary="v2: the server takes requests")
    async def v2_health() -> Response:
        _check_ready(app)
        return Response(status_code=200)

    @app.get("/v2/models/{model}", summary="v2: the model's inputs and outputs")
    @app.get("/v2/models/{model}/versions/{version}", include_in_schema=False)
    async def v2_model(model: str, version: str | None = None) -> dict:
        model_of(model, version)
        return metadata

    @app.get("/v2/models/{model}/ready", summary="v2: the model takes requests")
    @app.get("/v2/models/{model}/versions/{version}/ready", include_in_schema=False)
    async def v2_ready(model: str, version: str | None = None) -> Response:
        model_of(model, version)
        _check_ready(app)
        return Response(status_code=200)

    @app.post("/v2/models/{model}/infer", summary="v2: classify encoded images or preprocessed views")
    @app.post("/v2/models/{model}/versions/{version}/infer", include_in_schema=False)
    async def v2_infer(model: str, request: Request, version: str | None = None) -> Response:
        model_of(model, version)
        body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        parsed = v2.parse_infer(body, request.headers.get(v2.HEADER_LENGTH), settings.max_images)
        probs = await _v2_probabilities(classifier, parsed.input, settings.timeout_s)
        metrics.images(len(probs))
        content, headers = v2.encode_response(parsed, name, probs.numpy(), classifier.names)
        return Response(content, headers=headers)


async def _v2_probabilities(classifier: Classifier, tensor: v2.Input, timeout_s: float) -> torch.Tensor:
    """(N, classes) probabilities for a v2 input: encoded images decoded as /v1/predict decodes
    them, or preprocessed views as they are. Any image that cannot be used refuses the request."""
    try:
        if tensor.name == v2.TENSOR_INPUT:
            views = torch.from_numpy(v2.check_views(tensor, classifier.pre.input_size, classifier.crops))
            return await classifier.submit_async(views, timeout=timeout_s)
        names = [f"{tensor.name}[{i}]" for i in range(len(tensor.data))]
        results, prepared, kept = await run_in_threadpool(_prepare, classifier, tensor.data, names)
        refused = [r["error"] for r in results if not r["ok"]]
        if refused:
            raise RequestError(HTTPStatus.BAD_REQUEST, "not_an_image", "; ".join(refused))
        answers = await classifier.classify_async(prepared, timeout=timeout_s, names=kept)
        failed = [a for a in answers if isinstance(a, str)]
        if failed:
            raise RequestError(HTTPStatus.BAD_REQUEST, "not_an_image", "; ".join(failed))
        return torch.stack(answers)
    except ServerBusy as err:
        raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, "busy", str(err), headers={"Retry-After": "1"}) from None
    except RuntimeError as err:
        raise RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, "inference_failed", str(err)) from None


@dataclass(frozen=True)
class Upload:
    """A /v1/predict request, read and checked: its images' bytes, their names, the top-k asked for."""

    blobs: list[bytes]
    names: list[str]
    topk: int
    target: object = "top1"  # /v1/explain: the class to explain (?target=, or JSON "target")


async def read_predict_request(request: Request, settings: ServeSettings) -> Upload:
    """The images of a /v1/predict request (a raw body, JSON base64 or a multipart form) and its
    top-k (``?topk=K``, else JSON's ``"topk"``, else the server's), or a :class:`RequestError`."""
    query_topk = request.query_params.get("topk")
    if query_topk is not None:
        check_topk(query_topk)  # before the body is read
    data = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    k: object = settings.topk
    target = request.query_params.get("target")
    if ctype == "application/json":
        parsed = parse_json(data)
        k = parsed.get("topk", settings.topk)
        target = parsed.get("target", target)
        blobs = images_of(parsed, settings.max_images)
        names = [f"images[{i}]" for i in range(len(blobs))]
    elif ctype == "multipart/form-data":
        names, blobs = await form_files(request, data, settings.max_images)
    else:
        blobs, names = [data], ["body"]
    return Upload(blobs, names, check_topk(query_topk if query_topk is not None else k), parse_target(target))


async def classify_uploads(classifier: Classifier, upload: Upload, timeout_s: float,
                           metrics: ServeMetrics) -> list[dict]:  # fmt: skip
    """Each image of ``upload`` decoded (on a pool thread) and classified in the shared batches:
    ``{"ok": True, "top": [...]}`` or ``{"ok": False, "error": reason}`` per image. A request none
    of whose images decodes, or one the server cannot take now, is a :class:`RequestError`."""
    try:
        results, prepared, kept = await run_in_threadpool(_prepare, classifier, upload.blobs, upload.names)
    except ServerBusy as err:  # past the decoding budget: refused whole, nothing decoded is kept
        raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, "decode_budget", str(err),
                           headers={"Retry-After": "1"}) from None  # fmt: skip
    if not prepared:  # counted once, as the request's refusal
        raise RequestError(HTTPStatus.BAD_REQUEST, "not_an_image", "; ".join(r["error"] for r in results))
    for r in results:
        if not r["ok"]:
            metrics.error("not_an_image")
    try:
        answers = iter(await classifier.classify_async(prepared, timeout=timeout_s, names=kept))
    except ServerBusy as err:
        raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, "busy", str(err), headers={"Retry-After": "1"}) from None
    except RuntimeError as err:  # the forward pass failed or timed out
        raise RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, "inference_failed", str(err)) from None
    for r in results:
        if r["ok"]:
            answer = next(answers)
            if isinstance(answer, str):  # the device decoder refused what the header promised
                r.update(ok=False, error=answer)
                metrics.error("not_an_image")
            else:
                r["top"] = top_classes(answer[None], classifier.names, upload.topk)[0]
    metrics.images(sum(r["ok"] for r in results))
    return results


def _endpoint(path: str) -> str:
    """The label a request is counted under: its endpoint, v2's infer and the rest of v2 by
    protocol (not by model name, which the client chooses), static files together, else "other"."""
    if path in ENDPOINTS:
        return path
    if path.startswith("/v2/"):
        return "/v2/infer" if path.endswith("/infer") else "/v2"
    return "/static" if path.startswith(("/static/", "/docs-assets/")) else "other"


class _Count:
    """ASGI middleware: every HTTP request counted and timed by endpoint and status, and the
    requests in flight reported (a plain ASGI wrapper: no per-request task or body copy)."""

    def __init__(self, app, metrics: ServeMetrics, in_flight: Callable[[int], None] | None) -> None:
        self.app, self.metrics, self.in_flight = app, metrics, in_flight

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, start, status = scope["path"], time.perf_counter(), [500]
        endpoint = _endpoint(path)

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        if self.in_flight is not None:
            self.in_flight(1)
        try:
            await self.app(scope, receive, sending)
        finally:
            if self.in_flight is not None:
                self.in_flight(-1)
            self.metrics.request(endpoint, status[0], time.perf_counter() - start)


def classifier_hook(classifier: Classifier, metrics: ServeMetrics) -> None:
    """Have ``classifier``'s worker report each batch to ``metrics`` (batch size, queue waits)."""
    classifier.on_batch = metrics.batch
    metrics.watch_queue(lambda: classifier.queued)


def _prepare(classifier: Classifier, blobs: list[bytes], names: list[str]):
    """Each upload decoded (on a pool thread): the per-image results so far, what decoded, and its names."""
    results, prepared, kept = [], [], []
    for blob, name in zip(blobs, names, strict=True):
        try:
            prepared.append(classifier.prepare(blob, name))
            kept.append(name)
            results.append({"ok": True})
        except DecodeError as err:
            results.append({"ok": False, "error": str(err)})
    return results, prepared, kept
