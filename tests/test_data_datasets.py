"""The datasets: folders (corrupt files skipped and counted), list files, digits, synthetic."""

import numpy as np
import pytest
from PIL import Image

from inceptionv4.data import (
    Augmented,
    Digits,
    ImageFolder,
    ListFile,
    Preprocessing,
    Synthetic,
    build_dataset,
    collate,
    eval_transform,
)


def _folder(tmp_path, n=3):
    for c, color in (("cat", (200, 0, 0)), ("dog", (0, 200, 0))):
        (tmp_path / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (40, 30), color).save(tmp_path / c / f"{i}.png")
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


def test_labels_that_are_not_class_indices_are_one_error_before_anything_is_built(tmp_path):
    """A list-file label of 1,000,000,000 made a class list that long (issue 34)."""
    from inceptionv4.data.datasets import ListFile

    listing = tmp_path / "l.txt"
    listing.write_text("a.jpg 0\nb.jpg 1000000000\n")
    with pytest.raises(ValueError, match=r"l.txt: label 1000000000 is not a class index below 100,000"):
        ListFile(listing)
    listing.write_text("a.jpg 0\nb.jpg 5\n")
    with pytest.raises(ValueError, match=r"l.txt: label 5 is not one of the 3 classes"):
        ListFile(listing, classes=["x", "y", "z"])
    assert len(ListFile(listing).classes) == 6  # integer labels alone number the classes
