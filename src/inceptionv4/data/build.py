"""Building datasets by kind, and the splits a training run used: the factory above every dataset
module (folders, list files, digits, synthetic, WebDataset shards, Hugging Face), so that none of
them imports another's factory."""

from __future__ import annotations

from pathlib import Path

from .datasets import Digits, ImageDataset, ImageFolder, ListFile, Synthetic, holdout_split


def write_list(dataset: ImageDataset, path: str | Path, comment: str = "") -> Path:
    """Write ``dataset``'s files as a list file :class:`ListFile` reads back: one ``<absolute path>
    <TAB> <class name>`` line per image, after ``comment`` as ``#`` lines. How a run keeps the
    images it held out, so that ``eval --run`` scores those and no others."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f"{Path(str(p)).resolve()}\t{dataset.classes[label]}" for p, label in dataset.samples]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def split_root(kind: str, split: str, data: str | None, val_data: str | None) -> str | None:
    """Where a run's ``split`` ("train" or "val") of a ``kind`` dataset is read from: a list file's
    or shards' validation comes from ``val_data`` (an HF dataset's too, when given), everything
    else from ``data`` (a folder's val/ is found inside it)."""
    if split == "val" and (kind in ("list", "wds") or (kind == "hf" and val_data)):
        return val_data
    return data


def run_split(run_dir: str | Path, split: str = "val") -> tuple[ImageDataset, str]:
    """The ``split`` ("val" or "train") a training run in ``run_dir`` used, and a line saying which
    images those are (for eval's report). A folder the run held images out of was recorded by the
    run as ``splits/<split>.txt``: exactly those images. Otherwise the run's ``config.yaml`` says
    where the split is read from."""
    import yaml

    run_dir = Path(run_dir)
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run's folder (no config.yaml)")
    r = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    listed = run_dir / "splits" / f"{split}.txt"
    if listed.is_file():
        dataset = ListFile(listed)
        return dataset, f"the {len(dataset)} {split} images of run {run_dir} held out from {r.get('data')} ({listed})"
    kind = r.get("dataset")
    if kind == "wds":
        raise ValueError(f"run {run_dir} read WebDataset shards: give eval --data or --list for the images to score")
    root = split_root(kind, split, r.get("data"), r.get("val_data"))
    columns = {"image_column": r.get("image_column"), "label_column": r.get("label_column")} if kind == "hf" else {}
    dataset = build_dataset(kind, split, root=root, seed=r.get("seed", 0), **columns)
    where = f" from {root}" if root else ""
    return dataset, f"the {len(dataset)} {split} images of run {run_dir} ({kind}{where})"


#: The kinds :func:`build_dataset` builds.
DATASET_KINDS = ("digits", "synthetic", "folder", "list", "wds", "hf")


def build_dataset(kind: str, split: str, *, root: str | Path | None = None, seed: int = 0, **options) -> ImageDataset:
    """A dataset by kind: "digits", "synthetic", "folder" (root/train, root/val), "list" (a list file),
    "wds" (WebDataset shards: a pattern) or "hf" (a saved Hugging Face dataset; ``split`` picks a
    DatasetDict's split). ``labelled=False`` lets shards and HF splits hold images without labels
    (for inference; their label is -1).

    A "folder" root of class folders alone is taken whole, or, with ``holdout`` (a fraction), split
    by :func:`holdout_split` into the "train" and "val" parts.
    """
    if kind == "digits":
        return Digits(split, seed=seed)
    if kind == "synthetic":
        n = options.get("num_samples", 256 if split == "train" else 64)
        return Synthetic(
            n, options.get("num_classes", 4), options.get("size", 96), seed=seed + (0 if split == "train" else 10_000)
        )
    if kind == "folder":
        if root is None:
            raise ValueError("dataset 'folder' needs a root with train/ and val/ (or class folders)")
        root = Path(root)
        sub = root / split
        classes = options.get("classes")
        holdout = options.get("holdout", 0.0)
        if (root / "train").is_dir():
            if not (root / "val").is_dir():
                raise ValueError(
                    f"{root} has train/ but no val/: add {root}/val/<class>/<image> with the same class "
                    f"folders, or put the class folders directly in {root} to hold out part of each class"
                )
            if split == "val" and classes is None:
                classes = ImageFolder(root / "train").classes
        elif holdout > 0:  # class folders only: train on most of each class, validate on the rest
            train, val = holdout_split(ImageFolder(root, classes=classes), holdout)
            return train if split == "train" else val
        return ImageFolder(sub if sub.is_dir() else root, classes=classes)
    if kind == "list":
        if root is None:
            raise ValueError("dataset 'list' needs the list file")
        return ListFile(root, classes=options.get("classes"))
    if kind == "wds":
        from .shards import ShardDataset

        if root is None:
            raise ValueError("dataset 'wds' needs a shard pattern")
        return ShardDataset(root, classes=options.get("classes"), labelled=options.get("labelled", True))
    if kind == "hf":
        from .hf import HFDataset

        if root is None:
            raise ValueError("dataset 'hf' needs a saved dataset (a save_to_disk folder or parquet files)")
        return HFDataset(root, split, image_column=options.get("image_column"),
                         label_column=options.get("label_column"), classes=options.get("classes"),
                         labelled=options.get("labelled", True))  # fmt: skip
    raise ValueError(f"unknown dataset {kind!r}; known: {', '.join(DATASET_KINDS)}")
