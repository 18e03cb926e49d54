"""``POST /v1/explain``: a heatmap overlay per uploaded image, for the page's "why" toggle.

The maps need gradients, so they are computed in torch from the fp32 weights the server's session
was opened from (:class:`~inceptionv4.infer.explain.Explainer`, built on the first request, its
own copy of the network), one request at a time on a thread of their own: a plain
``/v1/predict`` never waits for them. At most ``queue_size`` explain requests wait; beyond, a 503.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from http import HTTPStatus

import torch
from starlette.concurrency import run_in_threadpool

from ..data.decode import DecodeError, decode_cost, decode_rgb
from ..engines.session import Session
from ..engines.options import ExplainOptions
from ..infer.explain import TOP1, Explainer
from .batching import DecodeBudget, ServerBusy
from .requests import RequestError

#: the longest side of the overlay a response carries (the page shows it beside the result)
OVERLAY_SIDE = 512


class ExplainService:
    """The server's explanations of ``session``'s predictions, made as ``options`` say (with
    ``weights``: the fp32 weights of int8 artefacts). Uploads are decoded holding ``budget``
    (the classifier's :class:`~inceptionv4.serve.batching.DecodeBudget`: one memory limit for both)."""

    def __init__(self, session: Session, options: ExplainOptions | None = None, *, weights=None,
                 queue_size: int = 256, budget: DecodeBudget | None = None) -> None:  # fmt: skip
        self.session, self.options, self.weights = session, options or ExplainOptions(), weights
        self.queue_size, self.budget = queue_size, budget or DecodeBudget(2**31)
        self._explainer: Explainer | None = None
        self._failed: str | None = None
        self._build = threading.Lock()
        self.waiting = 0

    def describe(self) -> dict:
        """What ``/v1/model`` says of it: whether the extra is installed, the method and layer."""
        from ..extras import installed

        return {"available": installed("captum") and self._failed is None, "method": self.options.method,
                "layer": self.options.layer or "last stage"}  # fmt: skip

    def explainer(self) -> Explainer:
        """The explainer, built once (loading the fp32 weights); a RequestError (501) saying what
        is missing when it cannot be."""
        with self._build:
            if self._explainer is None and self._failed is None:
                try:
                    self._explainer = Explainer.of(self.session, weights=self.weights, method=self.options.method,
                                                   layer=self.options.layer)  # fmt: skip
                except (ImportError, ValueError, OSError) as err:
                    self._failed = str(err)
            if self._explainer is None:
                raise RequestError(HTTPStatus.NOT_IMPLEMENTED, "explain_unavailable",
                                   f"this server cannot explain: {self._failed}")  # fmt: skip
            return self._explainer

    async def explain(self, blobs: list[bytes], names: list[str], target: object, timeout_s: float) -> list[dict]:
        """Per upload ``{"ok": True, "explained", "top1", "box", "method", "layer", "overlay"}`` (the
        overlay as a PNG data URL) or ``{"ok": False, "error"}``; a RequestError for the request."""
        if self.waiting >= self.queue_size:
            raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, "busy",
                               f"{self.waiting} explain requests are waiting; retry shortly",
                               headers={"Retry-After": "1"})  # fmt: skip
        self.waiting += 1
        try:
            return await asyncio.wait_for(run_in_threadpool(self._explain, blobs, names, target), timeout_s)
        except TimeoutError:
            raise RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, "inference_failed",
                               f"the explanation took longer than {timeout_s:g} s") from None  # fmt: skip
        finally:
            self.waiting -= 1

    def _explain(self, blobs: list[bytes], names: list[str], target: object) -> list[dict]:
        explainer = self.explainer()
        if target != TOP1:  # a class by index or name: checked before any image is decoded
            try:
                explainer.class_of(target, torch.empty(0))
            except (TypeError, ValueError) as err:
                raise RequestError(HTTPStatus.BAD_REQUEST, "bad_target", str(err)) from None
        results: list[dict] = []
        reduce_to = self.session.reduce_to  # a large JPEG decoded reduced, as /v1/predict decodes it
        for blob, name in zip(blobs, names, strict=True):
            try:
                with self.budget.hold(decode_cost(blob, reduce_to), name):
                    picture = decode_rgb(blob, name, reduce_to=reduce_to)
            except DecodeError as err:
                results.append({"ok": False, "error": str(err)})
                continue
            except ServerBusy as err:
                raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, "decode_budget", str(err),
                                   headers={"Retry-After": "1"}) from None  # fmt: skip
            (e,) = explainer.explain_images([picture], [name], [target])
            results.append({"ok": True, "explained": {"index": e.index, "name": e.name, "prob": e.prob},
                            "top1": e.top1, "box": list(e.box), "size": list(picture.size), "method": e.method,
                            "layer": e.layer, "overlay": _png_url(picture, e)})  # fmt: skip
        return results


def _png_url(picture, e) -> str:
    from ..plots import overlay

    buf = io.BytesIO()
    overlay(picture, e.heatmap, e.box, max_side=OVERLAY_SIDE).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def parse_target(value: object) -> object:
    """A request's ``target`` (query text or JSON): "top1", a class index, or a class name."""
    if value is None or value == TOP1:
        return TOP1
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RequestError(HTTPStatus.BAD_REQUEST, "bad_target", "target must be 'top1', a class index or a name")
    if isinstance(value, str) and value.isdigit() and len(value) < 10:
        return int(value)
    return value
