"""tools.triton: the model repository parses with Triton's own schema, and its models run in the
engines with exactly the names, dtypes and dims the configs declare."""

import importlib.util
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from inceptionv4.cli import main
from inceptionv4.infer.predict import predict
from inceptionv4.tools.triton import export_triton, preferred_sizes, read_config

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient (the test extra) parses the configs")
ort = pytest.importorskip("onnxruntime")

DTYPES = {"TYPE_FP32": np.float32}


def test_repository_configs_parse_and_match_the_models(small_model, tmp_path):
    from tritonclient.grpc import model_config_pb2 as pb

    r = export_triton(small_model, tmp_path / "repo", max_batch_size=16)
    names = set(r["models"])
    openvino = importlib.util.find_spec("openvino") is not None
    assert names == {"inception_resnet_v1"} | ({"inception_resnet_v1_openvino"} if openvino else set())
    x = np.random.default_rng(0).standard_normal((5, 3, 75, 75)).astype(np.float32)
    with torch.no_grad():
        want = small_model(torch.from_numpy(x)).numpy()
    for name, info in r["models"].items():
        folder = tmp_path / "repo" / name
        config = read_config(folder / "config.pbtxt")
        assert config.name == name and config.backend == info["backend"] and config.max_batch_size == 16
        assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16]
        (inp,), (out,) = config.input, config.output
        assert inp.data_type == pb.TYPE_FP32 and inp.format == pb.ModelInput.FORMAT_NCHW and list(inp.dims) == [3, 75, 75]
        assert out.data_type == pb.TYPE_FP32 and list(out.dims) == [3] and out.label_filename == "labels.txt"
        assert (folder / out.label_filename).read_text().splitlines() == ["red", "green", "blue"]
        if info["backend"] == "onnxruntime":
            sess = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
            (i,), (o,) = sess.get_inputs(), sess.get_outputs()
            assert (i.name, i.type, i.shape[1:]) == (inp.name, "tensor(float)", list(inp.dims))
            assert (o.name, o.type, o.shape[1:]) == (out.name, "tensor(float)", list(out.dims))
            assert isinstance(i.shape[0], str)  # the batch dimension is dynamic, as max_batch_size > 0 needs
            got = sess.run([out.name], {inp.name: x})[0]
        else:
            import openvino as ov

            # f32: on a CPU with bf16 units OpenVINO would otherwise run bf16 (about 1e-3 off)
            compiled = ov.Core().compile_model(str(folder / "1" / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            port_in, port_out = compiled.input(0), compiled.output(0)
            assert port_in.any_name == inp.name and port_out.any_name == out.name
            assert port_in.get_element_type() == ov.Type.f32 and port_in.get_partial_shape()[0].is_dynamic
            assert [d.get_length() for d in list(port_in.get_partial_shape())[1:]] == list(inp.dims)
            got = compiled(x)[port_out]
        assert got.dtype == DTYPES[pb.DataType.Name(out.data_type)] and got.shape == (5, *out.dims)
        assert np.abs(got - want).max() < 1e-4
    assert preferred_sizes(32) == [4, 8, 16, 32] and preferred_sizes(6) == [4, 6] and preferred_sizes(1) == [1]


def test_the_written_client_preprocesses_as_predict_does(small_model, tmp_path):
    export_triton(small_model, tmp_path / "repo", openvino=False)
    spec = importlib.util.spec_from_file_location("triton_client", tmp_path / "repo" / "client.py")
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    sess = ort.InferenceSession(str(tmp_path / "repo" / "inception_resnet_v1" / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])  # fmt: skip
    rng = np.random.default_rng(1)
    for i, shape in enumerate(((90, 120, 3), (140, 80, 3))):  # landscape and portrait
        path = tmp_path / f"{i}.png"
        smooth = Image.fromarray(rng.integers(0, 256, (shape[0] // 10, shape[1] // 10, 3), dtype=np.uint8))
        smooth.resize(shape[1::-1], Image.BICUBIC).save(path)
        x = client.preprocess(path)
        assert x.shape == (3, 75, 75) and x.dtype == np.float32
        logits = sess.run(None, {"images": x[None]})[0][0]
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        ours = next(predict(small_model, str(path), topk=3))["top"]
        assert int(probs.argmax()) == ours[0]["index"]
        assert max(abs(probs[t["index"]] - t["prob"]) for t in ours) < 5e-3  # PIL's resize against torchvision's
    text = (tmp_path / "repo" / "README.md").read_text()
    assert "Resize the shorter side to 85 px" in text and "mean [0.5, 0.5, 0.5]" in text


def test_cli_writes_a_repository_and_refuses_what_it_cannot(small_model, tmp_path, capsys):
    import inceptionv4 as iv

    iv.save_weights(small_model, tmp_path / "m.safetensors", class_names=small_model.class_names)
    assert main(["export", str(tmp_path / "repo"), "--weights", str(tmp_path / "m.safetensors"), "--format", "triton",
                 "--max-batch-size", "8"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "tritonserver --model-repository=" in out and "(onnxruntime backend" in out
    assert read_config(tmp_path / "repo" / "inception_resnet_v1" / "config.pbtxt").max_batch_size == 8
    assert main(["export", str(tmp_path / "r2"), "--model", "inception_v4", "--format", "triton", "--input-size",
                 "99"]) == 2  # fmt: skip
    assert "--format triton exports at the model's own input size" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        export_triton(small_model, tmp_path / "r3", max_batch_size=0)
    assert sys.modules.get("tritonclient") is not None  # the schema really was Triton's
