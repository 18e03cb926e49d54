"""Class-name sets shipped with the package, so predictions print names without a download."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

LABEL_SETS = ("imagenet-1k",)


@dataclass(frozen=True)
class ImageNetClass:
    """One ILSVRC-2012 class, at its output ``index`` of a 1000-class network."""

    index: int
    wnid: str  # WordNet id, also the class folder name in the ILSVRC-2012 layout
    name: str  # short readable name
    lemmas: str  # every WordNet lemma of the synset


@cache
def imagenet1k() -> tuple[ImageNetClass, ...]:
    """The 1000 ILSVRC-2012 classes in the standard order (sorted WordNet ids)."""
    text = resources.files(__package__).joinpath("labels/imagenet1k.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    return tuple(ImageNetClass(int(i), wnid, name, lemmas) for i, wnid, name, lemmas in rows)


def class_names(label_set: str) -> list[str]:
    """Readable names of a shipped label set, by its id (see :data:`LABEL_SETS`)."""
    if label_set == "imagenet-1k":
        return [c.name for c in imagenet1k()]
    raise ValueError(f"unknown label set {label_set!r}; shipped label sets: {', '.join(LABEL_SETS)}")
