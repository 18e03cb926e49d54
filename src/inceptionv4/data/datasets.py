"""Datasets: image folders, list files, and two built-ins that need no download.

Every dataset yields ``(PIL image, label)`` from ``load(i)`` and knows its ``classes``;
:class:`Augmented` applies a transform with randomness fixed by (seed, epoch, index), so that a
run resumed mid-epoch, or split over several processes, sees exactly the same pixels.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import TypedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .base import Item, Skipped, split_items
from .decode import IMAGE_SUFFIXES, DecodeError, load_rgb

log = logging.getLogger(__name__)


class ImageDataset(torch.utils.data.Dataset):
    """Base of every dataset: ``samples`` (path or payload, label) and ``classes``.

    ``load(i)`` gives sample ``i`` as an RGB PIL image and its label, or raises
    :class:`~inceptionv4.data.decode.DecodeError` with the reason (the loaders skip and count
    it); ``name_of(i)`` names it for reports and errors. ``load(i, reduce_to=side)`` may decode a
    large JPEG reduced, its shorter side still >= ``side`` (see :func:`~inceptionv4.data.decode.load_rgb`);
    inference passes it, training does not. The other datasets keep this contract."""

    classes: list[str]
    samples: list[tuple[object, int]]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int, reduce_to: int | None = None) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        return load_rgb(path, reduce_to=reduce_to), label

    def name_of(self, index: int) -> str:
        return str(self.samples[index][0])

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]


class ImageFolder(ImageDataset):
    """``root/<class>/<image>``: one folder per class, classes in sorted order.

    ``classes`` fixes the class list (e.g. the 1000 ImageNet WordNet ids), so that a validation
    folder with a subset of classes keeps the training indices.
    """

    def __init__(self, root: str | Path, classes: list[str] | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"no such dataset folder: {root}")
        found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not found:
            raise ValueError(f"{root} has no class folders (expected {root}/<class>/<image>)")
        self.classes = list(classes) if classes is not None else found
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = [c for c in found if c not in index]
        if unknown:
            raise ValueError(f"{root} has class folders not in the class list: {unknown[:5]}")
        self.root = root
        self.samples = [
            (p, index[c])
            for c in found
            for p in sorted((root / c).rglob("*"))
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        ]
        if not self.samples:
            raise ValueError(f"{root} has class folders but no images ({', '.join(IMAGE_SUFFIXES)})")
        empty = sorted(set(found) - {self.classes[label] for _, label in self.samples})
        if empty:  # a class no image teaches; often a run folder written inside the data folder
            raise ValueError(
                f"{root} has class folders without images: {', '.join(empty[:5])}"
                f"{' ...' if len(empty) > 5 else ''} (add images, or move them out of {root})"
            )


#: The most classes integer labels may number where the labels themselves say how many there are
#: (ImageNet-21k has 21,841): a label of 1e9 would otherwise make a class list of that length.
MAX_CLASSES = 100_000


def check_labels(labels: list[int], where: object, num_classes: int | None = None) -> None:
    """ValueError naming ``where`` and the first label that is not a class index: below 0, or at or
    above ``num_classes`` (:data:`MAX_CLASSES` where the classes are counted from the labels).
    Every dataset kind checks its labels here once, when it is listed, before anything is built."""
    bound = MAX_CLASSES if num_classes is None else num_classes
    if not labels:
        return
    low, high = min(labels), max(labels)
    if low < 0 or high >= bound:
        bad = low if low < 0 else high
        what = f"one of the {bound} classes" if num_classes is not None else f"a class index below {bound:,}"
        raise ValueError(f"{where}: label {bad} is not {what} (labels are class indices from 0)")


class ListFile(ImageDataset):
    """A text file of ``<path> <label>`` lines (label: an index or a class name); paths relative to ``root``."""

    def __init__(self, list_file: str | Path, root: str | Path | None = None, classes: list[str] | None = None) -> None:
        list_file = Path(list_file)
        if not list_file.is_file():
            raise FileNotFoundError(f"no such list file: {list_file}")
        base = Path(root) if root is not None else list_file.parent
        rows = []
        for n, line in enumerate(list_file.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            path, sep, label = line.strip().rpartition(" ") if "\t" not in line else line.strip().rpartition("\t")
            if not sep:
                raise ValueError(f"{list_file}:{n}: expected '<path> <label>', got {line!r}")
            rows.append((base / path.strip(), label.strip()))
        names = sorted({lab for _, lab in rows if not lab.isdigit()})
        self.classes = list(classes) if classes is not None else names
        index = {c: i for i, c in enumerate(self.classes)}
        self.samples = []
        for path, lab in rows:
            if lab.isdigit():
                self.samples.append((path, int(lab)))
            elif lab in index:
                self.samples.append((path, index[lab]))
            else:
                raise ValueError(f"{list_file}: label {lab!r} is not a known class")
        if not self.samples:
            raise ValueError(f"{list_file} lists no images (it should hold '<path> <label>' lines)")
        check_labels([lab for _, lab in self.samples], list_file, len(self.classes) if classes is not None else None)
        if not self.classes:
            self.classes = [str(i) for i in range(max(lab for _, lab in self.samples) + 1)]


class Digits(ImageDataset):
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 scans), split by a fixed seed.

    ``split`` is "train" (80%) or "val" (20%), stratified; the same seed gives the same split.
    """

    def __init__(self, split: str = "train", seed: int = 0, val_fraction: float = 0.2) -> None:
        from sklearn.datasets import load_digits

        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        data = load_digits()
        images = (data.images * (255.0 / 16.0)).round().astype(np.uint8)  # (N, 8, 8), 0..16 -> 0..255
        rng = np.random.default_rng(seed)
        val = np.zeros(len(images), bool)
        for c in range(10):
            idx = np.flatnonzero(data.target == c)
            val[rng.choice(idx, round(len(idx) * val_fraction), replace=False)] = True
        keep = np.flatnonzero(val if split == "val" else ~val)
        self.classes = [str(c) for c in range(10)]
        self.samples = [(images[i], int(data.target[i])) for i in keep]
        self.ids = [int(i) for i in keep]

    def load(self, index: int, reduce_to: int | None = None) -> tuple[Image.Image, int]:
        pixels, label = self.samples[index]
        return Image.fromarray(255 - pixels, mode="L").convert("RGB"), label  # dark ink on white

    def name_of(self, index: int) -> str:
        return f"digits#{self.ids[index]}"


class DigitCanvas(ImageDataset):
    """:class:`Digits` placed at random on a larger plain canvas: a dataset whose answer to
    *where* is known (each image's :meth:`box_of`), on which class-activation maps
    (:mod:`inceptionv4.infer.explain`) are tested and measured.

    Image ``i`` is digit ``i % len(digits)`` of the ``split``, upscaled to ``digit`` px (light ink),
    at a place drawn from ``(seed, i)`` on a ``size`` px canvas of dark grey with faint noise;
    ``samples`` images in all (default: one per digit)."""

    def __init__(self, split: str = "train", *, size: int = 128, digit: int = 48, samples: int | None = None,
                 seed: int = 0) -> None:  # fmt: skip
        if not 8 <= digit <= size:
            raise ValueError(f"digit must be 8 to size ({size}) pixels, got {digit}")
        self.digits = Digits(split, seed)
        self.size, self.digit, self.seed = size, digit, seed
        self.classes = self.digits.classes
        count = len(self.digits) if samples is None else samples
        self.samples = [(i, self.digits.samples[i % len(self.digits)][1]) for i in range(count)]

    def box_of(self, index: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of image ``index``'s digit."""
        top, left = np.random.default_rng([self.seed, index]).integers(0, self.size - self.digit + 1, 2)
        return int(left), int(top), int(left) + self.digit, int(top) + self.digit

    def load(self, index: int, reduce_to: int | None = None) -> tuple[Image.Image, int]:
        i, label = self.samples[index]
        left, top, right, bottom = self.box_of(index)
        noise = np.random.default_rng([self.seed, index, 1]).normal(0, 5.1, (self.size, self.size))
        canvas = np.clip(25.5 + noise, 0, 255)
        glyph = Image.fromarray(self.digits.samples[i % len(self.digits)][0], mode="L")
        ink = np.asarray(glyph.resize((self.digit, self.digit), Image.Resampling.BILINEAR), dtype=np.float64)
        canvas[top:bottom, left:right] = np.maximum(canvas[top:bottom, left:right], ink)
        return Image.fromarray(canvas.round().astype(np.uint8), mode="L").convert("RGB"), label

    def name_of(self, index: int) -> str:
        return f"digit-canvas#{index}"


class Synthetic(ImageDataset):
    """Procedural images, deterministic by (seed, index): each class a stripe orientation and hue."""

    def __init__(self, num_samples: int = 256, num_classes: int = 4, size: int = 96, seed: int = 0) -> None:
        if num_samples < 1 or num_classes < 2:
            raise ValueError(f"need num_samples >= 1 and num_classes >= 2, got {num_samples}, {num_classes}")
        self.classes = [f"class_{c}" for c in range(num_classes)]
        self.size, self.seed = size, seed
        self.samples = [(i, i % num_classes) for i in range(num_samples)]

    def load(self, index: int, reduce_to: int | None = None) -> tuple[Image.Image, int]:
        i, label = self.samples[index]
        rng = np.random.default_rng([self.seed, i])
        n = len(self.classes)
        yy, xx = np.mgrid[0 : self.size, 0 : self.size] / self.size
        angle = np.pi * label / n + rng.normal(0, 0.05)
        wave = np.sin(2 * np.pi * 6 * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
        hue = np.array(
            [np.cos(2 * np.pi * label / n), np.cos(2 * np.pi * label / n + 2.1), np.cos(2 * np.pi * label / n + 4.2)]
        )
        img = 0.5 + 0.25 * wave[..., None] * (0.6 + 0.4 * hue) + rng.normal(0, 0.05, (self.size, self.size, 3))
        return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), mode="RGB"), label

    def name_of(self, index: int) -> str:
        return f"synthetic#{index}"


def seed_of(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (seed, epoch, index; seed, "step", rank, step; ...): the one
    hash every random draw of a run is seeded from, so a draw depends on what it is for, not on
    what ran before it."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


class Augmented(torch.utils.data.Dataset):
    """``base`` through ``transform``; randomness fixed by (seed, epoch, index); bad files skipped.

    A file that cannot be decoded yields a :class:`~inceptionv4.data.base.Skipped` (reported by
    :func:`collate`) and one warning naming it, instead of crashing the run.
    """

    def __init__(self, base: ImageDataset, transform: Callable, seed: int = 0) -> None:
        self.base, self.transform, self.seed = base, transform, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Item | Skipped:
        try:
            img, label = self.base.load(index)
        except DecodeError as err:
            log.warning("skipping %s", err)
            return Skipped(index, str(err))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed_of(self.seed, self.epoch, index))
            x = self.transform(img)
        return Item(x, label, index)


class Batch(TypedDict):
    """What every loader of this package yields once its batch is ready to run (folder, list,
    digits, synthetic, wds and hf datasets; augmented for training, or cut for evaluation; decoded
    by the workers or on the device): the images that could be read, their labels and dataset
    indices, and for each item that could not, its reason and index (the
    :class:`~inceptionv4.data.base.Skipped` items of the batch)."""

    images: torch.Tensor | None
    labels: torch.Tensor | None
    indices: torch.Tensor | list[int] | None
    skipped: list[str]
    skipped_indices: list[int]


def collate(batch: list[Item | Skipped]) -> Batch:
    """Stack the items read; report the skipped ones (their reasons and indices) alongside."""
    good, bad = split_items(batch)
    skipped, skipped_indices = [b.reason for b in bad], [b.index for b in bad]
    if not good:
        return {"images": None, "labels": None, "indices": None, "skipped": skipped, "skipped_indices": skipped_indices}
    return {
        "images": torch.stack([b.data for b in good]),
        "labels": torch.tensor([b.label for b in good], dtype=torch.long),
        "indices": torch.tensor([b.index for b in good], dtype=torch.long),
        "skipped": skipped,
        "skipped_indices": skipped_indices,
    }


class Subset(ImageDataset):
    """Some samples of another dataset, with its class list."""

    def __init__(self, base: ImageDataset, indices: list[int]) -> None:
        self.classes = list(base.classes)
        self.samples = [base.samples[i] for i in indices]


def holdout_split(dataset: ImageDataset, fraction: float) -> tuple[Subset, Subset]:
    """(train, val): ``fraction`` of each class held out, at least one image of any class with two.

    Which images are held out depends only on their names (SHA-1 of the file name), not on the
    seed or the listing order: every run, and a resumed one, validates on the same images, and
    adding images to a class moves few of the others.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    by_class: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(dataset.samples):
        by_class.setdefault(label, []).append(i)
    train, val = [], []
    for indices in by_class.values():
        ranked = sorted(indices, key=lambda i: hashlib.sha1(Path(str(dataset.samples[i][0])).name.encode()).digest())
        n_val = max(1, round(fraction * len(ranked))) if len(ranked) >= 2 else 0
        val += ranked[:n_val]
        train += ranked[n_val:]
    if not val:
        raise ValueError(f"too few images to hold out {fraction:.0%} for validation: give each class two or more")
    return Subset(dataset, sorted(train)), Subset(dataset, sorted(val))
