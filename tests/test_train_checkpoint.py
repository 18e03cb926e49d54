"""Checkpoints: atomic, versioned, pruned, checksummed; damaged ones named, stale temp files removed."""

import os
import stat

import pytest
import torch

from inceptionv4.train import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


def _state(step: int) -> dict:
    """What a checkpoint must hold, in miniature."""
    return {"step": step, "model": {"w": torch.ones(2) * step}, "optimizer": {}, "scaler": {}, "rng": {}, "config": {}}


def test_checkpoints_are_atomic_versioned_and_pruned(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(_state(step), tmp_path, step, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["step-00000002.pt", "step-00000003.pt"]  # no temp files left
    old = os.umask(0o027)
    try:  # the temp file it renames takes the umask, as open() would: not private like mkstemp's
        path = save_checkpoint(_state(4), tmp_path, 4, keep=2)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 4
    torch.save({"format_version": 99}, tmp_path / "step-00000009.pt")
    with pytest.raises(ValueError, match="checkpoint format 99"):
        load_checkpoint(tmp_path / "step-00000009.pt")


def test_damaged_checkpoints_are_named_and_the_newest_intact_one_is_found(tmp_path, caplog):
    """Empty, text, truncated and key-missing files gave EOFError, UnpicklingError and KeyError
    tracebacks, and 64 flipped bytes of tensor data resumed silently. Each is now one named
    reason, and the newest intact checkpoint beside them is the one resumed."""
    import logging

    from inceptionv4.train.checkpoint import CheckpointError, newest_intact_checkpoint

    state = _state(1)
    state["model"] = {"w": torch.arange(4096, dtype=torch.float32)}
    good = save_checkpoint(state, tmp_path, 1, keep=10)
    data = good.read_bytes()
    at = data.index(torch.arange(4096, dtype=torch.float32).numpy().tobytes()[:64]) + 1000  # inside the tensor's bytes
    flipped = bytearray(data)
    for i in range(at, at + 64):
        flipped[i] ^= 0xFF
    damaged = {
        2: (b"", "empty file"),
        3: (b"this is not a checkpoint\n", "not a checkpoint (not a PyTorch archive)"),
        4: (data[: len(data) // 2], "truncated or damaged ("),
        5: (bytes(flipped), "checksum mismatch"),
    }
    for step, (content, _) in damaged.items():
        (tmp_path / f"step-{step:08d}.pt").write_bytes(content)
    torch.save({"format_version": 2, "sha256": "x", "step": 6}, tmp_path / "step-00000006.pt")
    damaged[6] = (None, "checksum mismatch")
    for step, (_, reason) in damaged.items():
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(tmp_path / f"step-{step:08d}.pt")
        assert str(err.value).startswith(f"{tmp_path / f'step-{step:08d}.pt'}: {reason}"), str(err.value)
        assert "\n" not in str(err.value)
    missing = dict(state)
    del missing["optimizer"]
    save_checkpoint(missing, tmp_path / "m", 1)
    with pytest.raises(CheckpointError, match="lacks optimizer"):
        load_checkpoint(tmp_path / "m" / "step-00000001.pt")
    with caplog.at_level(logging.WARNING):
        path, found = newest_intact_checkpoint(tmp_path)
    assert path == good and torch.equal(found["model"]["w"], state["model"]["w"])
    assert caplog.text.count("skipping damaged checkpoint") == 5 and "resuming from step-00000001.pt" in caplog.text
    good.unlink()
    with pytest.raises(CheckpointError, match="no intact checkpoint to resume from: .*empty file"):
        newest_intact_checkpoint(tmp_path)


def test_stale_temp_files_of_killed_writers_are_removed(tmp_path):
    import subprocess
    import sys

    from inceptionv4.weights.io import remove_stale_temps

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".step-00000004.{int(dead.stdout)}-0123abcd.tmp.pt"
    mine = tmp_path / f".model.{os.getpid()}-89abcdef.tmp.safetensors"  # a writer that is still alive
    for f in (stale, mine, tmp_path / "step-00000004.pt"):
        f.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, "step-00000004.pt"])
