"""The server's Prometheus metrics (``prometheus_client``), for ``GET /metrics``.

Each server counts into a registry of its own, so several servers in one process (tests, a
notebook) do not mix. With several worker processes (``inceptionv4 serve --workers N``) the
parent sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start; every worker then writes its
figures there and ``/metrics``, whichever worker answers it, sums them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Seconds: from a millisecond (a cached health check) to two minutes (a long queue on a CPU).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def multiprocess() -> bool:
    """Whether the figures go to ``PROMETHEUS_MULTIPROC_DIR`` (several worker processes)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class ServeMetrics:
    """Requests and errors by reason, images, batch sizes, queue wait and latency histograms.

    ``inceptionv4_requests_total{endpoint, status}``, ``inceptionv4_errors_total{reason}``,
    ``inceptionv4_images_total``, ``inceptionv4_request_seconds{endpoint}``,
    ``inceptionv4_batch_images``, ``inceptionv4_queue_wait_seconds`` and ``inceptionv4_queue_depth``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        into = {"registry": None if multiprocess() else self.registry}
        self._requests = Counter("inceptionv4_requests", "HTTP requests answered", ["endpoint", "status"], **into)
        self._errors = Counter("inceptionv4_errors", "Requests or images refused, by reason", ["reason"], **into)
        self._images = Counter("inceptionv4_images", "Images classified", **into)
        self._latency = Histogram("inceptionv4_request_seconds", "Time to answer a request", ["endpoint"],
                                  buckets=LATENCY_BUCKETS, **into)  # fmt: skip
        self._batch = Histogram("inceptionv4_batch_images", "Images per forward pass", buckets=BATCH_BUCKETS, **into)
        self._wait = Histogram("inceptionv4_queue_wait_seconds", "Time a request waited for its forward pass",
                               buckets=LATENCY_BUCKETS, **into)  # fmt: skip
        self._depth_of: Callable[[], int] | None = None
        self._depth = Gauge("inceptionv4_queue_depth", "Requests waiting for the worker",
                            multiprocess_mode="livesum", **into)  # fmt: skip

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self._requests.labels(endpoint, str(status)).inc()
        self._latency.labels(endpoint).observe(seconds)

    def error(self, reason: str) -> None:
        self._errors.labels(reason).inc()

    def images(self, n: int) -> None:
        self._images.inc(n)

    def batch(self, images: int, waits: list[float]) -> None:
        """One forward pass of ``images``, and how long each of its requests waited (the worker calls this)."""
        self._batch.observe(images)
        for w in waits:
            self._wait.observe(w)
        if self._depth_of is not None:  # several processes: the depth as each batch leaves it
            self._depth.set(self._depth_of())

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Read the queue depth when the metrics are collected (one process), or after each batch
        (several: a callback gauge cannot be shared between processes)."""
        if multiprocess():
            self._depth_of = depth
        else:
            self._depth.set_function(depth)

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type."""
        if multiprocess():
            from prometheus_client import multiprocess as mp

            registry = CollectorRegistry()
            mp.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
