"""Prediction on files, folders and globs: top-k names and probabilities, one bad file never
stops the others."""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Callable, Container, Iterator
from pathlib import Path

import torch
from PIL import Image

from ..data.decode import DecodeError, image_rgb, images_under, load_rgb
from ..data.loaders import protocol_batches
from ..data.views import check_decode
from ..distributed import World
from ..engines.open import as_session
from ..engines.session import Session

#: What :func:`predict` takes: files, folders and globs by name, or PIL images already in memory.
Input = str | Path | Image.Image


def expand_inputs(inputs: Input | list[Input]) -> list[tuple[str, str | None, Image.Image | None]]:
    """(name, error, image) for every file named, inside a folder (recursively) or matched by a glob,
    and for every PIL image given (named by its ``filename``, else ``<image i>``, i its position).

    Nothing here raises for one input: a path that cannot be examined (an unsearchable directory,
    a name too long), a folder or subfolder that cannot be listed, a folder with no images, a
    pattern that matches nothing are each one entry with its error, in its place."""
    if isinstance(inputs, (str, Path, Image.Image)):  # one input, not a sequence of characters
        inputs = [inputs]
    out: list[tuple[str, str | None, Image.Image | None]] = []
    for position, item in enumerate(inputs):
        if isinstance(item, Image.Image):
            out.append((getattr(item, "filename", "") or f"<image {position}>", None, item))
            continue
        item = os.fspath(item) if isinstance(item, os.PathLike) else str(item)
        try:
            mode = os.stat(item).st_mode
        except FileNotFoundError:
            mode = None
        except (OSError, ValueError) as err:  # EACCES on a parent, ENAMETOOLONG, ELOOP, an embedded NUL
            out.append((item, f"cannot be examined ({getattr(err, 'strerror', None) or err})", None))
            continue
        if mode is not None and stat.S_ISDIR(mode):
            found = [(path, error, None) for path, error in images_under(item)]
            out += found if any(error is None for _, error, _ in found) else [*found, (item, "folder has no images", None)]
        elif mode is not None:
            out.append((item, None, None))  # a special file is refused by name when it is read
        elif any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            out += [(m, None, None) for m in matches if not os.path.isdir(m)] or [
                (item, "no file matches this pattern", None)
            ]
        else:
            out.append((item, "no such file", None))
    return out


def top_classes(probs: torch.Tensor, names: list[str], k: int) -> list[list[dict]]:
    """(N, classes) probabilities -> for each row its ``k`` best as ``{"index", "name", "prob"}``."""
    top = probs.topk(min(k, probs.shape[1]), 1)
    return [
        [{"index": i, "name": names[i], "prob": p} for p, i in zip(values, indices, strict=True)]
        for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


class InputFiles:
    """:func:`expand_inputs` entries as a dataset (the :class:`~inceptionv4.data.datasets.ImageDataset`
    contract) for the batch path: ``load(i)`` decodes file ``i`` (or a PIL image in memory), or
    raises :class:`~inceptionv4.data.decode.DecodeError` with the reason it was listed with."""

    classes: list[str] = []

    def __init__(self, files: list[tuple[str, str | None, Image.Image | None]]) -> None:
        self.files = files
        # a listed error or an image in memory is not a path the device path reads: it calls load()
        self.samples = [(name if error is None and image is None else (name, error, image), -1)
                        for name, error, image in files]  # fmt: skip

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int, reduce_to: int | None = None) -> tuple[Image.Image, int]:
        file, error, image = self.files[index]
        if error is not None:
            raise DecodeError(f"{file}: {error}")
        if image is not None:
            return image_rgb(image, file), -1
        return load_rgb(file, reduce_to=reduce_to), -1

    def name_of(self, index: int) -> str:
        return self.files[index][0]


def predict(
    session: Session | torch.nn.Module | list[torch.nn.Module],
    inputs: Input | list[Input] | None,
    *,
    dataset=None,
    world: World | None = None,
    topk: int = 5,
    batch_size: int | None = None,
    progress: bool = False,
    workers: int = 0,
    decode: str = "workers",
    skip: Container[str] = (),
) -> Iterator[dict]:
    """Yield ``{"file", "ok", "top": [{"index", "name", "prob"}]}`` or ``{"file", "ok": False, "error"}``
    for every input file, in order, batching the work (``batch_size`` images at a time; default
    16 on a CPU, 256 on a GPU). ``inputs`` are files, folders (searched recursively) and globs, PIL
    images already in memory, or a list of them; or None and ``dataset`` (an ImageDataset:
    WebDataset shards, a Hugging Face split), keyed by its ``name_of``. Files named in ``skip``
    are left out (a resumed run's finished ones); ``world`` takes a torchrun process's share
    (:func:`session_rows`).

    ``session`` (:func:`~inceptionv4.engines.open.open_session`) says how inference runs:
    backend, device, precision, crops, an ensemble. Networks in memory are taken as a 1-crop torch
    session run where they are. The files go through the one batch path
    (:func:`~inceptionv4.data.loaders.protocol_batches`): with ``workers=0`` threads of this
    process decode the next batch while the engine runs the current one; ``workers=N`` uses N
    loader processes instead. A JPEG much larger than the protocol needs is decoded reduced,
    unless the session was opened with ``full_decode``. ``decode="device"`` leaves the workers
    only reading the files and decodes and resamples them on the session's device (nvJPEG on a
    GPU; see :func:`~inceptionv4.infer.evaluate.evaluate_protocol`)."""
    if topk < 1 or (batch_size is not None and batch_size < 1) or workers < 0:  # before a model or a file is read
        raise ValueError(f"topk and batch_size must be >= 1 and workers >= 0, got {topk}, {batch_size}, {workers}")
    check_decode(decode)
    session = as_session(session)
    names = session.labels.names
    if session.output != "probabilities":
        raise ValueError("predict ranks classes: open the session with output='probabilities' (embed() embeds)")
    k = min(topk, len(names))

    def rows(outputs: torch.Tensor) -> list[dict]:
        return [{"top": top} for top in top_classes(outputs, names, k)]

    yield from session_rows(session, inputs, rows, dataset=dataset, world=world, batch_size=batch_size,
                            progress=progress, workers=workers, decode=decode, skip=skip, desc="predict")  # fmt: skip


def session_rows(session: Session, inputs: Input | list[Input] | None, rows: Callable[[torch.Tensor], list[dict]], *,
                 dataset=None, world: World | None = None, batch_size: int | None = None, progress: bool = False,
                 workers: int = 0, decode: str = "workers", skip: Container[str] = (),
                 desc: str = "predict") -> Iterator[dict]:  # fmt: skip
    """The one loop of predict and embed: every input file (or every image of ``dataset``, an
    :class:`~inceptionv4.data.datasets.ImageDataset` such as shards, when ``inputs`` is None) but
    those named in ``skip``, through the batch path and ``session``, in order, as ``{"file", "ok":
    True, **rows(outputs)[i]}`` or ``{"file", "ok": False, "error"}``. ``rows`` turns a batch's
    (N, ...) outputs into N dicts. Under torchrun (``world``) this process takes every
    ``world.size``-th image from its rank on, as eval does; the shares do not depend on ``skip``,
    so a rerun gives each process the same images."""
    if (batch_size is not None and batch_size < 1) or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size}, {workers}")
    check_decode(decode)
    if (inputs is None) == (dataset is None):
        raise ValueError("give inputs (files, folders, globs) or a dataset, not both")
    files = InputFiles(expand_inputs(inputs)) if dataset is None else dataset
    world = world or World()
    order = [i for i in range(world.rank, len(files), world.size) if files.name_of(i) not in skip]
    batch_size = batch_size or (256 if session.device.type == "cuda" else 16)  # images a pass; a GPU needs many
    batches = protocol_batches(files, session.pre, session.crops, session.device, batch_size=batch_size,
                               decode=decode, reduce_to=session.reduce_to, workers=workers, order=order)  # fmt: skip
    bar = None
    if progress and len(order) > batch_size:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), desc=desc, unit="img")
    try:
        for batch in batches:
            results = {i: {"file": files.name_of(i), "ok": False, "error": reason.removeprefix(f"{files.name_of(i)}: ")}
                       for i, reason in zip(batch["skipped_indices"], batch["skipped"], strict=True)}  # fmt: skip
            if batch["images"] is not None:
                made = rows(session(batch["images"]))
                results.update({i: {"file": files.name_of(i), "ok": True, **row}
                                for i, row in zip(batch["indices"], made, strict=True)})  # fmt: skip
            for i in sorted(results):  # in input order
                yield results[i]
            if bar is not None:
                bar.update(len(results))
    finally:  # a caller that stops early stops the decoding too
        batches.close()
        if bar is not None:
            bar.close()
