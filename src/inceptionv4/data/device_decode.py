"""Decoding on the device: which files the device's batched JPEG decoder takes as they are, what
a loader worker sends it for each (the file's bytes, or pixels the CPU decoded), and the batch
decode itself (nvJPEG on CUDA, libjpeg-turbo through torchvision on a CPU). Training's
augmentation (:mod:`.device_augment`) and the crop protocols (:mod:`.views`) both decode here."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .datasets import ImageDataset
from .decode import DecodeError, check_size, decode_rgb, quiet_pil, read_bytes

log = logging.getLogger(__name__)

JPEG_SUFFIXES = (".jpg", ".jpeg")
_EXIF_ORIENTATION = 0x0112


def device_decodable(data: bytes) -> tuple[int, int] | None:
    """(height, width) if ``data`` is a JPEG the device decoder gives the same upright RGB for.

    From the header only (no pixels are decoded). ``None`` for anything else: another format,
    CMYK, an EXIF rotation, a file that does not end in the JPEG end marker (truncated), or a
    header PIL rejects -- the CPU decoder then produces the image or the precise error.
    """
    try:
        with quiet_pil("header"), Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG" or img.mode not in ("RGB", "L"):
                return None
            if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                return None
            width, height = img.size
    except Exception:  # noqa: BLE001 -- any header PIL cannot read goes to the CPU decoder, which says why
        return None
    try:
        check_size(width, height, "")
    except DecodeError:  # the CPU decoder says why
        return None
    if not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    return height, width


def read_encoded(base: ImageDataset, index: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(payload, (height, width)) of one sample: see :func:`read_encoded_file`; a dataset whose
    samples are pixels in memory (digits, synthetic) gives its pixels."""
    source = base.samples[index][0]
    if isinstance(source, (str, Path)):
        return read_encoded_file(source)
    if hasattr(base, "read_sample"):  # bytes held elsewhere (a shard): the same check as a file's
        data, name, jpeg = base.read_sample(index)
        return payload_of(data, name, jpeg=jpeg)
    img, _ = base.load(index)
    return pixels_of(img), (img.height, img.width)


def read_encoded_file(path: str | Path) -> tuple[torch.Tensor, tuple[int, int]]:
    """(payload, (height, width)) of one file: its bytes (1-D uint8) for a JPEG the device decodes
    as the CPU would, else the image decoded here (3, H, W); DecodeError if neither can."""
    path = Path(path)
    return payload_of(read_bytes(path), str(path), jpeg=path.suffix.lower() in JPEG_SUFFIXES)


def payload_of(data: bytes, name: str, *, jpeg: bool = True) -> tuple[torch.Tensor, tuple[int, int]]:
    """(payload, (height, width)) of an encoded image held in memory (an upload, a file's bytes):
    the bytes for a JPEG the device decodes as the CPU would, else the pixels decoded here;
    DecodeError (naming ``name``) if neither can. ``jpeg=False`` skips the JPEG check."""
    size = device_decodable(data) if jpeg else None
    if size is not None:
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), size
    img = decode_rgb(data, name)
    return pixels_of(img), (img.height, img.width)


def pixels_of(img: Image.Image) -> torch.Tensor:
    """An RGB image as the (3, H, W) uint8 payload the device takes for what it does not decode."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()  # (3, H, W)


def decode_payloads(payloads: list[torch.Tensor], names: list[str], device: torch.device) -> list[torch.Tensor | str]:
    """:func:`read_encoded` payloads -> (3, H, W) uint8 images on ``device``: the JPEGs in one
    batched call (nvJPEG on CUDA), one by one if the batch fails; for a file that fails, why (and a
    warning)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[torch.Tensor | str] = [  # the JPEGs' places are filled below
        p.to(device, non_blocking=True) if p.dim() == 3 else "" for p in payloads
    ]
    jpegs = [i for i, p in enumerate(payloads) if p.dim() == 1]
    if not jpegs:
        return out
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of TorchCodec
        warnings.filterwarnings("ignore", "The image decoding and encoding", DeprecationWarning)
        try:  # one call for the batch; it fails as a whole if one file is bad
            decoded = decode_jpeg([payloads[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = [_decode_one(payloads[i], names[i], decode_jpeg, ImageReadMode.RGB, device) for i in jpegs]
    for i, img in zip(jpegs, decoded, strict=True):
        out[i] = img
    return out


def _decode_one(payload: torch.Tensor, name: str, decode_jpeg, mode, device: torch.device) -> torch.Tensor | str:
    try:
        return decode_jpeg(payload, mode=mode, device=device)
    except RuntimeError:
        pass
    try:  # the device decoder refused it: the CPU decoder takes more, or says why not
        return pixels_of(decode_rgb(payload.numpy().tobytes(), name)).to(device)
    except DecodeError as err:
        log.warning("skipping %s", err)
        return str(err)
