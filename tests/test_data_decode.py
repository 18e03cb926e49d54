"""Decoding every kind of real-world file: modes, EXIF, damaged and hostile files, bytes like files."""

import numpy as np
import pytest
from PIL import Image

from inceptionv4.data import (
    DecodeError,
    decode_rgb,
    load_rgb,
)


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


@pytest.mark.parametrize(
    "mode, maker",
    [
        ("L", lambda: Image.new("L", (20, 10), 128)),
        ("CMYK", lambda: Image.new("CMYK", (20, 10), (0, 255, 255, 0))),
        ("P", lambda: Image.new("RGB", (20, 10), (255, 0, 0)).convert("P")),
        ("RGBA", lambda: Image.new("RGBA", (20, 10), (0, 0, 0, 0))),
        ("I;16", lambda: Image.fromarray(np.full((10, 20), 65535, np.uint16))),
    ],
)
def test_modes_become_rgb(tmp_path, mode, maker):
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = _save(maker(), tmp_path / f"x{suffix}")
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (20, 10)
    px = np.asarray(img)[5, 5]
    expected = {"L": (128, 128, 128), "P": (255, 0, 0), "RGBA": (255, 255, 255), "I;16": (255, 255, 255)}
    if mode in expected:
        assert tuple(int(v) for v in px) == expected[mode]
    else:
        assert px[0] > 200 and px[1] < 60  # CMYK cyan-free magenta+yellow = red


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (30, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = _save(img, tmp_path / "rot.jpg", exif=exif.tobytes())
    assert load_rgb(path).size == (10, 30)


def test_bad_files_get_a_reason(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    good = _save(Image.new("RGB", (64, 64), (10, 20, 30)), tmp_path / "good.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DecodeError, match="notes.jpg: not an image"):
        load_rgb(text)
    with pytest.raises(DecodeError, match="truncated.jpg: corrupt or truncated"):
        load_rgb(truncated)
    with pytest.raises(DecodeError, match="missing.png: no such file"):
        load_rgb(tmp_path / "missing.png")
    with pytest.raises(DecodeError, match="decompression bomb|pixel limit"):
        load_rgb(good, max_pixels=100)


def test_thin_images_are_refused_from_their_header_before_any_resize(tmp_path):
    """A 3 kB 1,000,000 x 1 PNG passed the pixel guard, and resizing its short side to the input
    made it 342,000,000 x 342 pixels (a MemoryError). Its header alone now refuses it, as does an
    in-memory image; a 32:1 panorama still decodes."""
    import os

    from inceptionv4.data.decode import MAX_ASPECT_RATIO, check_size, decode_rgb, image_rgb

    thin = _save(Image.new("RGB", (1_000_000, 1)), tmp_path / "thin.png")
    assert os.path.getsize(thin) < 5000
    with pytest.raises(DecodeError, match=r"thin.png: 1000000x1 is too thin to resize \(its sides differ more than 32:1\)"):
        load_rgb(thin)
    with pytest.raises(DecodeError, match="upload: 1x1000000 is too thin"):
        decode_rgb(_save(Image.new("L", (1, 1_000_000)), tmp_path / "tall.png").read_bytes())
    with pytest.raises(DecodeError, match="mine: 400x4 is too thin"):
        image_rgb(Image.new("RGB", (400, 4)), "mine")
    assert load_rgb(_save(Image.new("RGB", (32 * 20, 20)), tmp_path / "pano.png")).size == (640, 20)
    check_size(MAX_ASPECT_RATIO, 1, "ok")
    with pytest.raises(DecodeError):
        check_size(MAX_ASPECT_RATIO + 1, 1, "no")


def test_only_regular_files_of_bounded_size_are_read(tmp_path):
    """A FIFO hung the reader forever and a link to /dev/zero read until a MemoryError: both are
    now refused from fstat before a byte is read, as is a file over the size cap."""
    import os
    import threading

    from inceptionv4.data.decode import read_bytes

    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    result: list = []
    reader = threading.Thread(target=lambda: result.append(_reason(lambda: load_rgb(fifo))), daemon=True)
    reader.start()
    reader.join(5)
    assert result == ["fifo.png: not a regular file (a FIFO), not read"]
    assert _reason(lambda: load_rgb(tmp_path / "zero.png")) == "zero.png: not a regular file (a character device), not read"
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 2000)
    assert _reason(lambda: read_bytes(big, max_bytes=1000)) == "big.png: 2,000 bytes is over the 1,000-byte limit"
    assert _reason(lambda: load_rgb(tmp_path)).endswith(": is a directory")
    assert _reason(lambda: load_rgb("x" * 300 + ".png")).endswith("cannot be read (File name too long)")


def _reason(call) -> str:
    """The DecodeError message of ``call()``, its folder dropped."""
    with pytest.raises(DecodeError) as err:
        call()
    return str(err.value).rsplit("/", 1)[-1]


def test_bytes_decode_like_files(tmp_path):
    good = _save(Image.new("L", (40, 30), 77), tmp_path / "gray.png")
    img = decode_rgb(good.read_bytes(), "upload")
    assert img.mode == "RGB" and img.size == (40, 30) and img.getpixel((0, 0)) == (77, 77, 77)
    with pytest.raises(DecodeError, match="^upload: empty"):
        decode_rgb(b"", "upload")
    with pytest.raises(DecodeError, match="^images\\[1\\]: not an image"):
        decode_rgb(b"GIF89 no", "images[1]")
    with pytest.raises(DecodeError, match="^x: corrupt or truncated"):
        decode_rgb(good.read_bytes()[:60], "x")
    with pytest.raises(DecodeError, match="x: .*(decompression bomb|pixel limit)"):
        decode_rgb(good.read_bytes(), "x", max_pixels=100)
