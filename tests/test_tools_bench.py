"""tools.bench.compare_engines: every path this machine runs, one table, ratios taken in the same run."""

import pytest

from inceptionv4.infer.session import installed, vector_units
from inceptionv4.tools.bench import compare_engines, engine_paths


@pytest.mark.skipif(not installed("onnxruntime"), reason="onnxruntime is not installed")
def test_compare_engines_times_every_path_at_every_batch_size():
    r = compare_engines("inception_resnet_v1", batch_sizes=(2, 1), rounds=1, seconds=0.0,
                        backends=["torch", "onnxruntime"], precisions=["fp32"])  # fmt: skip
    paths = ["torch fp32 eager", "onnxruntime fp32"]  # timm has no inception_resnet_v1
    assert [(row["batch_size"], row["path"]) for row in r["rows"]] == [(b, p) for b in (2, 1) for p in paths]
    assert r["cpu"] == vector_units() and r["device"] == "cpu" and r["rounds"] == 1
    for b in (2, 1):
        rows = {row["path"]: row for row in r["rows"] if row["batch_size"] == b}
        ref = rows["onnxruntime fp32"]["img_per_s"]
        assert rows["onnxruntime fp32"]["vs onnxruntime fp32"] == 1.0
        for row in rows.values():
            assert row["img_per_s"] > 0 and "vs timm eager fp32" not in row and "vs openvino fp32" not in row
            assert row["vs onnxruntime fp32"] == pytest.approx(row["img_per_s"] / ref)


def test_engine_paths_follow_the_machine_and_refuse_unknown_names():
    assert engine_paths(device="cuda") == [("torch", "fp32", "eager"), ("torch", "bf16", "eager")]
    assert all(p[0] == "openvino" for p in engine_paths(backends=["openvino"]))
    assert all(p[1] == "int8" for p in engine_paths(precisions=["int8"]))
    with pytest.raises(ValueError, match="unknown backend tensorrt: choose from torch, onnxruntime, openvino"):
        engine_paths(backends=["tensorrt"])
    with pytest.raises(ValueError, match="unknown precision int4"):
        engine_paths(precisions=["int4"])
