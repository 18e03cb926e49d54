"""Robust image decoding: every real-world file either becomes an RGB image or a clear reason.

Grayscale, CMYK, palette, RGBA (composited on white) and 16-bit images are converted; EXIF
orientation is applied; a decompression bomb is refused before its pixels are allocated.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Refuse images above this many pixels (a 16k x 16k photo): a decompression-bomb guard.
MAX_PIXELS = 16_384 * 16_384

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class DecodeError(ValueError):
    """A file that is not a usable image; the message names the file and the reason."""


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open ``path`` as an 8-bit RGB image, or raise :class:`DecodeError` saying why not."""
    return decode_rgb(read_bytes(path), str(path), max_pixels)


def read_bytes(path: str | Path) -> bytes:
    """The bytes of ``path``, or :class:`DecodeError` saying why not."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DecodeError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DecodeError(f"{path}: is a directory") from None
    except OSError as err:
        raise DecodeError(f"{path}: cannot be read ({err.strerror or err})") from None


def decode_rgb(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """:func:`load_rgb` for an image held in memory (an upload); errors name it ``name``."""
    if not data:
        raise DecodeError(f"{name}: empty (no bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source: io.BytesIO, name: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise DecodeError(f"{name}: {w}x{h} pixels is over the {max_pixels:,}-pixel limit")
                img.load()  # decode now: truncated files fail here, not later in a worker
                img = ImageOps.exif_transpose(img)
                return to_rgb(img)
    except UnidentifiedImageError:
        raise DecodeError(f"{name}: not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DecodeError(f"{name}: refused as a decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, DecodeError):
            raise
        raise DecodeError(f"{name}: corrupt or truncated image ({err})") from None


def image_rgb(img: Image.Image, name: str = "image") -> Image.Image:
    """:func:`load_rgb` for a PIL image a caller already holds: EXIF orientation applied, 8-bit RGB,
    or :class:`DecodeError` (an image opened lazily from a truncated file fails here)."""
    try:
        img.load()
        return to_rgb(ImageOps.exif_transpose(img))
    except (OSError, SyntaxError, ValueError) as err:
        raise DecodeError(f"{name}: corrupt or truncated image ({err})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (alpha composited on white, 16-bit scaled down)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode != "I" or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)).convert(
            "RGB"
        )
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
