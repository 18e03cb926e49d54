"""devices: a device name checked against the machine before anything is loaded; the
inference commands' --device, --amp and --workers."""

import pytest
import torch

import inceptionv4 as iv
from inceptionv4.cli import main
from inceptionv4.devices import resolve_device, to_device


def test_resolve_device_names_what_is_wrong(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"device 'cuda': PyTorch sees no CUDA GPU .* use --device cpu"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match=r"unknown device 'gpu': give auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match=r"device 'meta': inference runs on cpu, cuda or mps"):
        resolve_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"device 'cuda:2': this machine has 2 CUDA GPU\(s\)"):
        resolve_device("cuda:2")


def test_to_device_moves_in_eval_mode_and_channels_last():
    model = iv.create_model("inception_resnet_v1", num_classes=3).train()
    (moved,) = to_device([model], torch.device("cpu"), channels_last=True)
    assert moved is model and not moved.training
    conv = next(m for m in moved.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_inference_commands_refuse_a_device_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    missing = str(tmp_path / "not-there.safetensors")  # never read: the device is checked first
    for args, message in (
        (["eval", "--weights", missing, "--data", str(tmp_path), "--device", "cuda"], "PyTorch sees no CUDA GPU"),
        (["predict", "--weights", missing, "x.jpg", "--device", "tpu"], "unknown device 'tpu'"),
        (["serve", "--weights", missing, "--device", "cuda:0"], "PyTorch sees no CUDA GPU"),
        (
            ["predict", "--weights", missing, "x.jpg", "--backend", "onnxruntime", "--compile"],
            "form and channels_last are torch options",
        ),
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(["predict", "--weights", missing, "x.jpg", "--backend", "openvino", "--device", "cuda"]) == 2
    assert "--backend openvino runs on the CPU here: drop --device cuda" in capsys.readouterr().err
