"""The inference server: the app of :mod:`inceptionv4.serve.app` on uvicorn.

Each upload is decoded on a thread pool (``decode="device"``: only its JPEG header is checked
there, and the worker decodes the batch on the models' device -- nvJPEG on a GPU, where PIL on a
few threads cannot keep up). One worker thread owns the session and runs whatever requests are
waiting as one batch (:class:`~inceptionv4.serve.batching.Classifier`), so concurrent clients
share forward passes. A bad upload gets a 4xx naming the reason and changes nothing for anyone else.

What protects everyone else from one client:

- a body over ``max_body_bytes`` is a 413 (by its Content-Length, before it is read);
- more than ``max_images`` images in one request is a 400;
- ``queue_size`` requests already waiting is a 503 with ``Retry-After``;
- request headers must be complete within ``header_timeout_s`` of the connection opening (or of
  the previous response) and the body within ``body_timeout_s``: a client that trickles bytes is
  disconnected (a 408), and, the server being asynchronous, holds no thread meanwhile;
- at most ``max_connections`` connections at once (503 beyond).

``InferenceServer`` runs one process, in a thread of the caller's program or in the calling
thread; :func:`serve_workers` runs several processes on one port (``inceptionv4 serve --workers N``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from typing import Self

import torch

from ..extras import require

for _package in ("fastapi", "uvicorn", "prometheus_client", "python_multipart", "swagger_ui_bundle"):
    require(_package, "inceptionv4 serve")

import h11  # noqa: E402 - after the check above, which names the extra to install
import uvicorn  # noqa: E402
from uvicorn.protocols.http.h11_impl import H11Protocol  # noqa: E402

from ..engines.options import SessionOptions  # noqa: E402
from ..engines.session import Session  # noqa: E402
from .app import create_app  # noqa: E402
from .requests import RequestError  # noqa: E402
from .batching import Classifier, ServerBusy  # noqa: E402
from ..engines.options import ExplainOptions  # noqa: E402
from .explain import ExplainService  # noqa: E402
from .prometheus import ServeMetrics  # noqa: E402
from .settings import ServeSettings  # noqa: E402

__all__ = ["Classifier", "InferenceServer", "RequestError", "ServeSettings", "ServerBusy", "create_app",
           "serve_workers"]  # fmt: skip

log = logging.getLogger("inceptionv4.serve")

#: The environment variable that carries the settings to worker processes (JSON).
WORKER_SETTINGS = "INCEPTIONV4_SERVE_SETTINGS"


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline on each request's headers.

    uvicorn times out an idle keep-alive connection, but any byte received cancels that timer, so
    a client sending one header byte a second would keep its connection forever. Here the
    headers of each request must be complete within ``header_timeout`` seconds (the config's
    ``header_timeout`` attribute) of the connection opening or of the previous response; a client
    mid-request then gets a 408 and the connection closes.
    """

    def __init__(self, config, *args, **kwargs) -> None:
        super().__init__(config, *args, **kwargs)
        self.header_timeout = float(getattr(config, "header_timeout", 10.0))
        self._deadline: object | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._deadline is not None and self.conn.their_state is not h11.IDLE:  # the headers are in
            self._deadline.cancel()
            self._deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse (garbage, headers over the size limit) gets a JSON 400 like
        every other refusal, not uvicorn's plain text, with h11's reason (a bad Content-Length, an
        illegal header line) where uvicorn dropped it; the connection closes."""
        handled = sys.exc_info()[1]  # uvicorn calls this inside its `except h11.RemoteProtocolError`
        if isinstance(handled, h11.RemoteProtocolError) and str(handled):
            msg = str(handled)[:200]
        body = json.dumps({"error": f"not a valid HTTP/1.1 request ({msg.rstrip('.')})"}).encode()
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        self.transport.close()

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # part of a request came: say why it is closed
            body = json.dumps({"error": f"request headers not complete within {self.header_timeout:g} s"}).encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        self.transport.close()


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (checked by :class:`ServeSettings`), taken over by workers."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as err:  # port taken, no permission, unknown host
        raise RuntimeError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)  # worker processes take it over
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _config(settings: ServeSettings, app, **kwargs) -> uvicorn.Config:
    """uvicorn's config: the guarded protocol, the connection bound, the drain time. A worker
    process gets 60 s, not uvicorn's 5, to answer the supervisor's health check: importing
    torch and loading a network hold the interpreter for seconds on a busy machine, and
    uvicorn killed and restarted workers that were only starting."""
    config = uvicorn.Config(app, http=GuardedH11Protocol, lifespan="off", log_config=None,
                            timeout_worker_healthcheck=60,
                            access_log=settings.access_log, timeout_keep_alive=5,
                            timeout_graceful_shutdown=max(1, round(settings.drain_s)),
                            limit_concurrency=settings.max_connections, backlog=2048, server_header=False,
                            **kwargs)  # fmt: skip
    config.header_timeout = settings.header_timeout_s
    return config


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, which also calls ``on_exit`` the moment a SIGINT / SIGTERM arrives, so
    readiness turns false before the requests in flight have drained."""

    def __init__(self, config: uvicorn.Config, on_exit) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig, frame) -> None:
        self.on_exit()
        super().handle_exit(sig, frame)


class InferenceServer:
    """The HTTP server around a :class:`Classifier`, in this process.

    >>> server = InferenceServer(open_session('v4.safetensors'), port=0).start()   # port 0: any free port
    >>> server.url                                         # 'http://127.0.0.1:54321'
    >>> server.close()

    ``serve_forever()`` instead of ``start()`` serves from the calling thread until
    :meth:`shutdown` (or, in the main thread, SIGINT / SIGTERM). The port is bound before the
    models warm up, so a taken port fails fast.
    """

    def __init__(self, session: Session | torch.nn.Module | list[torch.nn.Module],
                 settings: ServeSettings | None = None, *, warm_up: bool = True, explain: ExplainOptions | None = None,
                 explain_weights=None, **overrides) -> None:  # fmt: skip
        """``settings`` (default :class:`ServeSettings`'s), with any of its fields given by
        keyword over it (``port=0``); an unknown keyword is a TypeError, a bad value a ValueError.
        ``explain`` says how ``/v1/explain`` computes its maps (``explain_weights``: the fp32
        weights of int8 artefacts whose report's path is not at hand)."""
        self._thread: threading.Thread | None = None
        self.settings = settings = dataclasses.replace(settings or ServeSettings(), **overrides)
        self._socket = _listen(settings.host, settings.port)
        try:
            self.classifier = Classifier(session, settings)
        except BaseException:
            self._socket.close()
            raise
        self.metrics = ServeMetrics()
        self.in_flight = 0
        self._lock = threading.Lock()
        self.draining = threading.Event()
        service = ExplainService(self.classifier.session, explain, weights=explain_weights,
                                 queue_size=settings.queue_size, budget=self.classifier.budget)  # fmt: skip
        self.app = create_app(self.classifier, settings, metrics=self.metrics, in_flight=self._count,
                              draining=self.draining, explain=service)  # fmt: skip
        self._server = _DrainingServer(_config(settings, self.app), on_exit=self._drain)
        self._grpc, self.grpc_port, self._grpc_stopped = None, None, None
        try:
            if warm_up:  # clients queue in the listen backlog meanwhile
                self.classifier.warm_up()
            if settings.grpc_port is not None:
                from .grpc import start_grpc

                self._grpc, self.grpc_port = start_grpc(self.classifier, settings, self.metrics, settings.grpc_port,
                                                        self.draining)  # fmt: skip
        except BaseException:
            self.close()
            raise

    def _count(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta

    @property
    def url(self) -> str:
        return _url(self._socket)

    def start(self) -> Self:
        """Serve from a background thread; returns once the server answers."""
        self._thread = threading.Thread(target=self._serve, name="inceptionv4-serve", daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server stopped while starting (see the log)")
            time.sleep(0.01)
        return self

    def serve_forever(self) -> None:
        """Serve from this thread until :meth:`shutdown` is called (or, in the main thread, a
        SIGINT or SIGTERM arrives); the requests in flight are answered first."""
        self._serve()

    def _serve(self) -> None:
        self._server.run(sockets=[self._socket])

    def _drain(self) -> None:
        """From now on: not ready (``/health``, the v2 readiness, gRPC's), no new connection or
        gRPC call taken; what is in flight is answered (up to ``drain_s`` seconds). Called on
        SIGINT / SIGTERM, by :meth:`shutdown` and by :meth:`close`."""
        self.draining.set()
        if self._grpc is not None and self._grpc_stopped is None:
            self._grpc_stopped = self._grpc.stop(self.settings.drain_s)

    def shutdown(self) -> None:
        """Stop accepting requests (from any thread); the serving loop then drains and returns."""
        self._drain()
        self._server.should_exit = True

    def close(self) -> None:
        """Stop accepting connections, answer the requests in flight (up to ``drain_s`` seconds),
        stop the worker and release the port."""
        self._drain()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._grpc_stopped is not None:
            self._grpc_stopped.wait()
        self._socket.close()
        self.classifier.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def serve_workers(source, options: SessionOptions, settings: ServeSettings, *, announce=None,
                  explain: ExplainOptions | None = None, explain_weights=None) -> None:  # fmt: skip
    """Serve ``source`` with ``settings.workers`` processes on one port until SIGINT / SIGTERM.

    The session ``options`` are checked here once, by opening the session (which also fills the
    engines' build cache), before any worker starts. Each worker then opens its own session with
    the backend chosen here and warms it up; the CPU's intra-op threads are divided between them.
    ``announce(url, card)`` is called once the port is bound. ``explain`` and ``explain_weights``
    are :class:`InferenceServer`'s.
    """
    from ..engines.open import open_session

    if settings.workers < 2:
        raise ValueError(f"serve_workers runs 2 or more processes, got {settings.workers}")
    card = open_session(source, options).describe()
    handed = {"source": source, "options": {**dataclasses.asdict(options), "backend": card["backend"]},
              "server": dataclasses.asdict(settings), "explain": dataclasses.asdict(explain or ExplainOptions()),
              "explain_weights": explain_weights,
              "threads": max(1, (os.cpu_count() or settings.workers) // settings.workers)}  # fmt: skip
    sock = _listen(settings.host, settings.port)
    with tempfile.TemporaryDirectory(prefix="inceptionv4-metrics-") as metrics_dir:
        os.environ[WORKER_SETTINGS] = json.dumps(handed)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        config = _config(settings, "inceptionv4.serve.server:worker_app", factory=True, workers=settings.workers)
        if announce is not None:
            announce(_url(sock), card)
        try:
            _supervisor()(config, sockets=[sock]).run()
        finally:
            sock.close()
            for key in (WORKER_SETTINGS, "PROMETHEUS_MULTIPROC_DIR"):
                os.environ.pop(key, None)


def _supervisor():
    """uvicorn's worker supervisor, which replaces a worker that died or hung, saying which worker,
    why (its signal or exit code: SIGKILL is most often the kernel's out-of-memory killer) and that
    a new one started; uvicorn itself says only "Child process died", at INFO level."""
    import signal as signals

    from uvicorn.supervisors import Multiprocess

    def reason(code: int | None, waited: float) -> str:
        if code is not None and code < 0:
            name = signals.Signals(-code).name if -code in signals.Signals._value2member_map_ else f"signal {-code}"
            why = f"killed by {name}" + (" (most often the out-of-memory killer)" if code == -signals.SIGKILL else "")
        else:
            why = f"exit code {code}"
        return why + (f", after not answering the health check for {waited:.0f} s" if waited >= 1 else "")

    class Supervisor(Multiprocess):
        def keep_subprocess_alive(self) -> None:
            before, started = list(self.processes), time.monotonic()
            super().keep_subprocess_alive()
            waited = time.monotonic() - started
            for index, (old, now) in enumerate(zip(before, self.processes, strict=False)):
                if old is not now:
                    log.error("serve worker %d (pid %s) died: %s; a new one started", index + 1, old.pid,
                              reason(old.process.exitcode, waited))  # fmt: skip

    return Supervisor


def worker_app():
    """The app of one worker process of :func:`serve_workers` (uvicorn calls this in each)."""
    from ..engines.open import open_session

    handed = json.loads(os.environ[WORKER_SETTINGS])
    torch.set_num_threads(handed["threads"])
    settings = ServeSettings(**handed["server"])
    classifier = Classifier(open_session(handed["source"], SessionOptions(**handed["options"])), settings)
    classifier.warm_up()
    metrics = ServeMetrics()
    if settings.grpc_port is not None:  # every worker listens on the one port (SO_REUSEPORT)
        from .grpc import start_grpc

        worker_app.grpc = start_grpc(classifier, settings, metrics, settings.grpc_port)[0]  # kept for the process's life
    service = ExplainService(classifier.session, ExplainOptions(**handed["explain"]), weights=handed["explain_weights"],
                             queue_size=settings.queue_size, budget=classifier.budget)  # fmt: skip
    return create_app(classifier, settings, metrics=metrics, explain=service)
