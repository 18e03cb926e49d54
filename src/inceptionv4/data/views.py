"""The paper's evaluation protocols as geometry: which views (1, 10, 12, 144 crops) one image
gives, and the datasets and device step that make them for a batch.

- 1: resize the shorter side to ``size / crop_pct``, centre crop.
- 10: at that scale, the 4 corners and the centre, and their mirrors.
- 144 (GoogLeNet's protocol, Sec. "Results"): 4 scales of the shorter side x 3 squares
  (left/centre/right or top/centre/bottom) x 6 crops (4 corners, centre, the whole square
  resized) x 2 mirrors. GoogLeNet's shorter sides 256/288/320/352 for 224-pixel crops are scaled
  to the crop size: 342/384/427/470 at 299.
- 12: the 144-crop protocol at one scale (``size / crop_pct``) and the centre square only:
  6 crops x 2 mirrors. (The paper does not define its 12 crops; this is our reading.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from ..models.preprocessing import check_crops
from .base import Item, Skipped, split_items
from .transforms import INTERPOLATION_MODES, Preprocessing


GOOGLENET_SIDES = (256, 288, 320, 352)  # for 224-pixel crops


def scales_for(pre: Preprocessing, crops: int) -> list[int]:
    """The shorter-side lengths a protocol resizes to."""
    if crops == 144:
        return [round(pre.input_size * s / 224) for s in GOOGLENET_SIDES]
    return [pre.resize_size]


def decode_side(pre: Preprocessing, crops: int) -> int:
    """The shorter side a protocol resizes an image to first (its largest scale): a JPEG need not be
    decoded larger than this (:func:`~inceptionv4.data.decode.load_rgb`'s ``reduce_to``)."""
    return max(scales_for(pre, crops))


def _five_boxes(height: int, width: int, s: int) -> list[tuple[int, int]]:
    """(top, left) of torchvision's five crops of an s x s window: 4 corners, then the centre."""
    centre = (round((height - s) / 2), round((width - s) / 2))  # Python rounds half to even, as torchvision does
    return [(0, 0), (0, width - s), (height - s, 0), (height - s, width - s), centre]


@dataclass
class ProtocolPieces:
    """One image's protocol views before they are cut: the resampled pictures (one per scale, and
    each square resized whole) and where each view lies in them.

    A loader worker makes these; :func:`cut_views` cuts the crops and mirrors wherever the model
    runs. For 144 crops of a 500x375 photo that is 16 pictures (about 6 MB) instead of 144 views
    (39 MB), and the worker's share drops to decoding and resampling.
    """

    pictures: list[torch.Tensor]  # uint8 (3, H, W) each
    plan: torch.Tensor  # (V, 4) int64: picture, top, left, mirrored -- one row per view, in protocol order
    size: int  # S: the views are S x S

    def pin_memory(self) -> ProtocolPieces:  # a DataLoader with pin_memory=True calls this
        return ProtocolPieces([p.pin_memory() for p in self.pictures], self.plan, self.size)


def protocol_pieces(img: Image.Image | torch.Tensor, pre: Preprocessing, crops: int = 1) -> ProtocolPieces:
    """The pictures and cutting plan of one image for a ``crops`` protocol (see :class:`ProtocolPieces`).

    ``img`` is a PIL image (resampled by PIL: the reference pixels), or a (3, H, W) uint8 tensor on
    any device, resampled there by torchvision's tensor resize (antialiased ``interpolate``, rounded
    back to uint8 after each resize as PIL's are) -- how ``--decode device`` makes the views.
    """
    check_crops(crops)
    s, interp = pre.input_size, INTERPOLATION_MODES[pre.interpolation]
    pictures: list[Image.Image | torch.Tensor] = []
    plan: list[tuple[int, int, int, int]] = []
    for side in scales_for(pre, crops):
        resized = TF.resize(img, side, interpolation=interp, antialias=True)
        h, w = TF.get_size(resized)
        if crops == 1:  # one view: the crop itself travels
            pictures.append(TF.center_crop(resized, [s, s]))
            plan.append((0, 0, 0, 0))
            continue
        pictures.append(resized)
        scale = len(pictures) - 1
        if crops == 10:
            five = _five_boxes(h, w, s)
            plan += [(scale, t, l, 0) for t, l in five] + [(scale, t, l, 1) for t, l in five]
            continue
        q = min(w, h)
        offsets = [0, (max(w, h) - q) // 2, max(w, h) - q] if crops == 144 else [(max(w, h) - q) // 2]
        for o in offsets:
            top, left = (0, o) if w >= h else (o, 0)
            square = TF.crop(resized, top, left, q, q)
            pictures.append(TF.resize(square, [s, s], interpolation=interp, antialias=True))
            for t, l in _five_boxes(q, q, s):
                plan += [(scale, top + t, left + l, 0), (scale, top + t, left + l, 1)]
            plan += [(len(pictures) - 1, 0, 0, 0), (len(pictures) - 1, 0, 0, 1)]
    tensors = [p if isinstance(p, torch.Tensor) else TF.pil_to_tensor(p) for p in pictures]
    return ProtocolPieces(tensors, torch.tensor(plan, dtype=torch.long), s)


def cut_views(pieces: ProtocolPieces, device: torch.device | str | None = None) -> torch.Tensor:
    """(V, 3, S, S) uint8 views cut from ``pieces`` on ``device`` (default: where the pictures are):
    the pictures travel once, and the crops and mirrors are copies made there."""
    s = pieces.size
    pictures = [p.to(device, non_blocking=True) if device is not None else p for p in pieces.pictures]
    out = torch.empty(len(pieces.plan), 3, s, s, dtype=torch.uint8, device=pictures[0].device)
    for k, (p, t, l, mirrored) in enumerate(pieces.plan.tolist()):
        view = pictures[p][:, t : t + s, l : l + s]
        out[k] = view.flip(-1) if mirrored else view
    return out


def protocol_pixels(img: Image.Image | torch.Tensor, pre: Preprocessing, crops: int = 1) -> torch.Tensor:
    """(V, 3, S, S) uint8 views of one image for a ``crops`` protocol (V = crops), not yet normalised
    (a quarter of the bytes of float views); :func:`normalize_views` normalises them where the model runs."""
    return cut_views(protocol_pieces(img, pre, crops))


def normalize_views(pixels: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """uint8 views -> float32, normalised with ``pre``'s mean and std, on the views' device.

    The operations, in their order, of torchvision's ``ToDtype(scale=True)`` + ``Normalize``: a view
    normalised on a GPU here equals the one the CPU transforms make.
    """
    mean = torch.tensor(pre.mean, device=pixels.device).view(-1, 1, 1)
    std = torch.tensor(pre.std, device=pixels.device).view(-1, 1, 1)
    return pixels.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)


def crop_views(img: Image.Image, pre: Preprocessing, crops: int = 1) -> torch.Tensor:
    """(V, 3, S, S) normalised float32 views of one image for a ``crops`` protocol (V = crops)."""
    return normalize_views(protocol_pixels(img, pre, crops), pre)


class ProtocolViews(torch.utils.data.Dataset):
    """A dataset's images as one protocol's :class:`ProtocolPieces`, made where a DataLoader's
    workers run: an :class:`~inceptionv4.data.base.Item` of the pieces (with the file's name),
    or a :class:`~inceptionv4.data.base.Skipped` for an unreadable file (batched by
    :func:`collate_items`). ``reduce_to`` (:func:`decode_side`, or None for the
    full decode) is passed to the dataset's ``load``."""

    def __init__(self, dataset, pre: Preprocessing, crops: int, *, reduce_to: int | None = None) -> None:
        check_crops(crops)
        self.dataset, self.pre, self.crops, self.reduce_to = dataset, pre, crops, reduce_to

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        from .decode import DecodeError

        try:
            if self.reduce_to is None:
                img, label = self.dataset.load(index)
            else:
                img, label = self.dataset.load(index, reduce_to=self.reduce_to)
        except DecodeError as err:
            return Skipped(index, str(err))
        return Item(protocol_pieces(img, self.pre, self.crops), label, index, name=self.dataset.name_of(index))


def collate_items(batch: list) -> dict[str, list]:
    """:class:`ProtocolViews` or :class:`EncodedFiles` items -> lists (the items differ in size):
    ``data`` (pieces or payloads), ``labels``, ``indices``, ``names``, and the skipped files'
    ``skipped`` reasons and ``skipped_indices``."""
    good, bad = split_items(batch)
    return {
        "data": [b.data for b in good],
        "labels": [b.label for b in good],
        "indices": [b.index for b in good],
        "names": [b.name for b in good],
        "skipped": [b.reason for b in bad],
        "skipped_indices": [b.index for b in bad],
    }


class EncodedFiles(torch.utils.data.Dataset):
    """What ``--decode device`` leaves to a loader worker: read the file and check its JPEG header
    (:func:`~inceptionv4.data.device_decode.read_encoded`). Items are an :class:`~inceptionv4.data.base.Item` of the
    payload (with the file's name), or a :class:`~inceptionv4.data.base.Skipped` for a file that cannot be read (batched by
    :func:`collate_items`)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        from .decode import DecodeError
        from .device_decode import read_encoded

        try:
            payload, _ = read_encoded(self.dataset, index)
        except DecodeError as err:
            return Skipped(index, str(err))
        return Item(payload, self.dataset.samples[index][1], index, name=self.dataset.name_of(index))


#: Where JPEGs are decoded and resampled: "workers" (PIL, the reference pixels: loader processes, or
#: the server's connection threads) or "device" (torchvision on the models' device, nvJPEG on a GPU).
DECODES = ("workers", "device")


def check_decode(decode: str) -> str:
    """``decode`` if it is one of :data:`DECODES`, else a ValueError that lists them."""
    if decode not in DECODES:
        raise ValueError(f"decode must be 'workers' or 'device', got {decode!r}")
    return decode


class DeviceViews:
    """The device's share of ``--decode device`` evaluation, on a :func:`collate_items` batch of
    :class:`EncodedFiles` items:
    decode the JPEGs at once (nvJPEG on CUDA), resample and cut each image's protocol views there
    (:func:`protocol_pieces` on tensors), normalise.

    Returns ``{"images": (N*V, 3, S, S) float32 on device, or None, "labels": (N,) int64,
    "indices", "skipped", "skipped_indices"}`` -- the batch form
    the trainer's validation reads; a file the device cannot decode after all joins the
    skipped ones. The
    views differ from PIL's by at most a couple of 8-bit levels (torchvision's tensor resize; the
    tests bound it), so the published protocols stay on ``--decode workers``, the default.
    """

    def __init__(self, pre: Preprocessing, crops: int, device: torch.device | str) -> None:
        check_crops(crops)
        self.pre, self.crops, self.device = pre, crops, torch.device(device)

    def __call__(self, batch: dict) -> dict:
        views, failed = self.views_of(batch["data"], batch["names"])
        keep = [i for i in range(len(batch["data"])) if i not in failed]
        return {
            "images": views,
            "labels": torch.tensor([batch["labels"][i] for i in keep], dtype=torch.long),
            "indices": [batch["indices"][i] for i in keep],
            "skipped": batch["skipped"] + list(failed.values()),
            "skipped_indices": batch["skipped_indices"] + [batch["indices"][i] for i in failed],
        }

    def views_of(self, payloads: list[torch.Tensor], names: list[str]) -> tuple[torch.Tensor | None, dict[int, str]]:
        """The normalised views of the payloads the device decodes, one image after the other (None
        if none), and for each position it cannot decode after all, why (named by ``names``)."""
        from .device_decode import decode_payloads

        decoded = decode_payloads(payloads, names, self.device)
        failed = {i: img for i, img in enumerate(decoded) if isinstance(img, str)}
        views = [
            cut_views(protocol_pieces(img, self.pre, self.crops)) for img in decoded if isinstance(img, torch.Tensor)
        ]
        return (normalize_views(torch.cat(views), self.pre) if views else None), failed


def cut_batch(pieces: list[ProtocolPieces], device: torch.device) -> torch.Tensor | None:
    """The views of several images' pieces, cut on ``device``, one image after the other."""
    return torch.cat([cut_views(p, device) for p in pieces]) if pieces else None

