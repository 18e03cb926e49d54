"""Prediction on files, folders and globs: top-k names and probabilities, one bad file never
stops the others."""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image

from ..data import Preprocessing
from ..data.decode import IMAGE_SUFFIXES, DecodeError, image_rgb, load_rgb
from ..data.device_augment import pixels_of, read_encoded_file
from ..data.views import DeviceViews, ProtocolPieces, check_decode, cut_batch, protocol_pieces
from .session import Session, as_session

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
            found = _images_under(Path(item))
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


def _images_under(folder: Path) -> list[tuple[str, str | None, None]]:
    """The image files in ``folder`` and below, sorted, as :func:`expand_inputs` entries; a
    subfolder that cannot be listed is an entry with its error, not passed over in silence."""
    found: list[tuple[str, str | None, None]] = []

    def unlisted(err: OSError) -> None:
        found.append((err.filename or str(folder), f"folder cannot be listed ({err.strerror or err}); skipped", None))

    for root, _, names in os.walk(folder, onerror=unlisted):
        found += [(str(Path(root, n)), None, None) for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found, key=lambda entry: entry[0])


def top_classes(probs: torch.Tensor, names: list[str], k: int) -> list[list[dict]]:
    """(N, classes) probabilities -> for each row its ``k`` best as ``{"index", "name", "prob"}``."""
    top = probs.topk(min(k, probs.shape[1]), 1)
    return [
        [{"index": i, "name": names[i], "prob": p} for p, i in zip(values, indices, strict=True)]
        for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


class FileViews(torch.utils.data.Dataset):
    """Files as one protocol's :class:`~inceptionv4.data.views.ProtocolPieces`, made where a
    DataLoader's workers run: each item is ``(file, pieces, None)`` or ``(file, None, reason)``.
    With ``encoded`` the item holds what ``--decode device`` leaves to the device instead: the
    file's bytes, or its pixels for a file the device decoder cannot take."""

    def __init__(self, files: list[tuple[str, str | None, Image.Image | None]], pre: Preprocessing, crops: int, *,
                 encoded: bool = False) -> None:  # fmt: skip
        self.files, self.pre, self.crops, self.encoded = files, pre, crops, encoded

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[str, ProtocolPieces | torch.Tensor | None, str | None]:
        file, error, image = self.files[index]
        if error is not None:
            return file, None, error
        try:
            if image is not None:  # already in memory: the device gets its pixels, not bytes to decode
                rgb = image_rgb(image, file)
                return file, pixels_of(rgb) if self.encoded else protocol_pieces(rgb, self.pre, self.crops), None
            if self.encoded:
                return file, read_encoded_file(file)[0], None
            return file, protocol_pieces(load_rgb(file), self.pre, self.crops), None
        except DecodeError as err:
            return file, None, str(err).removeprefix(f"{file}: ")


def predict(
    session: Session | torch.nn.Module | list[torch.nn.Module],
    inputs: Input | list[Input],
    *,
    topk: int = 5,
    batch_size: int | None = None,
    progress: bool = False,
    workers: int = 0,
    decode: str = "workers",
) -> Iterator[dict]:
    """Yield ``{"file", "ok", "top": [{"index", "name", "prob"}]}`` or ``{"file", "ok": False, "error"}``
    for every input file, in order, batching the work (``batch_size`` images at a time; default
    16 on a CPU, 256 on a GPU). ``inputs`` are files, folders (searched recursively) and globs, PIL
    images already in memory, or a list of them.

    ``session`` (:func:`~inceptionv4.infer.session.open_session`) says how inference runs:
    backend, device, precision, crops, an ensemble. Networks in memory are taken as a 1-crop torch
    session run where they are. ``workers`` loader processes decode and resample the files in
    parallel (0: in this process; the views are cut where the session runs). ``decode="device"``
    leaves the workers only reading the files and decodes and resamples them on the session's
    device (nvJPEG on a GPU; see :func:`~inceptionv4.infer.evaluate.evaluate_protocol`)."""
    if topk < 1 or (batch_size is not None and batch_size < 1) or workers < 0:  # before a model or a file is read
        raise ValueError(f"topk and batch_size must be >= 1 and workers >= 0, got {topk}, {batch_size}, {workers}")
    check_decode(decode)
    session = as_session(session)
    names, pre, crops, device = session.labels.names, session.pre, session.crops, session.device
    k = min(topk, len(names))
    files = expand_inputs(inputs)
    on_gpu = device.type == "cuda"
    device_views = DeviceViews(pre, crops, device) if decode == "device" else None
    batch_size = batch_size or (256 if on_gpu else 16)  # images a pass; a GPU needs many to be busy
    loader = torch.utils.data.DataLoader(FileViews(files, pre, crops, encoded=decode == "device"), batch_size=batch_size,
                                         num_workers=workers, collate_fn=list, pin_memory=on_gpu)  # fmt: skip
    bar = None
    if progress and len(files) > batch_size:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), desc="predict", unit="img")
    pending: list[tuple[str, ProtocolPieces | torch.Tensor]] = []

    def flush() -> Iterator[dict]:
        if not pending:
            return
        if decode == "device":  # a file the device cannot decode after all gets its reason, in its place
            views, failed = device_views.views_of([x for _, x in pending], [f for f, _ in pending])
        else:
            views, failed = cut_batch([pieces for _, pieces in pending], device), {}
        tops = iter(())
        if views is not None:
            probs = session(views)
            tops = iter(top_classes(probs, names, k))
        for i, (file, _) in enumerate(pending):
            if i in failed:
                yield {"file": file, "ok": False, "error": failed[i].removeprefix(f"{file}: ")}
            else:
                yield {"file": file, "ok": True, "top": next(tops)}
        pending.clear()

    for items in loader:
        for file, pieces, error in items:
            if bar is not None:
                bar.update(1)
            if error is not None:
                yield from flush()  # keep the output in input order
                yield {"file": file, "ok": False, "error": error}
            else:
                pending.append((file, pieces))
                if len(pending) == batch_size:
                    yield from flush()
    yield from flush()
    if bar is not None:
        bar.close()
