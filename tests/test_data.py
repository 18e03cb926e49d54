"""Decoding every kind of real-world file, the datasets, and Inception preprocessing."""

import numpy as np
import pytest
import torch
from PIL import Image

from inceptionv4.data import (
    Augmented,
    DecodeError,
    Digits,
    ImageFolder,
    ListFile,
    Preprocessing,
    Synthetic,
    build_dataset,
    collate,
    decode_rgb,
    eval_transform,
    load_rgb,
    train_transform,
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


def _folder(tmp_path, n=3):
    for c, color in (("cat", (200, 0, 0)), ("dog", (0, 200, 0))):
        (tmp_path / c).mkdir(parents=True)
        for i in range(n):
            _save(Image.new("RGB", (40, 30), color), tmp_path / c / f"{i}.png")
    return tmp_path


def test_image_folder_skips_corrupt_files_and_counts_them(tmp_path):
    root = _folder(tmp_path / "data")
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "dog" / "readme.txt").write_text("ignored: not an image suffix")
    ds = ImageFolder(root)
    assert ds.classes == ["cat", "dog"] and len(ds) == 7
    aug = Augmented(ds, eval_transform(Preprocessing(input_size=32)))
    batch = collate([aug[i] for i in range(len(ds))])
    assert batch["images"].shape == (6, 3, 32, 32)
    assert batch["labels"].tolist() == [0, 0, 0, 1, 1, 1]
    assert len(batch["skipped"]) == 1 and "broken.jpg" in batch["skipped"][0]


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        ImageFolder(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no class folders"):
        ImageFolder(tmp_path / "empty")
    root = _folder(tmp_path / "data")
    (root / "runs" / "checkpoints").mkdir(parents=True)  # a run folder inside the data folder
    (root / "runs" / "metrics.jsonl").write_text("{}")
    with pytest.raises(ValueError, match=r"class folders without images: runs \(add images, or move them out of"):
        ImageFolder(root)


def test_class_folders_alone_are_split_by_name_not_by_seed(tmp_path):
    root = _folder(tmp_path / "data", n=20)
    train, val = (build_dataset("folder", s, root=root, seed=0, holdout=0.1) for s in ("train", "val"))
    assert (len(train), len(val)) == (36, 4) and train.classes == val.classes == ["cat", "dog"]
    assert sorted(val.targets) == [0, 0, 1, 1]  # 10% of each class
    names = {str(p) for p, _ in train.samples}
    assert not names & {str(p) for p, _ in val.samples}
    # the same images whatever the seed or the order they were listed in
    again = build_dataset("folder", "val", root=root, seed=7, holdout=0.1)
    assert again.samples == val.samples
    # without holdout (what `eval --data` does) the folder is taken whole
    assert len(build_dataset("folder", "val", root=root)) == 40
    one = _folder(tmp_path / "one", n=1)
    with pytest.raises(ValueError, match="too few images to hold out 10% for validation"):
        build_dataset("folder", "train", root=one, holdout=0.1)


def test_train_without_val_is_named(tmp_path):
    _folder(tmp_path / "data" / "train")
    with pytest.raises(ValueError, match=r"has train/ but no val/: add .*val/<class>/<image>"):
        build_dataset("folder", "val", root=tmp_path / "data")


def test_list_file(tmp_path):
    root = _folder(tmp_path)
    lst = tmp_path / "train.txt"
    lst.write_text("# path label\ncat/0.png cat\ndog/1.png dog\ncat/2.png 0\n")
    ds = ListFile(lst)
    assert ds.classes == ["cat", "dog"] and ds.targets == [0, 1, 0]
    assert ds.load(1)[0].getpixel((0, 0)) == (0, 200, 0)
    assert root.exists()


def test_digits_split_is_real_disjoint_and_deterministic():
    train, val = Digits("train", seed=0), Digits("val", seed=0)
    assert len(train) + len(val) == 1797 and len(val) == 359
    assert not set(train.ids) & set(val.ids)
    assert Digits("val", seed=0).ids == val.ids and Digits("val", seed=1).ids != val.ids
    assert sorted(set(val.targets)) == list(range(10))
    img, label = train.load(0)
    assert img.size == (8, 8) and img.mode == "RGB" and 0 <= label < 10


def test_synthetic_is_deterministic():
    a, b = Synthetic(8, 4, 32, seed=3), Synthetic(8, 4, 32, seed=3)
    assert np.array_equal(np.asarray(a.load(5)[0]), np.asarray(b.load(5)[0]))
    assert not np.array_equal(np.asarray(a.load(5)[0]), np.asarray(Synthetic(8, 4, 32, seed=4).load(5)[0]))
    assert [a.load(i)[1] for i in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]


def test_preprocessing_ranges_and_sizes():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8))
    pre = Preprocessing(input_size=75, crop_pct=0.875)
    assert pre.resize_size == 85
    x = eval_transform(pre)(img)
    assert x.shape == (3, 75, 75) and x.dtype == torch.float32
    assert -1.0 <= x.min() < -0.9 and 0.9 < x.max() <= 1.0  # [-1, 1], as the checkpoints expect
    y = train_transform(pre, color_jitter=0.2)(img)
    assert y.shape == (3, 75, 75)
    with pytest.raises(ValueError, match="interpolation"):
        Preprocessing(interpolation="lanczos9")


def test_augmentation_depends_only_on_seed_epoch_index():
    ds = Synthetic(4, 2, 48, seed=0)
    aug = Augmented(ds, train_transform(Preprocessing(input_size=32)), seed=7)
    first = aug[2][0]
    torch.manual_seed(123)  # the global RNG does not matter
    assert torch.equal(aug[2][0], first)
    aug.set_epoch(1)
    assert not torch.equal(aug[2][0], first)
