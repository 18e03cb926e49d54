"""engines.quantize: int8 artefacts for both engines, their report, and what it refuses."""

import importlib
import json

import pytest
import torch

import inceptionv4 as iv
from inceptionv4.cli import main
from inceptionv4.engines.quantize import quantize
from inceptionv4.extras import installed
from inceptionv4.engines.open import open_session

from .conftest import colour_folders

quantize_module = importlib.import_module("inceptionv4.engines.quantize")

BACKENDS = [b for b in ("onnxruntime", "openvino") if installed(b) and (b != "openvino" or installed("nncf"))]
SUFFIX = {"onnxruntime": ".onnx", "openvino": ".xml"}


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """Class folders named as small_model's classes, 4 noisy images each, and one unreadable file."""
    root = tmp_path_factory.mktemp("calib")
    colour_folders(root, 4, (80, 96), 25)
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_artefact_is_written_with_its_report_and_opens_as_weights(small_model, colours, backend, tmp_path):
    out = tmp_path / f"q{SUFFIX[backend]}"
    r = quantize(small_model, colours, out, backend=backend, min_agreement=0.0)
    assert out.is_file() and (backend != "openvino" or out.with_suffix(".bin").is_file())
    assert r["calibration_images"] == 9 and r["heldout_images"] == 3 and len(r["skipped"]) == 1
    assert 0 <= r["agreement"] <= 1 and 0 <= r["max_prob_drift"] <= 1
    assert {"fp32_top1", "fp32_top5", "int8_top1", "int8_top5"} <= set(r)  # the class folders name outputs
    assert r["int8_top5"] == 100.0  # 3 classes
    assert json.loads((tmp_path / "q.report.json").read_text())["agreement"] == r["agreement"]
    session = open_session(out)
    assert session.backend == backend and session.precision == "int8"
    assert session.architecture == "inception_resnet_v1" and session.labels.names == ["red", "green", "blue"]
    assert session.pre.input_size == 75
    fp32 = open_session(small_model, backend=backend)
    x = torch.randint(0, 256, (4, 3, 75, 75), dtype=torch.uint8)
    assert (session(x) - fp32(x)).abs().max().item() < 0.5 and session(x).shape == (4, 3)
    with pytest.raises(ValueError, match="holds int8 inception_resnet_v1 weights, not inception_v4"):
        open_session(out, model="inception_v4")
    with pytest.raises(ValueError, match="runs in int8, not bf16"):
        open_session(out, precision="bf16")
    other = "openvino" if backend == "onnxruntime" else "onnxruntime"
    with pytest.raises(ValueError, match=f"is a {backend} artefact: drop --backend {other}"):
        open_session(out, backend=other)


@pytest.mark.skipif(not BACKENDS, reason="no int8 engine installed")
def test_the_cli_quantizes_and_predicts_with_the_artefact(small_model, colours, tmp_path, capsys):
    backend = BACKENDS[-1]
    weights, out = tmp_path / "m.safetensors", tmp_path / f"q{SUFFIX[backend]}"
    iv.save_weights(small_model, weights, class_names=small_model.class_names)
    args = ["quantize", "--weights", str(weights), "--calibrate", str(colours), "--backend", backend,
            "--out", str(out), "--min-agreement", "0"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"wrote {out} ({backend} int8, inception_resnet_v1; calibrated on 9 images)" in text
    assert "held-out top-1 / top-5" in text and "1 unreadable file(s) passed over" in text
    assert main([*args, "--json"]) == 0  # stdout is the report alone (NNCF's progress goes to stderr)
    assert json.loads(capsys.readouterr().out)["calibration_images"] == 9
    assert main(["predict", "--weights", str(out), "--json", str(colours / "red")]) == 1  # one file is broken
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["ok"] for r in lines] == [True, True, True, True, False]  # 4 reds, then broken.png
    assert sorted(t["name"] for t in lines[0]["top"]) == ["blue", "green", "red"]
    assert main(["predict", "--weights", str(out), "--model", "inception_v4", str(colours / "red")]) == 2
    assert "holds int8 inception_resnet_v1 weights, not inception_v4" in capsys.readouterr().err


@pytest.mark.skipif(not BACKENDS, reason="no int8 engine installed")
def test_agreement_below_the_bar_writes_nothing_and_gives_the_figures(small_model, colours, tmp_path, monkeypatch):
    calls = []

    def shifted(run, views, batch=16):  # the second call is int8's: every top-1 moved to another class
        p = torch.softmax(run(views).float(), 1)
        calls.append(p)
        return p.roll(1, dims=1) if len(calls) == 2 else p

    monkeypatch.setattr(quantize_module, "_probs", shifted)
    out = tmp_path / f"q{SUFFIX[BACKENDS[0]]}"
    with pytest.raises(ValueError, match=r"int8 agrees with fp32 on 0\.0% of 3 held-out images .* below "
                                         r"--min-agreement 99\.0%; nothing written"):  # fmt: skip
        quantize(small_model, colours, out, backend=BACKENDS[0])
    assert list(tmp_path.iterdir()) == []  # no artefact, no report, no temporary folder


def test_bad_calibration_input_is_refused_before_any_work(small_model, tmp_path):
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "a" / "x.jpg").write_bytes(b"\xff\xd8\xffnope")
    backend = BACKENDS[0] if BACKENDS else "onnxruntime"
    if BACKENDS:
        with pytest.raises(ValueError, match=r"0 readable image\(s\); quantize needs at least 2 .*x.jpg: not an image"):
            quantize(small_model, empty, tmp_path / f"q{SUFFIX[backend]}", backend=backend)
    with pytest.raises(ValueError, match="must be a folder of images"):
        quantize(small_model, tmp_path / "nowhere", tmp_path / f"q{SUFFIX[backend]}", backend=backend)
    with pytest.raises(ValueError, match="a openvino artefact is a .xml file: got q.onnx|a onnxruntime artefact"):
        quantize(small_model, empty, tmp_path / "q.onnx" if backend == "openvino" else tmp_path / "q.xml",
                 backend=backend)  # fmt: skip
    with pytest.raises(ValueError, match="openvino or onnxruntime artefact, not 'torch'"):
        quantize(small_model, empty, tmp_path / "q.pt", backend="torch")
    not_ours = tmp_path / "plain.onnx"
    if BACKENDS:
        from inceptionv4.engines.export import export_model

        export_model(small_model, not_ours)
        with pytest.raises(ValueError, match="is not an inceptionv4 int8 artefact"):
            open_session(not_ours)


@pytest.mark.skipif("openvino" not in BACKENDS, reason="OpenVINO and NNCF not installed")
def test_quantize_says_nothing_on_stderr_but_its_own_progress(small_model, colours, tmp_path):
    """NNCF loads torch's extension builder, whose "No CUDA runtime is found" warning a CUDA build of
    torch printed on every CPU quantize (issue 33 item 13): a real process, its whole stderr read."""
    import subprocess
    import sys

    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights, class_names=small_model.class_names)
    proc = subprocess.run([sys.executable, "-m", "inceptionv4", "quantize", "--weights", str(weights), "--calibrate",
                           str(colours), "--out", str(tmp_path / "q.xml"), "--min-agreement", "0"],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "No CUDA runtime" not in proc.stderr and "cpp_extension" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.skipif(not BACKENDS, reason="no int8 engine installed")
def test_an_artefact_given_for_training_or_export_says_it_is_for_inference_and_names_its_weights(
        small_model, colours, tmp_path, capsys):  # fmt: skip
    """train, export, convert and info want fp32 weights: an int8 artefact there is one line that says
    what it is and names the weights its report records (issue 33 item 11), not "not a weights file"."""
    backend = BACKENDS[0]
    weights, out = tmp_path / "m.safetensors", tmp_path / f"q{SUFFIX[backend]}"
    iv.save_weights(small_model, weights, class_names=small_model.class_names)
    r = quantize(str(weights), colours, out, backend=backend, min_agreement=0.0)
    assert r["weights"] == str(weights.resolve())
    said = (f"{out} is an int8 artefact of `inceptionv4 quantize`: it is for inference only (predict, eval, serve, "
            f"bench); train, export, convert and info take the fp32 weights it was made from: {weights.resolve()}")  # fmt: skip
    for argv in (["export", str(tmp_path / "x.onnx"), "--weights", str(out)], ["info", str(out)],
                 ["train", "--pretrained", str(out), "--model", "inception_resnet_v1", "--dataset", "synthetic",
                  "--out-dir", str(tmp_path / "run"), "--max-steps", "1", "--input-size", "75"]):  # fmt: skip
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.endswith(said) and len(err.splitlines()) == 1, err
    with pytest.raises(ValueError, match="is an int8 artefact"):
        iv.load_weights(out)


def _rewrite_metadata(path, backend, change):
    """The artefact at ``path`` with its metadata passed through ``change`` (graph and weights kept)."""
    from inceptionv4.engines.artefacts import ARTEFACT_FORMAT
    from inceptionv4.engines.onnx import openvino_core

    if backend == "onnxruntime":
        import onnx

        proto = onnx.load(str(path))
        entry = next(p for p in proto.metadata_props if p.key == ARTEFACT_FORMAT)
        entry.value = json.dumps(change(json.loads(entry.value)))
        onnx.save(proto, str(path))
        return
    import openvino as ov

    model = openvino_core().read_model(str(path))
    model.set_rt_info(json.dumps(change(json.loads(model.get_rt_info([ARTEFACT_FORMAT]).astype(str)))), [ARTEFACT_FORMAT])
    tmp = path.with_name("edited-" + path.name)
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    tmp.replace(path)
    tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_damaged_or_mismatched_artefact_is_refused_never_answered_from(small_model, colours, backend, tmp_path):
    """Flipped weight bytes, another model's .bin, class names that disagree with the outputs and
    metadata missing its fields each answered with exit 0 or a KeyError (issue 34)."""
    import shutil

    from inceptionv4.engines.artefacts import artefact_metadata

    good = tmp_path / "good" / f"q{SUFFIX[backend]}"
    quantize(small_model, colours, good, backend=backend, min_agreement=0.0)
    assert len(artefact_metadata(good)["digest"]) == 64

    def copy(name):
        target = tmp_path / name / good.name
        shutil.copytree(good.parent, target.parent)
        return target

    flipped = copy("flipped")
    blob = flipped.with_suffix(".bin") if backend == "openvino" else flipped
    data = bytearray(blob.read_bytes())
    for at in range(len(data) // 2, len(data) // 2 + 2000):
        data[at] ^= 0x5A
    blob.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"damaged|another model's|not a readable"):
        open_session(flipped)
    names = copy("names")
    _rewrite_metadata(names, backend, lambda m: {**m, "class_names": ["a", "b"], "num_classes": 2})
    with pytest.raises(ValueError, match=r"the network gives 3 outputs but its metadata says 2 classes"):
        open_session(names)
    odd = copy("odd")
    _rewrite_metadata(odd, backend, lambda m: {**m, "class_names": ["a"]})
    with pytest.raises(ValueError, match=r"its metadata names 1 classes for 3"):
        open_session(odd)
    bare = copy("bare")
    _rewrite_metadata(bare, backend, lambda m: {k: v for k, v in m.items() if k not in ("num_classes", "architecture")})
    with pytest.raises(ValueError, match=r"lacks a valid 'architecture'"):
        open_session(bare)
    if backend == "openvino":  # the .bin of another model beside this .xml
        other_model = iv.create_model("inception_resnet_v1", num_classes=3)
        other_model.class_names, other_model.pretrained_cfg = small_model.class_names, small_model.pretrained_cfg
        other = tmp_path / "other" / good.name
        quantize(other_model, colours, other, backend=backend, min_agreement=0.0)
        swapped = copy("swapped")
        shutil.copyfile(other.with_suffix(".bin"), swapped.with_suffix(".bin"))
        with pytest.raises(ValueError, match=r"its \.bin is not the one written with it|not a readable OpenVINO IR"):
            open_session(swapped)
