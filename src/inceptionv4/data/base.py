"""What a dataset item is, named: an :class:`Item` that could be read, or a :class:`Skipped` one
with its reason. Every dataset wrapper of this package (augmented for training, cut into a crop
protocol's views, read for the device decoder) yields one of the two, and every collate function
tells them apart by type, never by which slot of a tuple is None."""

from __future__ import annotations

from typing import NamedTuple


class Item(NamedTuple):
    """An item that could be read: ``data`` (an image tensor, a crop protocol's pieces, or an
    encoded payload for the device), its class ``label`` and dataset ``index``; ``name`` (the file,
    for reports) and ``params`` (the augmentation the device applies) where the wrapper has them."""

    data: object
    label: int
    index: int
    name: str | None = None
    params: dict | None = None


class Skipped(NamedTuple):
    """An item that could not be read: its dataset ``index`` and the ``reason`` (the file's error)."""

    index: int
    reason: str


def split_items(batch: list[Item | Skipped]) -> tuple[list[Item], list[Skipped]]:
    """A batch's items, those read and those skipped, each in order."""
    return [b for b in batch if isinstance(b, Item)], [b for b in batch if isinstance(b, Skipped)]
