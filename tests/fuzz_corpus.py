"""A corpus of malformed and odd image inputs, generated (nothing is downloaded): what
tests/test_fuzz.py runs through predict, eval and the server.

Each entry is a file written under the corpus folder and its expectation:
  "good"   a valid image, which must be answered, and answered as its clean copy is;
  "bad"    an input that must be refused with a reason (truncated, garbage, a bomb, too thin,
           a special file);
  "either" a mutation (a flipped byte) that may still decode; it must get an answer or a reason.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Entry:
    path: Path
    expect: str  # good | bad | either
    why: str
    special: bool = False  # not a regular file: not sent to the server


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _bases(rng: np.random.Generator) -> dict[str, bytes]:
    """Valid images in every format and mode decode_rgb converts, at sizes around 75-200 px."""
    rgb = Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    smooth = Image.fromarray(np.dstack([np.tile(np.linspace(0, 255, 160, dtype=np.uint8), (100, 1))] * 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    out = {
        "rgb.png": _encode(rgb, "PNG"),
        "rgb.jpg": _encode(smooth, "JPEG", quality=90),
        "progressive.jpg": _encode(smooth, "JPEG", progressive=True),
        "rotated.jpg": _encode(smooth, "JPEG", exif=exif.tobytes()),
        "gray.png": _encode(rgb.convert("L"), "PNG"),
        "palette.gif": _encode(rgb.convert("P"), "GIF"),
        "rgba.png": _encode(rgb.convert("RGBA"), "PNG"),
        "la.png": _encode(rgb.convert("LA"), "PNG"),
        "bilevel.bmp": _encode(rgb.convert("1"), "BMP"),
        "cmyk.jpg": _encode(smooth.convert("CMYK"), "JPEG"),
        "rgb.tif": _encode(rgb, "TIFF"),
        "deflate.tif": _encode(rgb, "TIFF", compression="tiff_deflate"),
        "rgb.webp": _encode(rgb, "WEBP", lossless=True),
        "gray16.png": _encode(Image.fromarray((rng.integers(0, 65535, (80, 80))).astype(np.uint16)), "PNG"),
        "tiny.png": _encode(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG"),
        "wide.png": _encode(Image.new("RGB", (32 * 10, 10), (200, 20, 20)), "PNG"),  # 32:1, the widest allowed
        "rgb.ppm": _encode(rgb, "PPM"),
    }
    return out


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_declaring(width: int, height: int, rows: bytes = b"") -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (a bomb or a thin shape), with little data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(rows, 9))
            + _png_chunk(b"IEND", b""))  # fmt: skip


def exif_jpeg(entries: list[tuple[int, int, bytes]], size=(60, 50), endian: bytes = b"II") -> bytes:
    """A valid ``size`` JPEG whose EXIF block is one IFD of ``entries`` (tag, TIFF type, 4 value
    bytes as stored), written byte by byte: PIL's own writer refuses the malformed ones."""
    fmt = "<" if endian == b"II" else ">"
    ifd = struct.pack(fmt + "H", len(entries))
    for tag, kind, value in entries:
        count = len(value.rstrip(b"\0")) + 1 if kind == 2 else 1
        ifd += struct.pack(fmt + "HHI", tag, kind, count) + value.ljust(4, b"\0")[:4]
    exif = b"Exif\0\0" + endian + struct.pack(fmt + "HI", 42, 8) + ifd + struct.pack(fmt + "I", 0)
    return _encode(Image.new("RGB", size, (200, 40, 40)), "JPEG", exif=exif)


def blp2(compression: int, encoding: int) -> bytes:
    """An 8x8 BLP2 texture header with the given compression and encoding, and 64 bytes of data."""
    head = b"BLP2" + struct.pack("<i", compression) + bytes([encoding, 0, 0, 0]) + struct.pack("<II", 8, 8)
    offsets = [len(head) + 128 + 1024] + [0] * 15
    return head + struct.pack("<16I", *offsets) + struct.pack("<16I", 64, *[0] * 15) + bytes(1024) + b"\1" * 64


def dds(pixel_flags: int) -> bytes:
    """An 8x8 DDS whose pixel format says ``pixel_flags`` (0x41: RGBA; 0, 0x200: unknown)."""
    header = bytearray(124)
    struct.pack_into("<IIIII", header, 0, 124, 0x1007, 8, 8, 32)
    struct.pack_into("<II4sIIIII", header, 72, 32, pixel_flags, bytes(4), 32, 0xFF0000, 0xFF00, 0xFF, 0xFF000000)
    return b"DDS " + bytes(header) + b"\1" * 256


def build(root: Path, seed: int = 0) -> list[Entry]:
    """Write the corpus under ``root`` and return its entries (at least 1,000)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    entries: list[Entry] = []

    def put(name: str | bytes, data: bytes, expect: str, why: str) -> None:
        path = Path(os.fsdecode(os.path.join(os.fsencode(root), os.fsencode(name))))
        path.write_bytes(data)
        entries.append(Entry(path, expect, why))

    bases = _bases(rng)
    for name, data in bases.items():
        put(f"good-{name}", data, "good", "valid")
    # truncations: the header cut short is refused; a body cut short may still decode (formats that
    # tolerate it are refused by load(), which reads every row)
    for name, data in bases.items():
        stem, ext = name.rsplit(".", 1)
        for i, cut in enumerate(sorted(set(np.linspace(0, len(data) - 2, 14).astype(int).tolist()))):
            put(f"trunc-{stem}-{i}.{ext}", data[:cut], "bad" if cut < 24 else "either", f"truncated at {cut}")
    # bit flips
    for name, data in bases.items():
        stem, ext = name.rsplit(".", 1)
        for i in range(36):
            flipped = bytearray(data)
            for at in rng.integers(0, len(data), size=int(rng.integers(1, 9))):
                flipped[at] ^= 1 << int(rng.integers(0, 8))
            put(f"flip-{stem}-{i}.{ext}", bytes(flipped), "either", "bit flips")
    # magic numbers followed by garbage, and things that are not images at all
    magics = {"png": b"\x89PNG\r\n\x1a\n", "jpg": b"\xff\xd8\xff\xe0", "gif": b"GIF89a", "bmp": b"BM",
              "tif": b"II*\x00", "webp": b"RIFF\x00\x00\x00\x00WEBP"}  # fmt: skip
    for ext, magic in magics.items():
        for i in range(25):
            put(f"garbage-{ext}-{i}.{ext}", magic + rng.bytes(int(rng.integers(0, 3000))), "bad", "magic then garbage")
    for i, (ext, data) in enumerate([("jpg", b"<html><body>404</body></html>"), ("png", b"just some text\n"),
                                     ("jpg", b"PK\x03\x04" + bytes(100)), ("png", b"\x00" * 4096),
                                     ("jpg", b""), ("webp", "\u00e9t\u00e9".encode())]):  # fmt: skip
        put(f"notimage-{i}.{ext}", data, "bad", "not an image")
    # EXIF blocks PIL reads but cannot rewrite, or cannot read: the pixels are answered, turned as
    # the orientation says where it can be read; then random damage inside a real EXIF block
    ascii_length = [(0x0101, 2, b"abc"), (0x0112, 3, struct.pack("<H", 6))]
    put("exif-length-ascii.jpg", exif_jpeg(ascii_length), "good", "ImageLength typed ASCII, orientation 6")
    put("exif-bad-type.jpg", exif_jpeg([(0x0112, 99, b"\6\0")]), "good", "orientation of an unknown type")
    put("exif-orientation-9.jpg", exif_jpeg([(0x0112, 3, b"\x09\0")]), "good", "orientation 9")
    put("exif-big-endian.jpg", exif_jpeg([(0x0112, 3, b"\0\x08"), (0x0100, 2, b"x")], endian=b"MM"), "good",
        "big-endian, ImageWidth typed ASCII")  # fmt: skip
    rotated = bases["rotated.jpg"]
    start = rotated.index(b"Exif\0\0")
    for i in range(40):
        damaged = bytearray(rotated)
        for at in rng.integers(start + 6, start + 6 + 40, size=int(rng.integers(1, 6))):
            damaged[at] = int(rng.integers(0, 256))
        put(f"exif-damaged-{i}.jpg", bytes(damaged), "either", "EXIF block damaged")
    # the exotic formats PIL opens, named as images (PIL goes by the content): textures whose
    # decoders raise their own exception types, and other formats' magic numbers then garbage
    for i, (compression, encoding) in enumerate([(1, 0), (0, 0), (7, 0), (1, 5)]):
        put(f"texture-blp-{i}.png", blp2(compression, encoding), "bad", "BLP of an unknown compression or encoding")
    for i, flags in enumerate([0, 0x200, 0x80000]):
        put(f"texture-dds-{i}.png", dds(flags), "bad", "DDS of unknown pixel-format flags")
    for name, magic in {"icns": b"icns", "psd": b"8BPS", "fits": b"SIMPLE  =", "sgi": b"\x01\xda", "pcx": b"\x0a\x05",
                        "ico": b"\0\0\1\0", "blp": b"BLP1", "dds": b"DDS |", "ftex": b"FTEX", "qoi": b"qoif"}.items():  # fmt: skip
        for i in range(6):
            put(f"exotic-{name}-{i}.jpg", magic + rng.bytes(int(rng.integers(8, 600))), "either", "exotic magic")
    # bombs and thin shapes, declared in a header with almost no data
    for i, (w, h) in enumerate([(100_000, 100_000), (2**31 - 1, 2), (65_535, 65_535), (30_000, 30_000)]):
        put(f"bomb-{i}.png", _png_declaring(w, h), "bad", "decompression bomb")
    for i, (w, h) in enumerate([(1_000_000, 1), (1, 1_000_000), (100_000, 3), (5000, 2), (33 * 40, 40)]):
        put(f"thin-{i}.png", _encode(Image.new("L", (w, h)), "PNG"), "bad", "too thin")
    put("big-valid.png", _encode(Image.new("RGB", (6000, 4000), (30, 200, 30)), "PNG"), "good", "large")
    # hostile names, valid content
    good = bases["rgb.png"]
    for i, name in enumerate([b"new\nline.png", b"esc\x1b[31mred.png", b"bad\xff\xfeutf8.png", b"tab\there.png",
                              "caf\u00e9 \u65e5\u672c.png".encode(), b"-starts-with-dash.png", b" spaced .png",
                              b"x" * 240 + b".png", b"quote'\"back\\slash.png", b"del\x7f.png"]):  # fmt: skip
        put(name, good, "good", f"hostile name {i}")
    # special files
    specials = root / "specials"
    specials.mkdir()
    fifo = specials / "fifo.png"
    os.mkfifo(fifo)
    (specials / "zero.png").symlink_to("/dev/zero")
    (specials / "dangling.png").symlink_to(specials / "nowhere.png")
    (specials / "loop.png").symlink_to(specials / "loop.png")
    (specials / "dir.png").mkdir()
    for path, why in ((fifo, "FIFO"), (specials / "zero.png", "/dev/zero"), (specials / "dangling.png", "dangling link"),
                      (specials / "loop.png", "link loop"), (specials / "dir.png", "a folder named .png")):  # fmt: skip
        entries.append(Entry(path, "bad", why, special=True))
    return entries
