"""How a server listens, batches, and what it lets one client do: :class:`ServeSettings`, each
setting described once (default, range, help). :class:`~inceptionv4.serve.server.InferenceServer`,
each :func:`~inceptionv4.serve.server.serve_workers` process and ``inceptionv4 serve``'s flags all
read it. Nothing heavy is imported here, so ``--help`` stays fast."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import COUNT, Range, Unit, between, check_fields, setting

MB = Unit(2**20, "mb")


def _megabytes(high_mb: int) -> Range:
    return Range(lambda v: 0 < v <= high_mb * MB.factor, f"> 0 and <= {high_mb} (MB)", integer=True)


def _seconds(high: float) -> Range:
    return Range(lambda v: 0 < v <= high, f"a finite number > 0 and <= {high:g} (seconds)")


def _host(value: object) -> str | None:
    """Why a host is refused: the socket API reads "" as every interface, never meant silently."""
    if not isinstance(value, str) or not value.strip():
        return "is empty: give 127.0.0.1 (this machine only) or 0.0.0.0 / :: (every interface)"
    return None


@dataclass(frozen=True)
class ServeSettings:
    """Every setting of a server but its session. Made checked: a bad value is a ValueError naming
    the setting and its rule, before any port is bound or model warmed up."""

    host: str = setting("127.0.0.1", "the address to listen on (0.0.0.0 or ::: every interface)", check=_host)
    port: int = setting(8080, "the port; 0 picks a free one", range=between(0, 65535, integer=True))
    grpc_port: int | None = setting(
        None,
        "also speak the KServe v2 protocol over gRPC on this port (0: any free port; several --workers share "
        "a given port); needs the grpc extra",
        range=between(0, 65535, integer=True).or_unset(),
        metavar="PORT",
    )
    workers: int = setting(1, "server processes on the port, each with its own copy of the model",
                           range=between(1, 64, integer=True), metavar="N")  # fmt: skip
    topk: int = setting(5, "classes per image unless a request asks (?topk=K)", range=COUNT)
    max_batch: int = setting(8, "most images run in one forward pass", range=between(1, 4096, integer=True))
    max_wait_ms: float = setting(5.0, "how long a request waits for others to share its batch",
                                 range=Range(lambda v: 0 <= v <= 60_000, "a finite number >= 0 and <= 60000"))  # fmt: skip
    decode: str = setting(
        "workers",
        "where JPEGs are decoded and resampled: workers (the connection threads, PIL: the reference pixels) or the "
        "device (the batch at once, nvJPEG on a GPU; pixels within two levels of PIL's)",
        choices=("workers", "device"),
    )
    max_body_bytes: int = setting(32 * MB.factor, "largest request body accepted (413 above)",
                                  range=_megabytes(4096), unit=MB)  # fmt: skip
    max_images: int = setting(64, "most images in one request", range=between(1, 100_000, integer=True))
    decode_memory_bytes: int = setting(  # one image of the largest a decode takes (data.decode.MAX_DECODE_BYTES)
        2048 * MB.factor,
        "memory the uploads being decoded may hold at once, estimated from each image's header; an upload that "
        "would pass it waits, and one larger than it gets a 503 with the reason",
        range=_megabytes(1 << 20),
        unit=MB,
    )
    queue_size: int = setting(256, "most requests waiting for the model; beyond, 503 with Retry-After",
                              range=between(1, 1_000_000, integer=True))  # fmt: skip
    timeout_s: float = setting(120.0, "longest wait for a request's batch (500 after)", range=_seconds(3600),
                               flag="--timeout", metavar="S")  # fmt: skip
    header_timeout_s: float = setting(10.0, "seconds a client has to send a request's headers",
                                      range=_seconds(3600), flag="--header-timeout", metavar="S")  # fmt: skip
    body_timeout_s: float = setting(30.0, "seconds a client has to send a request's body",
                                    range=_seconds(3600), flag="--body-timeout", metavar="S")  # fmt: skip
    max_connections: int = setting(1024, "most connections at once (503 beyond)",
                                   range=between(1, 1_000_000, integer=True))  # fmt: skip
    drain_s: float = setting(30.0, "on stopping, how long the requests in flight have to be answered",
                             range=_seconds(3600), flag="--drain", metavar="S")  # fmt: skip
    access_log: bool = setting(True, "log every request")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.workers > 1 and self.grpc_port == 0:
            raise ValueError("grpc_port 0 would give each worker another port: give one, e.g. --grpc-port 8081")
