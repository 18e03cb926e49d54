"""Hugging Face datasets saved on this machine: a folder written by ``save_to_disk``, or parquet
files (a file, a folder of them, a glob). Nothing is downloaded: a hub name is refused.

The image and label columns are found from the features (an ``Image`` column, a ``ClassLabel``
column) or by their usual names, or given. Images are decoded by this library's decoder, so a
corrupt one is skipped and counted as a corrupt file is.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from PIL import Image

from .datasets import ImageDataset, check_labels
from .decode import DecodeError, decode_rgb, image_rgb

#: The split names taken for each of ours, in order, from a saved DatasetDict.
SPLITS = {"train": ("train",), "val": ("validation", "val", "valid", "test")}


def _open(path: str, split: str):
    """The Dataset at ``path`` for ``split``: a save_to_disk folder (a Dataset, or a DatasetDict's
    split) or parquet files."""
    try:
        import datasets
    except ImportError:
        raise ImportError("dataset 'hf' needs Hugging Face datasets: pip install 'inceptionv4[hf]'") from None
    p = Path(path)
    parquet = sorted(glob.glob(os.path.join(path, "*.parquet"))) if p.is_dir() else sorted(glob.glob(path))
    if p.is_dir() and ((p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file()):
        loaded = datasets.load_from_disk(str(p))
        if isinstance(loaded, datasets.DatasetDict):
            name = next((s for s in SPLITS[split] if s in loaded), None)
            if name is None:
                raise ValueError(f"{path} has splits {', '.join(loaded)}, none of {', '.join(SPLITS[split])}: "
                                 f"give the {split} split's folder{' as val_data' if split == 'val' else ''}")  # fmt: skip
            return loaded[name], f"{path}[{name}]"
        return loaded, path
    if parquet and all(f.endswith(".parquet") for f in parquet):
        return datasets.Dataset.from_parquet(parquet), path
    if not p.exists() and not parquet:
        raise FileNotFoundError(f"no such dataset: {path} (a folder written by save_to_disk, or parquet files; "
                                "nothing is downloaded)")  # fmt: skip
    raise ValueError(f"{path} is neither a folder written by save_to_disk nor parquet files")


class HFDataset(ImageDataset):
    """One split of a saved Hugging Face dataset as ``load(i) -> (PIL image, label)``."""

    def __init__(self, path: str | os.PathLike, split: str = "train", *, image_column: str | None = None,
                 label_column: str | None = None, classes: list[str] | None = None,
                 labelled: bool = True) -> None:  # fmt: skip
        """``labelled=False`` (inference: embed, predict) reads a split with no label column, every
        row labelled -1."""
        import datasets

        ds, self.where = _open(os.fspath(path), split)
        features = ds.features
        self.image_column = image_column or next(
            (c for c, f in features.items() if isinstance(f, datasets.Image)),
            next((c for c in ("image", "img") if c in features), None))  # fmt: skip
        self.label_column = label_column or next(
            (c for c, f in features.items() if isinstance(f, datasets.ClassLabel)),
            next((c for c in ("label", "labels") if c in features), None))  # fmt: skip
        columns = ", ".join(features)
        wanted = [("image", self.image_column, "image_column")]
        if labelled or label_column is not None:
            wanted.append(("label", self.label_column, "label_column"))
        for what, column, flag in wanted:
            if column is None:
                raise ValueError(f"{self.where} has no {what} column (columns: {columns}): give {flag}")
            if column not in features:
                raise ValueError(f"{self.where} has no column {column!r} (columns: {columns})")
        if isinstance(features[self.image_column], datasets.Image):  # bytes, decoded by our decoder
            ds = ds.cast_column(self.image_column, datasets.Image(decode=False))
        if self.label_column is None:  # labelled=False, and no label column found
            self.ds, self.classes = ds, list(classes or [])
            self.samples = [(i, -1) for i in range(len(ds))]
            if not self.samples:
                raise ValueError(f"{self.where} holds no rows")
            return
        label_feature = features[self.label_column]
        raw = ds[self.label_column]
        if isinstance(label_feature, datasets.ClassLabel):
            found = list(label_feature.names)
            check_labels([int(v) for v in raw], self.where, len(found))  # -1 is the datasets' "no label"
            labels = [found[int(v)] for v in raw] if classes is not None else [int(v) for v in raw]  # by name
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
            check_labels(list(raw), self.where, len(classes) if classes is not None else None)
            found = [str(c) for c in range(max(raw) + 1)] if raw else []
            labels = list(raw)
        else:
            found = sorted({str(v) for v in raw})
            labels = [str(v) for v in raw]
        self.classes = list(classes) if classes is not None else found
        index = {c: i for i, c in enumerate(self.classes)}
        if labels and isinstance(labels[0], str):
            unknown = sorted(set(labels) - set(index))
            if unknown:
                raise ValueError(f"{self.where}: labels {unknown[:3]} are not among the classes {self.classes[:5]}")
            labels = [index[v] for v in labels]
        if not labels:
            raise ValueError(f"{self.where} holds no rows")
        self.ds = ds
        self.samples = [(i, label) for i, label in enumerate(labels)]

    def load(self, index: int, reduce_to: int | None = None) -> tuple[Image.Image, int]:
        value = self.ds[index][self.image_column]
        name = self.name_of(index)
        if isinstance(value, Image.Image):
            return image_rgb(value, name), self.samples[index][1]
        if isinstance(value, dict) and value.get("bytes"):
            return decode_rgb(value["bytes"], name, reduce_to=reduce_to), self.samples[index][1]
        if isinstance(value, dict) and value.get("path"):
            from .decode import load_rgb

            return load_rgb(value["path"], reduce_to=reduce_to), self.samples[index][1]
        if isinstance(value, bytes):
            return decode_rgb(value, name, reduce_to=reduce_to), self.samples[index][1]
        raise DecodeError(f"{name}: no image in column {self.image_column!r}")

    def name_of(self, index: int) -> str:
        return f"{self.where}#{index}"
