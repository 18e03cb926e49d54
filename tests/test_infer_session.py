"""engines: open_session and its backends: every backend against torch, the build cache, and clear refusals."""

import importlib
import os
import shutil
import sysconfig

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import inceptionv4 as iv
from inceptionv4.cli import main
from inceptionv4.data.views import protocol_pixels
from inceptionv4.engines.torch import compile_for_inference
from inceptionv4.extras import installed
from inceptionv4.engines.open import open_session
from inceptionv4.models.layers import ConvBNReLU

from .conftest import randomize_bn, torch_session

session_module = importlib.import_module("inceptionv4.engines.open")
devices_module = importlib.import_module("inceptionv4.devices")  # where the CPU's units are read
extras_module = importlib.import_module("inceptionv4.extras")  # what is installed, for the engines
precision_module = importlib.import_module("inceptionv4.precision")

ENGINES = [b for b in ("onnxruntime", "openvino") if installed(b)]


@pytest.fixture(scope="module")
def pixels(small_model):
    rng = np.random.default_rng(0)
    pre = torch_session(small_model).pre
    imgs = [Image.fromarray(rng.integers(0, 256, (90, 110, 3), dtype=np.uint8)) for _ in range(5)]
    return torch.cat([protocol_pixels(img, pre, 10) for img in imgs])  # 5 images x 10 crops


@pytest.mark.parametrize("backend", ENGINES)
def test_each_engine_at_fp32_gives_torchs_probabilities(small_model, pixels, backend, tmp_path):
    want = torch_session(small_model, 10)(pixels)
    session = open_session(small_model, backend=backend, crops=10, cache_dir=tmp_path)
    got = session(pixels)
    assert got.shape == (5, 3) and session.backend == backend and session.device.type == "cpu"
    assert (got - want).abs().max().item() < 1e-4
    assert session.describe()["precision"] == "fp32" and session.labels.names == ["red", "green", "blue"]


def test_an_ensemble_averages_its_models(small_model, pixels):
    torch.manual_seed(1)
    other = iv.create_model("inception_resnet_v1", num_classes=3).eval()
    other.class_names, other.pretrained_cfg = small_model.class_names, small_model.pretrained_cfg
    both = torch_session([small_model, other], 10)(pixels)
    alone = (torch_session(small_model, 10)(pixels) + torch_session(other, 10)(pixels)) / 2
    assert (both - alone).abs().max().item() < 1e-6


@pytest.mark.skipif(not ENGINES, reason="neither onnxruntime nor openvino is installed")
def test_the_build_cache_is_reused_and_rebuilt_for_changed_weights(small_model, tmp_path):
    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights, class_names=small_model.class_names)
    first = open_session(weights, backend=ENGINES[0], cache_dir=tmp_path / "cache")
    again = open_session(weights, backend=ENGINES[0], cache_dir=tmp_path / "cache")
    assert first.cache[0]["built"] and not again.cache[0]["built"]
    assert first.cache[0]["onnx"] == again.cache[0]["onnx"]
    changed = iv.load_weights(weights)
    with torch.no_grad():
        changed.head.fc.bias.add_(1.0)
    iv.save_weights(changed, weights)
    rebuilt = open_session(weights, backend=ENGINES[0], cache_dir=tmp_path / "cache")
    assert rebuilt.cache[0]["built"] and rebuilt.cache[0]["onnx"] != first.cache[0]["onnx"]
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 2


def test_auto_takes_an_engine_on_the_cpu_and_torch_for_its_forms(small_model, monkeypatch):
    assert session_module._auto_backend(torch.device("cpu"), "fp32", torch_only=True) == "torch"
    assert session_module._auto_backend(torch.device("cuda"), "fp32", torch_only=False) == "torch"
    expected = ENGINES[-1] if ENGINES else "torch"  # openvino before onnxruntime
    assert session_module._auto_backend(torch.device("cpu"), "fp32", torch_only=False) == expected
    monkeypatch.setattr(extras_module, "installed", lambda b: b == "torch")
    assert session_module._auto_backend(torch.device("cpu"), "fp32", torch_only=False) == "torch"


def test_bad_settings_get_one_clear_error(small_model, tmp_path, monkeypatch, capsys):
    for bad, message in (
        ({"backend": "tensorrt"}, "backend must be one of auto, torch, onnxruntime, openvino; got 'tensorrt'"),
        ({"precision": "int4"}, "precision must be one of auto, fp32, bf16, fp16, int8; got 'int4'"),
        ({"precision": "int8"}, "int8 runs a calibrated artefact: write one with `inceptionv4 quantize"),
        ({"backend": "torch", "precision": "int8"}, "int8 runs a calibrated artefact"),
        ({"backend": "onnxruntime", "precision": "bf16"}, "onnxruntime's CPU engine runs fp32 and int8, not bf16"),
        ({"backend": "onnxruntime", "form": "compile"}, "form and channels_last are torch options"),
        ({"crops": 7}, "crops must be one of 1, 10, 12, 144; got 7"),
    ):
        with pytest.raises(ValueError, match=message):
            open_session(small_model, **bad)
    with pytest.raises(ValueError, match="give weights"):
        open_session([])
    monkeypatch.setattr(devices_module, "cpu_features", lambda: dict.fromkeys(
        ("avx2", "avx512", "vnni", "avx512_bf16", "amx", "avx512_fp16", "amx_fp16"), False) | {"avx2": True})
    with pytest.raises(ValueError, match="openvino bf16 needs a CPU with AVX-512 BF16 or AMX; this one has AVX2"):
        open_session(small_model, backend="openvino", precision="bf16")
    with pytest.raises(ValueError, match="openvino fp16 needs a CPU with AVX-512 FP16 or AMX-FP16"):
        open_session(small_model, backend="openvino", precision="fp16")
    monkeypatch.setattr(extras_module, "installed", lambda b: b == "torch")
    with pytest.raises(ImportError, match=r"--backend openvino needs openvino installed: pip install 'inceptionv4\[openvino\]'"):
        open_session(small_model, backend="openvino")
    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights, class_names=small_model.class_names)
    assert main(["predict", "--weights", str(weights), "--backend", "openvino", str(weights)]) == 2
    assert "needs openvino installed" in capsys.readouterr().err
    assert main(["predict", "--weights", str(weights), "--model", "inception_v4", str(weights)]) == 2
    assert "holds inception_resnet_v1 weights, not inception_v4" in capsys.readouterr().err


def test_cpu_features_name_the_vector_units():
    units = devices_module.vector_units()
    f = devices_module.cpu_features()
    assert set(f) == {"avx2", "avx512", "vnni", "avx512_bf16", "amx", "avx512_fp16", "amx_fp16"}
    assert ("AVX-512" in units) == f["avx512"] and ("BF16" in units) == f["avx512_bf16"]


def test_the_amp_flag_still_works_one_release(small_model, tmp_path, capsys):
    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights, class_names=small_model.class_names)
    img = tmp_path / "x.png"
    Image.new("RGB", (90, 90), (200, 30, 30)).save(img)
    assert main(["predict", "--weights", str(weights), "--backend", "torch", "--amp", "bf16", "--json", str(img)]) == 0
    captured = capsys.readouterr()
    assert "--amp is deprecated, use --precision" in captured.err and '"ok": true' in captured.out
    assert main(["predict", "--weights", str(weights), "--amp", "bf16", "--precision", "fp16", str(img)]) == 2
    assert "not both" in capsys.readouterr().err


HAS_TOOLCHAIN = bool(shutil.which("g++") or shutil.which("c++")) and os.path.exists(
    os.path.join(sysconfig.get_paths()["include"], "Python.h")
)


@pytest.mark.skipif(not HAS_TOOLCHAIN, reason="inductor's C++ wrapper needs a C++ compiler and Python's headers")
def test_compile_for_inference_is_the_same_function():
    """Inductor with freezing and the C++ wrapper, on a small ConvBNReLU stack (a full network takes minutes)."""
    torch.manual_seed(0)
    net = randomize_bn(
        nn.Sequential(ConvBNReLU(3, 8, 3, stride=2, padding="valid"), ConvBNReLU(8, 16, (1, 7)), ConvBNReLU(16, 8, 1))
    )
    net.eval()
    compiled = compile_for_inference(net)
    x = torch.randn(2, 3, 33, 33)
    with torch.inference_mode():
        assert (compiled(x) - net(x)).abs().max() < 1e-4
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the caller's network untouched


def test_auto_precision_follows_the_engines_own_default_on_this_cpu(small_model, monkeypatch):
    """``precision="auto"``: OpenVINO's own INFERENCE_PRECISION_HINT here (bf16 exactly where the CPU
    has AVX-512 BF16 or AMX), the same rule for torch on a CPU, fp32 on onnxruntime, int8 for an
    artefact (tests/test_infer_quantize.py); a CPU without the units gets fp32 everywhere."""
    f = devices_module.cpu_features()
    native = "bf16" if f["avx512_bf16"] or f["amx"] else "fp32"
    from inceptionv4.engines.onnx import openvino_core

    ov_default = openvino_core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    expected = {"bf16": "bf16", "f16": "fp16"}.get(ov_default, "fp32")
    assert session_module.auto_precision("openvino") == expected
    if expected != "fp16":  # a CPU with AMX-FP16 may default to f16 in OpenVINO; torch keeps the bf16 rule
        assert expected == native == session_module.auto_precision("torch")
    assert session_module.auto_precision("onnxruntime") == "fp32"
    for backend in ("openvino", "torch", "onnxruntime"):
        session = open_session(small_model, backend=backend, precision="auto")
        assert session.precision == {"openvino": expected, "torch": native, "onnxruntime": "fp32"}[backend]
        assert session.describe()["precision"] == session.precision
    assert open_session(small_model, precision="auto").precision == expected  # backend auto: OpenVINO here
    monkeypatch.setattr(devices_module, "cpu_features", lambda: dict.fromkeys(
        ("avx2", "avx512", "vnni", "avx512_bf16", "amx", "avx512_fp16", "amx_fp16"), False) | {"avx2": True})  # fmt: skip
    assert session_module.auto_precision("torch") == "fp32"
    assert open_session(small_model, backend="torch", precision="auto").precision == "fp32"


def test_fp16_on_a_cpu_without_fp16_units_is_refused_with_the_reason(small_model, monkeypatch):
    monkeypatch.setattr(devices_module, "cpu_features", lambda: dict.fromkeys(
        ("avx2", "avx512", "vnni", "avx512_bf16", "amx", "avx512_fp16", "amx_fp16"), False) | {"avx512": True,
        "avx512_bf16": True})  # fmt: skip
    with pytest.raises(ValueError, match="fp16 on a CPU needs AVX-512 FP16 or AMX-FP16 to be faster than fp32; this "
                                         "one has AVX-512, BF16: use --precision bf16 or fp32"):  # fmt: skip
        open_session(small_model, backend="torch", precision="fp16")
    assert precision_module.engine_precision_gap("torch", "fp16", "cuda") is None
    monkeypatch.setattr(devices_module, "cpu_features", lambda: dict.fromkeys(
        ("avx2", "avx512", "vnni", "avx512_bf16", "amx", "avx512_fp16", "amx_fp16"), True))  # fmt: skip
    assert open_session(small_model, backend="torch", precision="fp16").precision == "fp16"


def test_the_session_says_how_large_it_decodes(small_model):
    session = open_session(small_model, backend="torch")
    assert session.reduce_to == 85 and session.describe()["decode_size"] == "reduced (shorter side >= 85 px)"
    assert open_session(small_model, backend="torch", crops=144).reduce_to == round(75 * 352 / 224)
    full = open_session(small_model, backend="torch", full_decode=True)
    assert full.reduce_to is None and full.describe()["decode_size"] == "full"
