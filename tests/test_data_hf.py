"""Hugging Face datasets saved on this machine: found columns, a few training steps, clear errors."""

import io

import numpy as np
import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

from inceptionv4.data import build_dataset  # noqa: E402
from inceptionv4.data.hf import HFDataset  # noqa: E402

NAMES = ["red", "green", "blue"]


def _images(n: int, seed: int) -> tuple[list[Image.Image], list[int]]:
    rng = np.random.default_rng(seed)
    colours = ((220, 30, 30), (30, 220, 30), (30, 30, 220))
    images, labels = [], []
    for i in range(n):
        c = i % 3
        px = np.clip(np.array(colours[c]) + rng.normal(0, 25, (80, 90, 3)), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(px))
        labels.append(c)
    return images, labels


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A DatasetDict (train, validation) with Image and ClassLabel features, saved with save_to_disk."""
    root = tmp_path_factory.mktemp("hf")
    features = datasets.Features({"picture": datasets.Image(), "kind": datasets.ClassLabel(names=NAMES)})
    splits = {}
    for split, n, seed in (("train", 24, 0), ("validation", 9, 1)):
        images, labels = _images(n, seed)
        splits[split] = datasets.Dataset.from_dict({"picture": images, "kind": labels}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(root / "dict"))
    return root


def test_columns_are_found_from_the_features_and_images_decode_as_files(saved):
    train = HFDataset(saved / "dict", "train")
    val = build_dataset("hf", "val", root=str(saved / "dict"), classes=train.classes)
    assert (train.image_column, train.label_column) == ("picture", "kind")
    assert train.classes == NAMES and len(train) == 24 and len(val) == 9
    img, label = train.load(4)
    assert img.mode == "RGB" and img.size == (90, 80) and label == 1
    assert val.where.endswith("[validation]")


def test_a_saved_dataset_trains_for_a_few_steps(saved, tmp_path):
    from inceptionv4.train import train

    summary = train(model="inception_resnet_v1", dataset="hf", data=str(saved / "dict"), input_size=75, batch_size=8,
                    max_steps=3, workers=0, progress=False, plots=False, recipe="finetune", from_scratch=True,
                    out_dir=str(tmp_path / "run"))  # fmt: skip
    assert summary["status"] == "finished" and summary["steps"] == 3
    assert summary["classes"] == NAMES and (summary["train_images"], summary["val_images"]) == (24, 9)


def test_parquet_files_with_plain_columns_and_bad_input(tmp_path):
    images, labels = _images(6, 2)
    raw = []
    for img in images:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        raw.append(buf.getvalue())
    raw[2] = b"not an image"
    plain = datasets.Dataset.from_dict({"img": [{"bytes": b, "path": None} for b in raw],
                                        "labels": [NAMES[c] for c in labels], "note": ["x"] * 6},
                                       features=datasets.Features({"img": datasets.Image(),
                                                                   "labels": datasets.Value("string"),
                                                                   "note": datasets.Value("string")}))  # fmt: skip
    plain.to_parquet(str(tmp_path / "part.parquet"))
    ds = HFDataset(tmp_path / "part.parquet")
    assert ds.classes == sorted(NAMES) and ds.samples[0][1] == sorted(NAMES).index("red")
    from inceptionv4.data.decode import DecodeError

    with pytest.raises(DecodeError, match=r"part.parquet#2: not an image"):
        ds.load(2)
    nolabel = datasets.Dataset.from_dict({"img": raw[:2], "note": ["a", "b"]})
    nolabel.to_parquet(str(tmp_path / "nolabel.parquet"))
    with pytest.raises(ValueError, match=r"has no label column \(columns: img, note\): give label_column"):
        HFDataset(tmp_path / "nolabel.parquet")
    with pytest.raises(ValueError, match=r"has no column 'lab'"):
        HFDataset(tmp_path / "part.parquet", label_column="lab")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        HFDataset("imagenet-1k")


def test_a_validation_split_of_other_class_numbering_is_mapped_by_name(tmp_path):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["blue", "red"])})
    images, _ = _images(4, 3)
    datasets.Dataset.from_dict({"image": images, "label": [0, 1, 1, 0]}, features=features).save_to_disk(str(tmp_path / "v"))
    val = HFDataset(tmp_path / "v", "val", classes=NAMES)  # red, green, blue
    assert [label for _, label in val.samples] == [2, 0, 0, 2]
    with pytest.raises(ValueError, match=r"labels \['blue'\] are not among the classes"):
        HFDataset(tmp_path / "v", classes=["red", "green"])


@pytest.mark.parametrize("labels, message", [([0, 1, -1], "label -1 is not one of the 3 classes"),
                                             ([0, 1, 10**9], "label 1000000000 is not a class index below 100,000")])
def test_labels_that_are_not_class_indices_are_one_error(tmp_path, labels, message):
    """An HF label of 1e9 or -1 (the datasets' "no label") ran out of memory or was read as the
    last class (issue 34)."""
    images, _ = _images(3, 0)
    if labels[-1] == -1:
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    else:
        features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError, match=message):
        HFDataset(tmp_path / "d", "train")
