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


@pytest.mark.parametrize("damage, message", [
    (lambda sd: sd["head.fc.weight"].fill_(float("nan")), r"tensor head.fc.weight holds 3,584 NaN or infinite value"),
    (lambda sd: sd["stem.conv1a.bn.running_var"].mul_(-1), r"tensor stem.conv1a.bn.running_var holds negative variances"),
    (lambda sd: sd.__setitem__("head.fc.bias", torch.zeros(2, dtype=torch.int64)), r"tensor head.fc.bias holds int64"),
    (lambda sd: sd.__setitem__("head.fc.bias", torch.tensor([True, False])), r"tensor head.fc.bias holds bool"),
])  # fmt: skip
def test_damaged_values_are_refused_naming_the_tensor(tmp_path, damage, message):
    """A classifier full of NaN printed `0 nan%` and exited 0 (issue 34): loading, converting and
    predicting refuse it, naming the tensor."""
    from safetensors.torch import load_file, save_file

    model = iv.create_model("inception_resnet_v1", num_classes=2)
    good = iv.save_weights(model, tmp_path / "good.safetensors", class_names=["a", "b"])
    sd = load_file(good)
    assert "stem.conv1a.bn.running_var" in sd
    damage(sd)
    from safetensors import safe_open

    with safe_open(str(good), "pt") as f:
        meta = f.metadata()
    bad = tmp_path / "bad.safetensors"
    save_file(sd, bad, metadata=meta)
    with pytest.raises(ValueError, match=message):
        iv.load_weights(bad)
    run = subprocess.run([sys.executable, "-m", "inceptionv4", "convert", str(bad), str(tmp_path / "out.safetensors")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr and "holds" in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "out.safetensors").exists()


def test_a_crafted_pickle_and_damaged_keras_files_get_one_line_not_a_traceback(tmp_path):
    """A .pth whose pickle pops an empty stack raised IndexError from torch's safe unpickler; Keras
    .h5 files naming layers or weights they lack raised KeyError (issue 34)."""
    h5py = pytest.importorskip("h5py")
    bomb = tmp_path / "bomb.pth"
    for pickled, error in ((b"\x80\x02e.", "IndexError"), (b"\x80\x02]((h\x00h\x00e.", "KeyError")):  # no payload
        bomb.write_bytes(pickled)
        with pytest.raises(UnsafeFileError, match=rf"bomb.pth: its pickle is malformed \({error}\)"):
            iv.load_weights(bomb, architecture="inception_resnet_v1")
    cases = {"layer.h5": lambda f: f.attrs.create("layer_names", [b"conv2d_1"]),
             "weight.h5": lambda f: (f.attrs.create("layer_names", [b"conv2d_1"]),
                                     f.create_group("conv2d_1").attrs.create("weight_names", [b"conv2d_1/kernel:0"])),
             "keras3.h5": lambda f: f.create_group("layers/conv2d/vars").create_dataset("1", data=[1.0])}  # fmt: skip
    for name, build in cases.items():
        with h5py.File(tmp_path / name, "w") as f:
            build(f)
        with pytest.raises(ValueError, match=rf"{name} is a damaged Keras weights file: KeyError"):
            iv.load_weights(tmp_path / name, source="keras", architecture="inception_resnet_v2")
