"""The one batch path of inference: a dataset's images -> batches of protocol views, decoded while
the engine runs. ``eval`` and ``predict`` read every file through it.

Where the images are decoded and resampled is decided here, once:

- ``decode="workers"`` (the default): PIL, the reference pixels. With ``workers=0`` a pool of
  threads in this process decodes the next images while the engine runs the current batch
  (libjpeg and PIL's resamplers release the GIL, and no process has to start); ``workers=N`` uses
  N DataLoader processes instead, for decoders that hold the GIL.
- ``decode="device"``: the workers only read the files; the JPEGs are decoded and resampled on
  the session's device, the whole batch at once (nvJPEG on a GPU; :class:`~inceptionv4.data.views.DeviceViews`).

Large JPEGs are decoded reduced in the DCT domain to the side the protocol needs (``reduce_to``,
see :func:`~inceptionv4.data.decode.load_rgb`) unless the caller asks for the full decode.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from .decode import decode_rgb
from .transforms import Preprocessing
from .views import DeviceViews, EncodedFiles, ProtocolViews, check_decode, collate_items, cut_batch, protocol_pixels


def decode_threads() -> int:
    """How many threads decode beside the engine by default: one per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def protocol_batches(
    dataset,
    pre: Preprocessing,
    crops: int,
    device: torch.device,
    *,
    batch_size: int,
    decode: str = "workers",
    reduce_to: int | None = None,
    workers: int = 0,
    threads: int | None = None,
    order: Iterable[int] | None = None,
) -> Iterator[dict]:
    """Batches of ``batch_size`` images of ``dataset`` (taken in ``order``, default all of them)
    as ``{"images": (N*V, 3, S, S) on device or None, "labels", "indices", "skipped",
    "skipped_indices"}``: the N readable images' views (uint8 pixels from the workers, or normalised
    float32 from the device decoder) in order, and why each other one could not be read.

    ``dataset`` keeps the :class:`~inceptionv4.data.datasets.ImageDataset` contract (``load(i,
    reduce_to=)``, ``name_of``, ``samples``). See the module docstring for ``decode``, ``workers``
    and ``threads`` (default :func:`decode_threads`)."""
    check_decode(decode)
    if batch_size < 1 or workers < 0 or (threads is not None and threads < 1):
        raise ValueError(f"batch_size and threads must be >= 1 and workers >= 0, got {batch_size}, {threads}, {workers}")
    on_device = decode == "device"
    items = EncodedFiles(dataset) if on_device else ProtocolViews(dataset, pre, crops, reduce_to=reduce_to)
    order = range(len(dataset)) if order is None else order
    if workers > 0:
        batches: Iterable[dict] = torch.utils.data.DataLoader(
            items, batch_size=batch_size, num_workers=workers, sampler=list(order), collate_fn=collate_items,
            pin_memory=device.type == "cuda")  # fmt: skip
    else:
        batches = _threaded(items, order, batch_size, threads or decode_threads())
    if on_device:
        yield from map(DeviceViews(pre, crops, device), batches)
    else:
        for batch in batches:
            yield {"images": cut_batch(batch["data"], device), "labels": torch.tensor(batch["labels"], dtype=torch.long),
                   "indices": batch["indices"], "skipped": batch["skipped"],
                   "skipped_indices": batch["skipped_indices"]}  # fmt: skip


def upload_views(data: bytes, name: str, pre: Preprocessing, crops: int, *, decode: str = "workers",
                 reduce_to: int | None = None) -> torch.Tensor:  # fmt: skip
    """What the server's connection threads make of one upload (the server's side of the same
    choice): with ``decode="workers"`` the protocol's (V, 3, S, S) uint8 views, decoded here (a
    large JPEG reduced to ``reduce_to``); with ``decode="device"`` the JPEG's bytes when the device
    decodes it as PIL would, else its (3, H, W) pixels decoded here. DecodeError if it is not an
    image."""
    if check_decode(decode) == "device":
        from .device_decode import payload_of

        return payload_of(data, name)[0]
    return protocol_pixels(decode_rgb(data, name, reduce_to=reduce_to), pre, crops)


def _threaded(items, order: Iterable[int], batch_size: int, threads: int) -> Iterator[dict]:
    """:func:`collate_items` batches of ``items`` in ``order``, made by ``threads`` threads that keep
    two batches ahead of the consumer; pending work is cancelled when the consumer stops early."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="inceptionv4-decode")
    todo = iter(order)
    ahead: deque = deque()
    try:
        for _ in range(2 * batch_size):
            index = next(todo, None)
            if index is None:
                break
            ahead.append(pool.submit(items.__getitem__, index))
        batch = []
        while ahead:
            batch.append(ahead.popleft().result())
            index = next(todo, None)
            if index is not None:
                ahead.append(pool.submit(items.__getitem__, index))
            if len(batch) == batch_size or not ahead:
                yield collate_items(batch)
                batch = []
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
