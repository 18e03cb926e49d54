"""Scoring a classifier: which output each dataset class is, and the one metrics accumulator that
``eval`` and training's validation share (top-1, top-5, loss, per-class accuracy, confusion).

It sits at the package root, below both: training needs nothing from inference to validate."""

from __future__ import annotations

import torch

from .distributed import World, gather_objects


def map_labels(dataset_classes: list[str], keys: list[str]) -> list[int]:
    """Output index of each dataset class, given the outputs' class ``keys``: by name (ImageNet
    folders by WordNet id), else by position: classes named 0, 1, ... (a list file's integer
    labels) are output indices, and unnamed classes as many as the outputs are in the outputs'
    order. ValueError naming a few classes where neither fits."""
    index = {k: i for i, k in enumerate(keys)}
    if all(c in index for c in dataset_classes):
        return [index[c] for c in dataset_classes]
    numbered = dataset_classes == [str(i) for i in range(len(dataset_classes))]
    if len(dataset_classes) == len(keys) or (numbered and len(dataset_classes) <= len(keys)):
        return list(range(len(dataset_classes)))  # folder order, or integer labels, is the class order
    missing = [c for c in dataset_classes if c not in index][:5]
    raise ValueError(
        f"the dataset's {len(dataset_classes)} classes do not match the model's {len(keys)} outputs "
        f"(e.g. {missing} are not among them)"
    )


#: the confusion matrix's last column: predictions of a class the dataset does not have (a
#: 1000-class ImageNet network on a folder of 10 of its classes can still answer any of the 1000)
OUTSIDE = "(a class outside the dataset)"


class Tally:
    """The one metrics accumulator: of ``eval`` and of training's validation alike.

    It takes probabilities over the outputs, each image's dataset label and index, and the images
    that could not be read, and gives the report's figures: top-1, top-5, the mean negative log
    likelihood (``loss``), per-class top-1, and the confusion matrix of ``n x (n + 1)`` (rows:
    true class; columns: predicted class, the last one for an output outside the dataset's
    classes, :data:`OUTSIDE`). ``mapping[c]`` is the output index of dataset class ``c``
    (:func:`map_labels`); ``keys`` name the outputs.
    """

    def __init__(self, classes: list[str], mapping: list[int], keys: list[str], name_of=None) -> None:
        self.classes, self.mapping, self.keys, self.name_of = list(classes), list(mapping), list(keys), name_of
        n = len(classes)
        # output index -> confusion column: its dataset class, else the OUTSIDE column
        self.column = torch.full((max(len(keys), max(mapping, default=-1) + 1),), n, dtype=torch.long)
        self.column[torch.tensor(self.mapping, dtype=torch.long)] = torch.arange(n)
        self.confusion = torch.zeros(n, n + 1, dtype=torch.long)
        self.top5, self.nll = 0, 0.0
        self.images: list[tuple[int, dict]] = []  # (dataset index, entry): shares merge in order
        self.skipped: list[tuple[int, str]] = []

    def add(self, probs: torch.Tensor, labels: list[int], indices: list[int]) -> None:
        """``probs`` (N, outputs) of N images with these dataset ``labels`` and ``indices``."""
        probs = probs.detach().float().cpu()
        target = torch.tensor([self.mapping[y] for y in labels])
        k = min(5, probs.shape[1])
        self.top5 += (probs.topk(k, 1).indices == target[:, None]).any(1).sum().item()
        self.nll -= probs.gather(1, target[:, None]).clamp(min=1e-12).log().sum().item()
        best, predicted = probs.max(1)
        rows = torch.tensor(labels, dtype=torch.long)
        self.confusion.index_put_((rows, self.column[predicted]), torch.ones_like(rows), accumulate=True)
        if self.name_of is not None:
            for i, y, p, prob in zip(indices, labels, predicted.tolist(), best.tolist(), strict=True):
                entry = {"file": self.name_of(i), "index": int(i), "label": self.classes[y], "predicted": self.keys[p], "prob": prob}
                self.images.append((int(i), entry))

    def skip(self, indices: list[int], reasons: list[str]) -> None:
        """Images that could not be read: counted in the report's ``skipped``, not in ``n``."""
        self.skipped += zip((int(i) for i in indices), reasons, strict=True)

    def merge(self, world: World) -> None:
        """Every process's share, in every process: the same report everywhere."""
        if not world.distributed:
            return
        shares = gather_objects((self.confusion, self.top5, self.nll, self.images, self.skipped), world)
        self.confusion = sum((s[0] for s in shares), torch.zeros_like(self.confusion))
        self.top5, self.nll = sum(s[1] for s in shares), sum(s[2] for s in shares)
        self.images = sorted((x for s in shares for x in s[3]), key=lambda x: x[0])
        self.skipped = sorted((x for s in shares for x in s[4]), key=lambda x: x[0])

    def report(self) -> dict:
        """The figures so far (of this process's share, unless :meth:`merge` ran): percentages,
        the mean loss, and the confusion as nested lists; JSON-ready."""
        n = int(self.confusion.sum())
        per_class = self.confusion.diag().double() / self.confusion.sum(1).clamp(min=1)
        return {
            "n": n,
            "top1": 100.0 * self.confusion.diag().sum().item() / max(n, 1),
            "top5": 100.0 * self.top5 / max(n, 1),
            "loss": self.nll / max(n, 1),
            "per_class_top1": {c: 100.0 * a for c, a in zip(self.classes, per_class.tolist(), strict=True)},
            "confusion": self.confusion.tolist(),  # n x (n + 1): rows true, columns predicted
            "confusion_columns": [*self.classes, OUTSIDE],
            "classes": list(self.classes),
            "images": [entry for _, entry in self.images],
            "skipped": [reason for _, reason in self.skipped],
        }
