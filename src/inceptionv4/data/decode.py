"""Robust image decoding: every real-world file either becomes an RGB image or a clear reason.

Grayscale, CMYK, palette, RGBA (composited on white) and 16-bit images are converted; EXIF
orientation is applied. Given the side the caller will resize to (``reduce_to``), a JPEG at least
twice that size is decoded reduced in the DCT domain (libjpeg's scaled decoding, by 1/2, 1/4 or
1/8). Before any pixel is allocated, a decompression bomb, an image too thin to resize (its short side scaled to the network's input makes the long side unbounded) and anything
that is not a regular file of bounded size (a FIFO, a device, /dev/zero behind a link) are refused.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..files import file_kind

log = logging.getLogger(__name__)

#: Refuse images above this many pixels (about 13,377 x 13,377): PIL's own hard limit (twice the
#: 89.5-megapixel threshold at which it warns), which it enforces while reading the header anyway.
MAX_PIXELS = 178_956_970

#: Refuse an image whose decoding would take more memory than this (:func:`decode_memory`, from
#: its header, before a pixel is decoded): a 179-megapixel RGB image fits, a 9000 x 9000 palette
#: PNG composited through RGBA (1.2 GB) no longer needs to.
MAX_DECODE_BYTES = 2 * 2**30

#: Bytes a pixel takes at the peak of decoding an image of each mode and making it RGB: the decoded
#: image, its EXIF-turned copy, and what :func:`to_rgb` makes of it (intermediates included).
#: Each at or above what benchmarks/decode_memory.py measures (benchmarks/RESULTS.md).
_PEAK_BYTES = {"1": 6, "L": 6, "P": 6, "RGB": 6, "YCbCr": 9, "LAB": 9, "HSV": 9, "CMYK": 11, "LA": 12, "PA": 12,
               "RGBA": 11, "I;16": 12, "I;16B": 12, "I;16L": 12, "I": 16, "F": 16}  # fmt: skip

#: Refuse images whose long side is more than this many times the short side: resizing the short
#: side to the input size multiplies the long side by as much (a 1,000,000 x 1 PNG of 3 kB became
#: 342,000,000 x 342 pixels). Panoramas stay well inside it.
MAX_ASPECT_RATIO = 32

#: Refuse files larger than this (an uncompressed 8k x 8k RGB TIFF is 201 MB).
MAX_FILE_BYTES = 256 * 2**20

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class DecodeError(ValueError):
    """A file that is not a usable image; the message names the file and the reason."""


class _ReducedDecodeError(DecodeError):
    """A reduced (DCT-scaled) decode failed after the header passed: the full decode is tried."""


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS, *, reduce_to: int | None = None) -> Image.Image:
    """Open ``path`` as an 8-bit RGB image, or raise :class:`DecodeError` saying why not.

    ``reduce_to``: the shorter side the caller resizes the image to next. A JPEG whose shorter side
    is at least twice that is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps the
    shorter side at or above it; any other file, or None, decodes at full size (the exact pixels,
    for reproducing published accuracy). A reduced decode that fails is retried at full size."""
    return decode_rgb(read_bytes(path), str(path), max_pixels, reduce_to=reduce_to)


def read_bytes(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (at most ``max_bytes``), or :class:`DecodeError` saying
    why not. The file is opened without blocking and examined before it is read, so a FIFO never
    hangs the caller and a device (/dev/zero, also behind a link) is never read."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DecodeError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DecodeError(f"{path}: is a directory") from None
    except (OSError, ValueError) as err:  # ValueError: an embedded NUL
        raise DecodeError(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise DecodeError(f"{path}: is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise DecodeError(f"{path}: not a regular file ({file_kind(info.st_mode)}), not read")
        if info.st_size > max_bytes:
            raise DecodeError(f"{path}: {info.st_size:,} bytes is over the {max_bytes:,}-byte limit")
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = -1
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:  # it grew while we read
            raise DecodeError(f"{path}: over the {max_bytes:,}-byte limit")
        return data
    except OSError as err:
        raise DecodeError(f"{path}: cannot be read ({err.strerror or err})") from None
    finally:
        if fd >= 0:
            os.close(fd)


def check_size(width: int, height: int, name: str, max_pixels: int = MAX_PIXELS) -> None:
    """Raise :class:`DecodeError` for an image too large or too thin to decode and resize, from its
    header's size alone."""
    if width * height > max_pixels:
        raise DecodeError(f"{name}: {width}x{height} pixels is over the {max_pixels:,}-pixel limit")
    if max(width, height) > MAX_ASPECT_RATIO * max(1, min(width, height)) or min(width, height) < 1:
        raise DecodeError(f"{name}: {width}x{height} is too thin to resize (its sides differ more than "
                          f"{MAX_ASPECT_RATIO}:1)")  # fmt: skip


def decode_memory(width: int, height: int, mode: str) -> int:
    """The bytes decoding a ``width`` x ``height`` image PIL reads in ``mode`` takes at its peak,
    up to the RGB image: what the per-image limit and the server's decoding budget are charged."""
    return width * height * _PEAK_BYTES.get(mode, 16)


def decode_cost(data: bytes, reduce_to: int | None = None) -> int:
    """:func:`decode_memory` of an encoded image, from its header alone (a JPEG at the DCT scale
    :func:`decode_rgb` would use for ``reduce_to``); 0 for bytes that are no image, which the
    decode itself then refuses with the reason."""
    try:
        with quiet_pil("upload"), Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            scale = draft_scale(width, height, max(1, reduce_to)) if reduce_to and img.format == "JPEG" else 1
            return decode_memory(-(-width // scale), -(-height // scale), img.mode)
    except Exception:  # noqa: BLE001 -- any header PIL cannot read: the decode says why
        return 0


def decode_rgb(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS, *,
               reduce_to: int | None = None) -> Image.Image:  # fmt: skip
    """:func:`load_rgb` for an image held in memory (an upload); errors name it ``name``."""
    if not data:
        raise DecodeError(f"{name}: empty (no bytes)")
    if reduce_to is not None:
        try:
            return _decode(io.BytesIO(data), name, max_pixels, reduce_to)
        except _ReducedDecodeError as err:  # any other refusal the full decode would give alike
            log.debug("%s: reduced decoding failed (%s); decoding at full size", name, err)
    return _decode(io.BytesIO(data), name, max_pixels)


def draft_scale(width: int, height: int, reduce_to: int) -> int:
    """The DCT scale denominator (1, 2, 4 or 8) a ``width`` x ``height`` JPEG is decoded at for a
    view whose shorter side is ``reduce_to``: the largest that keeps the shorter side >= it."""
    short = min(width, height)
    for scale in (8, 4, 2):
        if short >= scale * reduce_to:
            return scale
    return 1


def _decode(source: io.BytesIO, name: str, max_pixels: int, reduce_to: int | None = None) -> Image.Image:
    reduced = False
    try:
        with quiet_pil(name):
            with Image.open(source) as img:
                check_size(*img.size, name, max_pixels)
                if reduce_to is not None and img.format == "JPEG":
                    scale = draft_scale(*img.size, max(1, reduce_to))
                    if scale > 1:
                        reduced = True  # from here on, a failure is retried at full size
                        # PIL picks the largest scale with both sides >= the size asked: ask for exactly 1/scale
                        img.draft(None, (img.size[0] // scale, img.size[1] // scale))
                need = decode_memory(*img.size, img.mode)
                if need > MAX_DECODE_BYTES:
                    raise DecodeError(f"{name}: decoding {img.size[0]}x{img.size[1]} {img.mode} pixels would take "
                                      f"{need / 2**20:,.0f} MB, over the {MAX_DECODE_BYTES / 2**20:,.0f} MB limit")  # fmt: skip
                img.load()  # decode now: truncated files fail here, not later in a worker
                return to_rgb(oriented(img, name))
    except UnidentifiedImageError:
        raise DecodeError(f"{name}: not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DecodeError(f"{name}: refused as a decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, DecodeError):
            raise
        raise (_ReducedDecodeError if reduced else DecodeError)(f"{name}: corrupt or truncated image ({err})") from None
    except Exception as err:  # noqa: BLE001 -- a format plugin's own failure (BLPFormatError, struct.error, ...)
        raise DecodeError(f"{name}: cannot be decoded ({type(err).__name__}: {err})") from None


def _silence_libtiff() -> None:
    """Turn off libtiff's own messages, which it prints to stderr naming no file (a damaged
    compressed TIFF printed "ZIPDecode: Decoding error at scanline 0" beside our error line for
    it, 36 lines for a 1,000-file corpus). PIL still raises for the file, which gets its reason.
    Where PIL's libtiff cannot be found (no /proc, another build) nothing changes."""
    import ctypes

    try:
        from PIL import _imaging  # noqa: F401 -- loads the libtiff PIL links

        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "/libtiff" in line and ".so" in line}
        for path in paths:
            lib = ctypes.CDLL(path)
            for setter in ("TIFFSetErrorHandler", "TIFFSetWarningHandler"):
                fn = getattr(lib, setter)
                fn.restype, fn.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
                fn(None)
    except (OSError, AttributeError, ImportError):
        pass


_silence_libtiff()


@contextlib.contextmanager
def quiet_pil(name: str) -> Iterator[None]:
    """Decode ``name`` with PIL's warnings (corrupt EXIF data, odd palettes, its 89.5-megapixel
    notice) logged at debug level with the file they concern, instead of printed to stderr without
    it. What is too large is refused by :data:`MAX_PIXELS` and :data:`MAX_DECODE_BYTES` instead."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # PIL's bomb warning included: MAX_PIXELS and the memory limit decide
        yield
    for w in caught:
        log.debug("%s: %s", name, str(w.message).strip())


def image_rgb(img: Image.Image, name: str = "image") -> Image.Image:
    """:func:`load_rgb` for a PIL image a caller already holds: EXIF orientation applied, 8-bit RGB,
    or :class:`DecodeError` (an image opened lazily from a truncated file, or one too thin to
    resize, fails here)."""
    check_size(*img.size, name, max_pixels=2**62)  # its pixels are the caller's already
    try:
        with quiet_pil(name):
            img.load()
            return to_rgb(oriented(img, name))
    except (OSError, SyntaxError, ValueError) as err:
        raise DecodeError(f"{name}: corrupt or truncated image ({err})") from None
    except Exception as err:  # noqa: BLE001 -- a format plugin's own failure
        raise DecodeError(f"{name}: cannot be decoded ({type(err).__name__}: {err})") from None


#: EXIF orientation (1-8) -> the transpose that shows the image upright (EXIF 2.32, tag 0x0112)
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}  # fmt: skip


def oriented(img: Image.Image, name: str = "image") -> Image.Image:
    """``img`` turned upright as its EXIF orientation says. Only the pixels are transposed: PIL's
    ``ImageOps.exif_transpose`` also rewrites the EXIF block, which fails on a malformed one (an
    ImageLength typed ASCII raised struct.error) though the orientation itself reads fine. An EXIF
    block that cannot be read at all leaves the pixels as stored, with a warning naming the file."""
    try:
        orientation = img.getexif().get(0x0112)
    except Exception as err:  # noqa: BLE001 -- any damage in the EXIF block
        log.warning("%s: EXIF block unreadable (%s: %s); the image is used as stored, unrotated",
                    name, type(err).__name__, err)  # fmt: skip
        return img
    method = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return img.transpose(method) if method is not None else img


def _palette_on_white(img: Image.Image) -> Image.Image:
    """A palette image whose transparent entries are composited on white in the palette itself
    (256 colours, not 81 million pixels), so it converts straight to RGB: what compositing each
    pixel through RGBA gives, without the three full-size RGBA copies that cost a 9000 x 9000
    palette PNG 1.2 GB."""
    transparency = img.info.get("transparency")
    if transparency is None:
        return img
    palette = img.getpalette("RGB") or []
    n = len(palette) // 3
    alpha = [255] * n
    if isinstance(transparency, int) and 0 <= transparency < n:
        alpha[transparency] = 0
    elif isinstance(transparency, bytes):
        alpha[: len(transparency[:n])] = list(transparency[:n])
    on_white = [(c * a + 255 * (255 - a) + 127) // 255 for i, c in enumerate(palette[: 3 * n]) for a in (alpha[i // 3],)]
    img = img.copy() if img.readonly else img
    img.putpalette(on_white, "RGB")
    img.info.pop("transparency", None)
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (alpha composited on white, 16-bit scaled down)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)  # 4 bytes a pixel: a 16k x 16k scan stays near 1 GB
        top = 65535.0 if img.mode != "I" or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr * np.float32(255.0 / top) + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        return Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)).convert(
            "RGB"
        )
    if img.mode == "P" and img.palette is not None and img.palette.mode == "RGB":
        return _palette_on_white(img).convert("RGB")  # 4 bytes a pixel at the peak, not 15
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):  # on white: what alpha_composite gives, without two more RGBA copies
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def images_under(folder: str | os.PathLike) -> list[tuple[str, str | None]]:
    """The image files (by :data:`IMAGE_SUFFIXES`) in ``folder`` and below, sorted, each as
    ``(path, None)``; a subfolder that cannot be listed is ``(its path, why)``, not passed over
    in silence."""
    found: list[tuple[str, str | None]] = []

    def unlisted(err: OSError) -> None:
        found.append((err.filename or str(folder), f"folder cannot be listed ({err.strerror or err}); skipped"))

    for root, _, names in os.walk(folder, onerror=unlisted):
        found += [(str(Path(root, n)), None) for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found, key=lambda entry: entry[0])

