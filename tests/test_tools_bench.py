"""tools.bench.compare_engines: every path this machine runs, one table, ratios taken in the same run."""

import pytest
import torch

import inceptionv4 as iv
from inceptionv4.extras import installed
from inceptionv4.devices import vector_units
from inceptionv4.models import count_flops
from inceptionv4.tools.bench import benchmark, compare_engines, engine_paths


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


def test_bench_reports_ratio_against_timm():
    pytest.importorskip("timm")
    r = benchmark("inception_v4", batch_size=1, input_size=75, warmup=1, iters=2, compare="timm")
    assert r["ours"]["img_per_s"] > 0 and r["timm"]["img_per_s"] > 0
    assert r["speedup_vs_timm"] == pytest.approx(r["ours"]["img_per_s"] / r["timm"]["img_per_s"])
    with torch.device("meta"):
        assert r["gflops_per_image"] == pytest.approx(count_flops(iv.create_model("inception_v4"), 75) / 1e9)
    t = benchmark("inception_resnet_v1", batch_size=2, input_size=75, warmup=1, iters=1, mode="train")
    assert t["ours"]["latency_p50_ms"] > 0
    with pytest.raises(ValueError, match="timm has no inception_resnet_v2_paper"):
        benchmark("inception_resnet_v2_paper", batch_size=1, input_size=75, iters=1, warmup=0, compare="timm")
