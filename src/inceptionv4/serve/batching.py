"""The request batcher behind the server: concurrent requests share forward passes.

One worker thread owns the session and runs whatever requests are waiting as one batch (up to
``max_batch`` images, waiting at most ``max_wait_ms`` for company). Requests come from any
thread (:meth:`Classifier.submit`, :meth:`Classifier.classify`) or from an event loop
(:meth:`Classifier.classify_async`, which holds no thread while it waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import queue
import threading
import time
from collections.abc import Callable
import dataclasses
from dataclasses import dataclass, field

import torch
from PIL import Image

from ..data.decode import decode_cost
from ..data.loaders import upload_views
from ..data.views import DeviceViews, check_decode, normalize_views
from ..engines.open import as_session
from ..engines.session import Session
from .settings import ServeSettings

log = logging.getLogger("inceptionv4.serve")

#: What the worker reports after each forward pass: the images in it, and how long each request
#: in it waited in the queue (seconds).
BatchHook = Callable[[int, list[float]], None]


class ServerBusy(RuntimeError):
    """The request queue is full, or decoding in flight holds the memory budget: the client should
    retry shortly (HTTP 503)."""


class DecodeBudget:
    """Bytes of decoding in flight, shared by the threads that decode uploads: each decode holds
    its estimate (:func:`~inceptionv4.data.decode.decode_cost`, from the header) while it runs,
    and one that would pass ``total`` waits for others to finish, up to ``wait_s``. So many large
    uploads at once wait their turn instead of running the process out of memory (a 4 GB cgroup
    killed a worker for two to eight 9000 x 9000 palette PNGs)."""

    def __init__(self, total: int, wait_s: float = 30.0) -> None:
        if total < 1:
            raise ValueError(f"the decoding budget must be at least 1 byte, got {total}")
        self.total, self.wait_s, self.used = total, wait_s, 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, need: int, name: str = "upload"):
        """Hold ``need`` bytes of the budget for the block; :class:`ServerBusy`, saying why, if one
        image needs more than the whole budget or the budget stays taken for ``wait_s``."""
        need = max(0, int(need))
        if need > self.total:
            raise ServerBusy(f"{name}: decoding it would take {need / 2**20:,.0f} MB, over the server's decoding "
                             f"budget of {self.total / 2**20:,.0f} MB (serve --decode-memory-mb)")  # fmt: skip
        with self._cond:
            if not self._cond.wait_for(lambda: self.used + need <= self.total, self.wait_s):
                raise ServerBusy(f"{name}: the server's decoding budget ({self.total / 2**20:,.0f} MB) stayed taken "
                                 f"by other uploads for {self.wait_s:g} s; retry shortly")  # fmt: skip
            self.used += need
        try:
            yield
        finally:
            with self._cond:
                self.used -= need
                self._cond.notify_all()


@dataclass
class _Job:
    """One request's preprocessed views (or, with ``decode="device"``, its payloads), waiting for
    the worker."""

    views: torch.Tensor | None  # (images * crops, 3, S, S): uint8 pixels, or float32 already normalised
    images: int
    payloads: list[torch.Tensor] | None = None  # decode="device": JPEG bytes (1-D), or pixels (3, H, W)
    names: list[str] | None = None  # the payloads' names, for the reasons in ``failed``
    done: threading.Event = field(default_factory=threading.Event)
    queued: float = field(default_factory=time.monotonic)
    notify: Callable[[], None] | None = None  # called from the worker once done (an event loop's wake-up)
    probs: torch.Tensor | None = None  # (images decoded, classes) once done
    failed: dict[int, str] = field(default_factory=dict)  # image -> why the device could not decode it
    error: str | None = None


class Classifier:
    """The session behind the server and the batching worker that runs it.

    Usable without HTTP: ``submit(views)`` from any thread blocks until the batch holding those
    views has run and returns their probabilities. ``session`` says how inference runs
    (:func:`~inceptionv4.engines.open.open_session`); networks in memory are taken as a 1-crop
    torch session run where they are.
    """

    def __init__(self, session: Session | torch.nn.Module | list[torch.nn.Module], settings: ServeSettings | None = None,
                 *, on_batch: BatchHook | None = None, **overrides) -> None:  # fmt: skip
        """``settings`` (default :class:`~inceptionv4.serve.settings.ServeSettings`'s) says how it
        batches (``max_batch``, ``max_wait_ms``, ``queue_size``), where uploads are decoded
        (``decode``) and how much memory they may hold doing so (``decode_memory_bytes``); any of
        its fields may be given by keyword over it."""
        settings = dataclasses.replace(settings or ServeSettings(), **overrides)
        self.decode = check_decode(settings.decode)
        self.budget = DecodeBudget(settings.decode_memory_bytes)
        self.session = session = as_session(session)
        self.architecture, self.names, self.pre = session.architecture, session.labels.names, session.pre
        self.crops, self.max_batch, self.max_wait = session.crops, settings.max_batch, settings.max_wait_ms / 1000
        self._device_views = DeviceViews(self.pre, self.crops, session.device) if self.decode == "device" else None
        queue_size = settings.queue_size
        self._queue: queue.Queue[_Job | None] = queue.Queue(queue_size)
        self.on_batch = on_batch
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
        normalised where the models run. A large JPEG is decoded reduced to the protocol's size
        unless the session was opened with ``full_decode``."""
        return upload_views(data, name, self.pre, self.crops, reduce_to=self.session.reduce_to)

    def prepare(self, data: bytes, name: str = "upload") -> torch.Tensor:
        """What a connection thread makes of one upload for :meth:`classify` (DecodeError if it is
        not an image; :class:`ServerBusy` past the decoding budget): :func:`~inceptionv4.data.loaders.upload_views`
        with the server's decoder, holding its estimated memory of the :class:`DecodeBudget` meanwhile."""
        with self.budget.hold(decode_cost(data, self.session.reduce_to), name):
            return upload_views(data, name, self.pre, self.crops, decode=self.decode, reduce_to=self.session.reduce_to)

    def classify(
        self, prepared: list[torch.Tensor], timeout: float | None = None, names: list[str] | None = None
    ) -> list[torch.Tensor | str]:
        """Per image of ``prepared`` (from :meth:`prepare`), its probabilities (classes,), or why the
        device could not decode it after all (naming it by ``names``); batched with whatever else is
        waiting. Raises as :meth:`submit` does."""
        job = self._job(prepared, names)
        self._put(job)
        if not job.done.wait(timeout):
            raise RuntimeError(f"no result within {timeout} s")
        return self._answers(job)

    async def classify_async(
        self, prepared: list[torch.Tensor], timeout: float | None = None, names: list[str] | None = None
    ) -> list[torch.Tensor | str]:
        """:meth:`classify` for an event loop: the request waits without holding a thread."""
        job = self._job(prepared, names)
        await self._wait_async(job, timeout)
        return self._answers(job)

    async def submit_async(self, views: torch.Tensor, timeout: float | None = None) -> torch.Tensor:
        """:meth:`submit` for an event loop: the request waits without holding a thread."""
        job = _Job(views, len(views) // self.crops)
        await self._wait_async(job, timeout)
        if job.error is not None:
            raise RuntimeError(job.error)
        return job.probs

    async def _wait_async(self, job: _Job, timeout: float | None) -> None:
        """Queue ``job`` and wait on the event loop until the worker has run it (RuntimeError past ``timeout``)."""
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        job.notify = lambda: loop.call_soon_threadsafe(woken.set)
        self._put(job)
        try:
            await asyncio.wait_for(woken.wait(), timeout)
        except TimeoutError:
            raise RuntimeError(f"no result within {timeout} s") from None

    def submit(self, views: torch.Tensor, timeout: float | None = None) -> torch.Tensor:
        """Probabilities (images, classes) for ``views`` (images * crops, 3, S, S: uint8 from
        :meth:`views`, or float32 already normalised), batched with whatever else is waiting.
        Raises :class:`ServerBusy` with ``queue_size`` requests already waiting, RuntimeError if
        the forward pass fails or takes over ``timeout`` seconds."""
        job = _Job(views, len(views) // self.crops)
        self._put(job)
        if not job.done.wait(timeout):
            raise RuntimeError(f"no result within {timeout} s")
        if job.error is not None:
            raise RuntimeError(job.error)
        return job.probs

    @property
    def queued(self) -> int:
        """Requests waiting for the worker (approximate, as ``queue.Queue.qsize`` is)."""
        return self._queue.qsize()

    def _job(self, prepared: list[torch.Tensor], names: list[str] | None) -> _Job:
        if self._device_views is None:
            return _Job(torch.cat(prepared), len(prepared))
        names = names or [f"image {i}" for i in range(len(prepared))]
        return _Job(None, len(prepared), payloads=prepared, names=names)

    def _put(self, job: _Job) -> None:
        try:
            self._queue.put(job, block=False)
        except queue.Full:
            raise ServerBusy("the server is busy (request queue full); retry shortly") from None

    @staticmethod
    def _answers(job: _Job) -> list[torch.Tensor | str]:
        if job.error is not None:
            raise RuntimeError(job.error)
        rows = iter(job.probs)
        return [job.failed[i] if i in job.failed else next(rows) for i in range(job.images)]

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
        started, present = time.monotonic(), []
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
        if self.on_batch is not None and present:
            try:
                self.on_batch(len(probs), [started - j.queued for j in jobs])
            except Exception:  # a metrics hook never stops the serving
                log.exception("batch hook failed")
        for j in jobs:
            j.done.set()
            if j.notify is not None:
                try:
                    j.notify()
                except RuntimeError:  # its event loop has closed: nobody waits for it any more
                    pass

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
