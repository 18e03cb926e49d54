"""The one checkpoint writer: atomic (temp file, fsync, rename), versioned, checksummed, everything
to resume; and the reader that finds the newest intact checkpoint of a run."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from ..weights.io import atomic_write, remove_stale_temps, state_sha256

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: a SHA-256 of the state, verified on load
_NAME = re.compile(r"^step-(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, damaged, from another format; the message
    names the file and the reason."""


def save_checkpoint(state: dict, directory: str | Path, step: int, keep: int = 2) -> Path:
    """Write ``state`` as ``directory/step-<step>.pt`` atomically; keep the newest ``keep`` files.

    The file holds ``sha256``, a digest of every tensor and value of ``state``, which
    :func:`load_checkpoint` verifies, so damaged tensor data is found rather than resumed. A crash
    mid-write leaves only a temp file behind (removed by :func:`remove_stale_temps`), never a
    truncated checkpoint.
    """
    directory = Path(directory)
    path = directory / f"step-{step:08d}.pt"
    with atomic_write(path, durable=True) as tmp:
        torch.save({"format_version": FORMAT_VERSION, "sha256": state_sha256(state), **state}, tmp)
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
    """The checkpoint of the highest step in ``directory`` (not checked: see
    :func:`newest_intact_checkpoint`), or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint of ours (tensors, numbers, strings and RNG states only: weights_only) and
    verify its checksum; :class:`CheckpointError` naming the file and what is wrong otherwise
    (empty, not a checkpoint, truncated, keys missing, tensor data changed, another format)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if not magic:
            raise CheckpointError(f"{path}: empty file")
        if magic != b"PK\x03\x04":  # torch.save writes a zip archive
            raise CheckpointError(f"{path}: not a checkpoint (not a PyTorch archive)")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 -- torch.load fails in many ways on a damaged file; each is one line
        raise CheckpointError(f"{path}: truncated or damaged ({type(err).__name__}: {_first_line(err)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint of this library (a {type(state).__name__})")
    version = state.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise CheckpointError(f"{path}: checkpoint format {version!r}, this version reads 1 and {FORMAT_VERSION}")
    stored = state.pop("sha256", None)
    state.pop("format_version")
    if version == 1:
        log.warning("%s: format 1 has no checksum; resuming from it unverified", path)
    elif stored != state_sha256(state):
        raise CheckpointError(f"{path}: checksum mismatch (the file's contents changed after it was written)")
    missing = [k for k in ("model", "optimizer", "scaler", "rng", "step", "config") if k not in state]
    if missing:
        raise CheckpointError(f"{path}: lacks {', '.join(missing)}")
    return {"format_version": version, **state}


def newest_intact_checkpoint(directory: str | Path) -> tuple[Path, dict] | None:
    """(path, state) of the newest checkpoint in ``directory`` that :func:`load_checkpoint` accepts,
    logging each newer one skipped and why; None when there is none at all. CheckpointError
    listing every reason when there are checkpoints but none is intact."""
    reasons = []
    for path in reversed(list_checkpoints(directory)):
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:
            log.warning("skipping damaged checkpoint: %s", err)
            reasons.append(str(err))
            continue
        if reasons:
            log.warning("resuming from %s, the newest intact checkpoint", path.name)
        return path, state
    if reasons:
        raise CheckpointError("no intact checkpoint to resume from: " + "; ".join(reasons))
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else "no detail"


__all__ = ["CheckpointError", "latest_checkpoint", "list_checkpoints", "load_checkpoint", "newest_intact_checkpoint",
           "remove_stale_temps", "save_checkpoint", "state_sha256"]  # fmt: skip
