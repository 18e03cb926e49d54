"""The one checkpoint writer: atomic (temp file, fsync, rename), versioned, everything to resume."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..weights.io import atomic_write

FORMAT_VERSION = 1
_NAME = re.compile(r"^step-(\d+)\.pt$")


def save_checkpoint(state: dict, directory: str | Path, step: int, keep: int = 2) -> Path:
    """Write ``state`` as ``directory/step-<step>.pt`` atomically; keep the newest ``keep`` files.

    A crash mid-write leaves only a temp file behind, never a truncated checkpoint.
    """
    directory = Path(directory)
    path = directory / f"step-{step:08d}.pt"
    with atomic_write(path, durable=True) as tmp:
        torch.save({"format_version": FORMAT_VERSION, **state}, tmp)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint of ours (tensors, numbers, strings and RNG states only: weights_only)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {version!r}, this version reads {FORMAT_VERSION}")
    return state
