"""Reading a request: its body within the limits, its JSON, its images (base64 or a multipart form),
its top-k; and :class:`RequestError`, the one form of a refusal. The v1 and v2 routes both read
requests through these."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
from http import HTTPStatus

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect


class RequestError(ValueError):
    """A request the server refuses: its status, a short ``reason`` (the metrics label) and a
    message for the client. ``close``: the body was not read, so the connection must close."""

    def __init__(self, status: HTTPStatus, reason: str, message: str, *, close: bool = False,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.reason, self.close, self.headers = status, reason, close, headers or {}


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, at most ``limit`` bytes, all of it within ``timeout`` seconds."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise RequestError(HTTPStatus.BAD_REQUEST, "bad_length", f"Content-Length is not a number: {length!r}",
                               close=True)  # fmt: skip
        if int(length) > limit:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                               f"body of {int(length):,} bytes is over the {limit:,}-byte limit", close=True)  # fmt: skip
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                                       f"body is over the {limit:,}-byte limit", close=True)  # fmt: skip
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(HTTPStatus.REQUEST_TIMEOUT, "body_timeout",
                           f"the body did not arrive within {timeout:g} s", close=True) from None  # fmt: skip
    except ClientDisconnect:
        raise RequestError(HTTPStatus.BAD_REQUEST, "disconnected", "the client went away mid-body") from None
    return b"".join(chunks)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _int(text: str) -> int:
    if len(text) > 100:
        raise ValueError(f"a number of {len(text):,} digits")
    return int(text)


def parse_json(data: bytes) -> dict:
    """A JSON request body as a dict, or a 400 naming what was wrong: invalid JSON, a number that is
    not finite (1e999, Infinity, NaN) or of hundreds of digits, nesting too deep to parse."""
    try:
        request = json.loads(data, parse_constant=_no_constant, parse_float=_finite, parse_int=_int)
    except RecursionError:
        raise RequestError(HTTPStatus.BAD_REQUEST, "bad_json", "body is not valid JSON (nested too deeply)") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError and the number checks above
        raise RequestError(HTTPStatus.BAD_REQUEST, "bad_json", f"body is not valid JSON ({err})") from None
    if not isinstance(request, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, "bad_json",
                           'JSON body must be an object: {"images": [<base64>, ...]}')  # fmt: skip
    return request


def images_of(request: dict, max_images: int) -> list[bytes]:
    """The decoded base64 images of a JSON request."""
    images = request.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(b, str) for b in images):
        raise RequestError(HTTPStatus.BAD_REQUEST, "bad_json", '"images" must be a non-empty list of base64 strings')
    _check_count(len(images), max_images)
    out = []
    for i, text in enumerate(images):
        try:
            out.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise RequestError(HTTPStatus.BAD_REQUEST, "bad_base64", f"images[{i}] is not valid base64") from None
    return out


async def form_files(request: Request, data: bytes, max_images: int) -> tuple[list[str], list[bytes]]:
    """The files of a multipart form already read into ``data``: (names, bytes), in order."""

    async def replay() -> dict:
        return {"type": "http.request", "body": data, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=max_images, max_fields=max_images)
    except (MultiPartException, HTTPException) as err:  # starlette raises the latter inside an app
        message = err.message if isinstance(err, MultiPartException) else err.detail
        raise RequestError(HTTPStatus.BAD_REQUEST, "bad_multipart", f"multipart form: {message}") from None
    try:
        files = [(field, v) for field, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise RequestError(HTTPStatus.BAD_REQUEST, "no_file",
                               "multipart form has no file: send the image as a file field "
                               "(curl -F file=@photo.jpg)")  # fmt: skip
        _check_count(len(files), max_images)
        names = [f"{field}[{i}] ({f.filename})" if f.filename else f"{field}[{i}]" for i, (field, f) in enumerate(files)]
        return names, [await f.read() for _, f in files]
    finally:
        await form.close()


def _check_count(n: int, max_images: int) -> None:
    if n > max_images:
        raise RequestError(HTTPStatus.BAD_REQUEST, "too_many_images",
                           f"{n} images is over the {max_images}-per-request limit")  # fmt: skip


def check_topk(value: object) -> int:
    """``value`` (a JSON integer, or the query's digits) as a top-k count (>= 1), or a 400 naming what
    was wrong: 2.5 and true are not integers (digits in a string are taken, as in the query)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        if len(value) > 9:
            raise RequestError(HTTPStatus.BAD_REQUEST, "bad_topk", f"topk of {len(value)} digits is too large")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise RequestError(HTTPStatus.BAD_REQUEST, "bad_topk", f"topk must be an integer, got {shown}")
    k = value
    if k < 1:
        raise RequestError(HTTPStatus.BAD_REQUEST, "bad_topk", f"topk must be >= 1, got {k}")
    return k
