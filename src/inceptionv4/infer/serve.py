"""An HTTP inference server: images in, top-k classes out, requests batched together.

Standard library only (``http.server``), so it runs wherever the package does. Each request is
decoded and preprocessed on its own connection thread (``decode="device"``: only its JPEG header
is checked there, and the worker decodes the batch on the models' device -- nvJPEG on a GPU,
where PIL on a few threads cannot keep up); one worker thread owns the model and runs
whatever requests are waiting as one batch (up to ``max_batch`` images, waiting at most
``max_wait_ms`` for company), so concurrent clients share forward passes (benchmarks/serve.py:
1.1-1.5x the throughput of one image per pass on 2 CPU cores, and a shorter tail under load). A bad
upload gets a 400 naming the reason and changes nothing for anyone else.

Endpoints::

    POST /v1/predict   raw image bytes (any Content-Type but JSON) -> {"results": [{"ok", "top"}]}
                       or JSON {"images": [<base64>, ...], "topk": k} -> one result per image
                       (?topk=K in the query works for both)
    GET  /v1/model     architecture, classes, preprocessing, inference form, batching
    GET  /health       {"status": "ok"} once the model is loaded and warmed up
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlsplit

import torch
from PIL import Image

from ..data.decode import DecodeError, decode_rgb
from ..data.device_augment import payload_of
from ..data.views import DeviceViews, check_decode, normalize_views, protocol_pixels
from .predict import top_classes
from .session import Session, as_session

log = logging.getLogger("inceptionv4.serve")

#: Largest request body accepted (bytes): a few large photos, base64 included.
MAX_BODY_BYTES = 32 * 1024 * 1024
#: Most images in one JSON request.
MAX_IMAGES_PER_REQUEST = 64


class RequestError(ValueError):
    """A request the server refuses: ``status`` and a message for the client."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServerBusy(RuntimeError):
    """The request queue is full: the client should retry shortly (HTTP 503)."""


@dataclass
class _Job:
    """One request's preprocessed views (or, with ``decode="device"``, its payloads), waiting for
    the worker."""

    views: torch.Tensor | None  # (images * crops, 3, S, S): uint8 pixels, or float32 already normalised
    images: int
    payloads: list[torch.Tensor] | None = None  # decode="device": JPEG bytes (1-D), or pixels (3, H, W)
    names: list[str] | None = None  # the payloads' names, for the reasons in ``failed``
    done: threading.Event = field(default_factory=threading.Event)
    probs: torch.Tensor | None = None  # (images decoded, classes) once done
    failed: dict[int, str] = field(default_factory=dict)  # image -> why the device could not decode it
    error: str | None = None


class Classifier:
    """The session behind the server and the batching worker that runs it.

    Usable without HTTP: ``submit(views)`` from any thread blocks until the batch holding those
    views has run and returns their probabilities. ``session`` says how inference runs
    (:func:`~inceptionv4.infer.session.open_session`); networks in memory are taken as a 1-crop
    torch session run where they are.
    """

    def __init__(
        self,
        session: Session | torch.nn.Module | list[torch.nn.Module],
        *,
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        queue_size: int = 256,
        decode: str = "workers",
    ) -> None:
        self.decode = check_decode(decode)
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.session = session = as_session(session)
        self.architecture, self.names, self.pre = session.architecture, session.labels.names, session.pre
        self.crops, self.max_batch, self.max_wait = session.crops, max_batch, max_wait_ms / 1000
        self._device_views = DeviceViews(self.pre, self.crops, session.device) if decode == "device" else None
        self._queue: queue.Queue[_Job | None] = queue.Queue(queue_size)
        self.batches = self.images = 0  # counters, for /v1/model and tests
        self._worker = threading.Thread(target=self._run, name="inceptionv4-serve-worker", daemon=True)
        self._worker.start()

    def warm_up(self) -> None:
        """Run every batch shape the worker will use once, so no client pays for the first pass."""
        s = self.pre.input_size
        for n in sorted({1, self.max_batch}):
            self.submit(torch.zeros(n * self.crops, 3, s, s, dtype=torch.uint8))
        if self._device_views is not None:  # the device decoder's first call sets it up (nvJPEG: a while)
            buf = io.BytesIO()
            Image.new("RGB", (s, s), (128, 64, 32)).save(buf, format="JPEG")
            self.classify([self.prepare(buf.getvalue(), "warm-up")])
        self.batches = self.images = 0  # count clients' work only

    def views(self, data: bytes, name: str = "upload") -> torch.Tensor:
        """The protocol's uint8 views of one image (DecodeError if it is not one); they are
        normalised where the models run."""
        return protocol_pixels(decode_rgb(data, name), self.pre, self.crops)

    def prepare(self, data: bytes, name: str = "upload") -> torch.Tensor:
        """What a connection thread makes of one upload for :meth:`classify` (DecodeError if it is
        not an image): its uint8 views, or with ``decode="device"`` its bytes when it is a JPEG the
        device decodes as PIL would (else its pixels, decoded here)."""
        if self._device_views is None:
            return self.views(data, name)
        return payload_of(data, name)[0]

    def classify(
        self, prepared: list[torch.Tensor], timeout: float | None = None, names: list[str] | None = None
    ) -> list[torch.Tensor | str]:
        """Per image of ``prepared`` (from :meth:`prepare`), its probabilities (classes,), or why the
        device could not decode it after all (naming it by ``names``); batched with whatever else is
        waiting. Raises as :meth:`submit` does."""
        if self._device_views is None:
            return list(self.submit(torch.cat(prepared), timeout))
        names = names or [f"image {i}" for i in range(len(prepared))]
        job = self._wait(_Job(None, len(prepared), payloads=prepared, names=names), timeout)
        rows = iter(job.probs)
        return [job.failed[i] if i in job.failed else next(rows) for i in range(job.images)]

    def submit(self, views: torch.Tensor, timeout: float | None = None) -> torch.Tensor:
        """Probabilities (images, classes) for ``views`` (images * crops, 3, S, S: uint8 from
        :meth:`views`, or float32 already normalised), batched with whatever else is waiting.
        Raises :class:`ServerBusy` with ``queue_size`` requests already waiting, RuntimeError if
        the forward pass fails or takes over ``timeout`` seconds."""
        return self._wait(_Job(views, len(views) // self.crops), timeout).probs

    def _wait(self, job: _Job, timeout: float | None) -> _Job:
        try:
            self._queue.put(job, block=False)
        except queue.Full:
            raise ServerBusy("the server is busy (request queue full); retry shortly") from None
        if not job.done.wait(timeout):
            raise RuntimeError(f"no result within {timeout} s")
        if job.error is not None:
            raise RuntimeError(job.error)
        return job

    def close(self) -> None:
        """Stop the worker after the jobs already queued."""
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join()

    def _run(self) -> None:
        held: _Job | None = None  # a job that did not fit the last batch: it opens the next one
        while True:
            first = held or self._queue.get()
            held = None
            if first is None:
                return
            jobs, images = [first], first.images
            deadline = time.monotonic() + self.max_wait
            while images < self.max_batch:
                try:
                    job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                if images + job.images > self.max_batch:
                    held = job
                    break
                jobs.append(job)
                images += job.images
            self._forward(jobs)

    def _forward(self, jobs: list[_Job]) -> None:
        try:
            parts = [self._decoded(j) if j.payloads is not None else j.views for j in jobs]
            present = [p for p in parts if p is not None]
            if len({p.dtype for p in present}) > 1:  # pixels and normalised views in one batch
                device = self.session.device
                present = [normalize_views(p.to(device), self.pre) if p.dtype == torch.uint8 else p.to(device)
                           for p in present]  # fmt: skip
            probs = torch.zeros(0)
            if present:
                with torch.inference_mode():
                    probs = torch.cat([self.session(c) for c in self._chunks(torch.cat(present))])
            start = 0
            for j in jobs:
                n = j.images - len(j.failed)
                j.probs, start = probs[start : start + n], start + n
            self.batches += bool(present)
            self.images += len(probs)
        except Exception as err:  # the clients get the reason; the worker keeps serving
            log.exception("forward pass failed")
            for j in jobs:
                j.error = f"inference failed: {type(err).__name__}: {err}"
        for j in jobs:
            j.done.set()

    def _decoded(self, job: _Job) -> torch.Tensor | None:
        """``decode="device"``: the job's images decoded, resampled and cut on the models' device
        (normalised float views; None if none decoded); the ones it cannot decode go to ``failed``."""
        views, job.failed = self._device_views.views_of(job.payloads, job.names)
        return views

    def _chunks(self, views: torch.Tensor) -> list[torch.Tensor]:
        """Passes of at most ``max_batch`` images (one request may bring more)."""
        return list(views.split(self.max_batch * self.crops))

    def describe(self) -> dict:
        """The session's card (network, classes, preprocessing, backend, precision) and the batching."""
        return {
            **self.session.describe(),
            "decode": self.decode,
            "max_batch": self.max_batch,
            "max_wait_ms": self.max_wait * 1000,
            "served": {"batches": self.batches, "images": self.images},
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length
    timeout = 60  # seconds a connection may sit idle (or trickle a body) before it is closed
    server: _Server

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _answer(self, handle) -> None:
        with self.server.answering() as open_:
            if open_:
                handle()
            else:
                self.close_connection = True
                self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "the server is shutting down"})

    def _get(self) -> None:
        path = urlsplit(self.path).path
        if path == "/health":
            self._reply(HTTPStatus.OK, {"status": "ok"})
        elif path == "/v1/model":
            self._reply(HTTPStatus.OK, self.server.classifier.describe())
        elif path == "/v1/predict":
            self._reply(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "use POST with an image body"}, allow="POST")
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {path}"})

    def _post(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/v1/predict":
            known = url.path in ("/health", "/v1/model")
            status = HTTPStatus.METHOD_NOT_ALLOWED if known else HTTPStatus.NOT_FOUND
            self.close_connection = True  # the body was not read
            self._reply(status, {"error": f"POST is not served at {url.path}"}, allow="GET" if known else None)
            return
        try:
            status, body = HTTPStatus.OK, self._predict(url.query)
        except RequestError as err:
            status, body = err.status, {"error": str(err)}
        except ServerBusy as err:
            status, body = HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(err)}
        except RuntimeError as err:  # the forward pass failed or timed out
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(err)}
        self._reply(status, body, retry_after="1" if status == HTTPStatus.SERVICE_UNAVAILABLE else None)

    def _predict(self, query: str) -> dict:
        data = self._body()
        is_json = self.headers.get_content_type() == "application/json"
        request = _parse_json(data) if is_json else {}
        topk = _topk(parse_qs(query).get("topk", [request.get("topk", self.server.topk)])[0])
        classifier = self.server.classifier
        if is_json:
            blobs = _images(request)
        else:
            blobs = [data]
        results: list[dict] = []
        prepared, names = [], []
        for i, blob in enumerate(blobs):
            name = f"images[{i}]" if is_json else "body"
            try:
                prepared.append(classifier.prepare(blob, name))
                names.append(name)
                results.append({"ok": True})
            except DecodeError as err:
                results.append({"ok": False, "error": str(err)})
        if not prepared:
            raise RequestError(HTTPStatus.BAD_REQUEST, "; ".join(r["error"] for r in results))
        answers = iter(classifier.classify(prepared, timeout=self.server.timeout_s, names=names))
        for r in results:
            if r["ok"]:
                answer = next(answers)
                if isinstance(answer, str):  # the device decoder refused what the header promised
                    r.update(ok=False, error=answer)
                else:
                    r["top"] = top_classes(answer[None], classifier.names, topk)[0]
        return {"results": results}

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length (chunked bodies are not read)")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the image as a body with a Content-Length")
        if int(length) > self.server.max_body_bytes:
            self.close_connection = True  # the body stays unread
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {int(length):,} bytes is over the {self.server.max_body_bytes:,}-byte limit",
            )
        return self.rfile.read(int(length))

    def _reply(self, status: HTTPStatus, body: dict, allow: str | None = None, retry_after: str | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if allow:
            self.send_header("Allow", allow)
        if retry_after:
            self.send_header("Retry-After", retry_after)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args) -> None:
        log.info("%s %s", self.address_string(), format % args)


def _parse_json(data: bytes) -> dict:
    try:
        request = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"body is not valid JSON ({err})") from None
    if not isinstance(request, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, 'JSON body must be an object: {"images": [<base64>, ...]}')
    return request


def _images(request: dict) -> list[bytes]:
    images = request.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(b, str) for b in images):
        raise RequestError(HTTPStatus.BAD_REQUEST, '"images" must be a non-empty list of base64 strings')
    if len(images) > MAX_IMAGES_PER_REQUEST:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"{len(images)} images is over the {MAX_IMAGES_PER_REQUEST}-per-request limit"
        )
    out = []
    for i, text in enumerate(images):
        try:
            out.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"images[{i}] is not valid base64") from None
    return out


def _topk(value: object) -> int:
    try:
        k = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"topk must be an integer, got {value!r}") from None
    if k < 1:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"topk must be >= 1, got {k}")
    return k


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen backlog: socketserver's 5 resets a burst of concurrent clients

    def __init__(self, address, classifier: Classifier, topk: int, max_body_bytes: int, timeout_s: float) -> None:
        self.classifier, self.topk = classifier, topk
        self.max_body_bytes, self.timeout_s = max_body_bytes, timeout_s
        self.closing = False
        self._busy = 0  # requests being answered
        self._idle = threading.Condition()
        super().__init__(address, _Handler)

    @contextmanager
    def answering(self) -> Iterator[bool]:
        """Count a request as in flight; yields False once the server is closing (answer 503)."""
        with self._idle:
            self._busy += 1
        try:
            yield not self.closing
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def drain(self, timeout: float) -> bool:
        """Refuse new requests and wait for those in flight to be answered."""
        self.closing = True
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)


class InferenceServer:
    """The HTTP server around a :class:`Classifier`.

    >>> server = InferenceServer(open_session('v4.safetensors'), port=0).start()   # port 0: any free port
    >>> server.url                                         # 'http://127.0.0.1:54321'
    >>> server.close()

    ``serve_forever()`` instead of ``start()`` blocks the calling thread (the CLI does that).
    """

    def __init__(
        self,
        session: Session | torch.nn.Module | list[torch.nn.Module],
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        topk: int = 5,
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        decode: str = "workers",
        max_body_bytes: int = MAX_BODY_BYTES,
        timeout_s: float = 120.0,
        warm_up: bool = True,
    ) -> None:
        self._thread: threading.Thread | None = None
        if not 0 <= port <= 65535:  # before the models load, and not as bind()'s OverflowError
            raise ValueError(f"port must be 0-65535 (0: any free port), got {port}")
        _topk(topk)  # a bad default is the caller's mistake: ValueError now, not 400s later
        self.classifier = Classifier(session, max_batch=max_batch, max_wait_ms=max_wait_ms, decode=decode)
        try:
            self._httpd = _Server((host, port), self.classifier, topk, max_body_bytes, timeout_s)
        except OSError as err:  # port taken, no permission, unknown host
            self.classifier.close()
            raise RuntimeError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
        if warm_up:  # bound first (a taken port fails fast); clients queue in the backlog meanwhile
            try:
                self.classifier.warm_up()
            except BaseException:
                self.close()
                raise

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        """Serve from a background thread; returns at once."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="inceptionv4-serve", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve from this thread until :meth:`shutdown` is called from another (or a signal)."""
        self._httpd.serve_forever()

    def shutdown(self) -> None:
        """Stop accepting requests (call from another thread than the serving one)."""
        self._httpd.shutdown()

    def close(self, drain_s: float = 30.0) -> None:
        """Stop accepting connections, answer the requests in flight (up to ``drain_s`` seconds;
        later ones on open connections get a 503), stop the worker and release the port."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        if not self._httpd.drain(drain_s):
            log.warning("requests still in flight after %.0f s: closing anyway", drain_s)
        self._httpd.server_close()
        self.classifier.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
