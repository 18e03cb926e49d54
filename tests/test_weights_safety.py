"""A pickle handed to us never runs: every loading path refuses it before anything executes."""

import os
import pickle
import subprocess
import sys

import pytest
import torch

import inceptionv4 as iv
from inceptionv4.weights import UnsafeFileError


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(params=["torch.save", "raw pickle"])
def evil(tmp_path, request):
    """A checkpoint whose unpickling would create ``marker``: torch.save's zip format or a bare pickle."""
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    payload = {"state_dict": {"features.0.conv.weight": _Payload(str(marker))}}
    if request.param == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    return path, marker


def test_load_weights_refuses(evil):
    path, marker = evil
    with pytest.raises(UnsafeFileError, match="refusing to load .*could run code"):
        iv.load_weights(path, architecture="inception_v4")
    assert not marker.exists()


def test_pretrained_refuses(evil):
    path, marker = evil
    with pytest.raises(UnsafeFileError):
        iv.create_model("inception_v4", pretrained=str(path))
    assert not marker.exists()


def test_cli_convert_refuses(evil, tmp_path):
    path, marker = evil
    out = tmp_path / "out.safetensors"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "inceptionv4",
            "convert",
            "--from",
            "timm",
            "--model",
            "inception_v4",
            str(path),
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "refusing to load" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists() and not out.exists()


def test_the_payload_is_real(evil):
    """The same file does run code when unpickled naively: the refusals above are not vacuous."""
    path, marker = evil
    try:
        torch.load(path, weights_only=False)
    except RuntimeError:  # a bare pickle is no torch checkpoint, but it ran on the way
        pass
    assert marker.exists()


def test_plain_tensor_pickles_still_load(tmp_path):
    model = iv.create_model("inception_v4", num_classes=4)
    import timm

    ref = timm.create_model("inception_v4", num_classes=4)
    torch.save({"state_dict": ref.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    loaded = iv.load_weights(tmp_path / "ckpt.pth", model=model, source="timm")
    assert torch.equal(loaded.stem.conv1a.conv.weight, ref.features[0].conv.weight)
