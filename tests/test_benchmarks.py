"""The benchmark scripts run as they are: a GPU lease is too short to find a broken script on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inceptionv4.devices import cpu_features, vector_units

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=600,
                          check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_gpu_script_smoke_run_writes_every_eager_figure(tmp_path):
    """``gpu.sh`` itself, as a lent GPU machine runs it (there the package is imported from the
    checkout, not installed), on the CPU at tiny sizes: gpu.py's eager and pipeline figures, then
    optim_step.py's table."""
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "PY": sys.executable}
    proc = subprocess.run(["bash", str(BENCH / "gpu.sh"), str(tmp_path / "g.json")], capture_output=True, text=True,
                          timeout=900, check=False, env=env)  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0 and "stopped early" not in out, (out + proc.stderr)[-3000:]
    assert f"inceptionv4 from {BENCH.parent / 'src' / 'inceptionv4' / '__init__.py'}" in out
    figures = json.loads((tmp_path / "g.json").read_text())
    (row,) = figures["rows"]
    eager = ["timm_eager_inf", "ours_eager_inf", "ours_folded_inf", "timm_eager_train", "ours_eager_train"]
    assert all(row[k] > 0 and row[k + "_wall_s"] > 0 for k in eager)
    assert "ours_compiled_inf" not in row  # no compiling on a CPU smoke run unless asked
    rates = ("workers_full_img_s_per_core", "device_path_worker_img_s_per_core", "device_path_device_img_s")
    assert all(figures["pipeline"][k] > 0 for k in rates)
    assert figures["pipeline"]["device_vs_cpu_decode_max_levels"] == 0.0  # on a CPU, the same decoder
    assert figures["pipeline"]["eval144_device_views_s"] > 0
    # evaluate_protocol end to end with each decoder (12 crops on a quick run, 144 on a GPU)
    assert all(figures["pipeline"][f"e2e_eval{c}_{d}_img_s"] > 0 for c in (1, 12) for d in ("workers", "device"))
    assert "| inception_v4 |" in out and "eval: worker cores to feed the fastest eager inference pass: 1 crop(s)" in out
    # then the optimizer-step table
    rows = json.loads((tmp_path / "g_optim.json").read_text())["rows"]
    assert {r["what"] for r in rows} >= {"rmsprop_tf loop", "rmsprop_tf foreach", "sgd fused (trainer)",
                                         "adamw fused (trainer)", "ema foreach (trainer)"}  # fmt: skip
    assert all(r["ms"] > 0 for r in rows)
    # and the host CPU's engine table (`inceptionv4 bench`; torch only on a quick run)
    cpu = json.loads((tmp_path / "g_cpu.json").read_text())
    paths = {r["path"] for r in cpu["rows"]}
    assert {"timm eager fp32", "torch fp32 eager"} <= paths and all(r["img_per_s"] > 0 for r in cpu["rows"])
    assert ("torch bf16 eager" in paths) == (cpu_features()["avx512_bf16"] or cpu_features()["amx"])
    assert cpu["cpu"] == vector_units()


def test_input_pipeline_script_measures_both_pipelines(tmp_path):
    out = _run(
        "input_pipeline.py", "--images", "16", "--batch", "8", "--size", "75", "--json", str(tmp_path / "p.json")
    )
    figures = json.loads((tmp_path / "p.json").read_text())["figures"]
    assert all(figures[k] > 0 for k in ("workers_full_img_s_per_core", "device_path_worker_img_s_per_core",
                                        "device_path_device_img_s"))  # fmt: skip
    assert "| device path: worker share (one core) |" in out
    for crops in (1, 12, 144):  # evaluation: the worker's share both ways, and the device's
        assert all(figures[f"eval{crops}_{k}"] > 0 for k in ("pieces_img_s_per_core", "all_views_img_s_per_core",
                                                                "device_views_s", "device_decode_views_s")), crops  # fmt: skip
    assert "| 144 crops |" in out


def test_pipeline_script_measures_every_path_against_the_engine(tmp_path):
    """benchmarks/pipeline.py at tiny sizes: engine, predict (small, phone reduced and full), eval and
    serve rows, each with its ratio to the engine row of the same run."""
    _run("pipeline.py", "--model", "inception_resnet_v1", "--precisions", "fp32", "--small", "4", "--phone", "2",
         "--clients", "2", "--engine-batch", "2", "--engine-passes", "1", "--no-benchmark-app",
         "--json", str(tmp_path / "p.json"))  # fmt: skip
    rows = json.loads((tmp_path / "p.json").read_text())["results"]["fp32"]
    what = [r["what"] for r in rows]
    assert what[0].startswith("engine alone") and rows[0]["vs_engine"] == 1.0
    assert any(w.startswith("predict, 2 photos 4000x3000 (reduced") for w in what)
    assert any(w.startswith("eval, 4 JPEGs") for w in what) and sum(w.startswith("serve") for w in what) == 3
    assert all(r["img_per_s"] > 0 and r.get("errors", 0) == 0 for r in rows)


def test_decode_fidelity_script_bounds_the_reduced_decode(tmp_path):
    _run("decode_fidelity.py", "--photos", "1", "--weights", str(tmp_path / "none"), "--json", str(tmp_path / "f.json"))
    views = json.loads((tmp_path / "f.json").read_text())["views"]
    assert [v["scale"] for v in views] == [8, 4]  # 342 and 470 pixel sides of a 3000-pixel one
    assert all(v["mean_levels"] < 1.5 and v["reduced_ms"] < v["full_ms"] for v in views)


def test_decode_memory_script_measures_ours_against_plain_pil(tmp_path):
    _run("decode_memory.py", "--side", "1500", "--json", str(tmp_path / "m.json"))
    rows = {r["kind"]: r for r in json.loads((tmp_path / "m.json").read_text())["rows"]}
    assert len(rows) == 4 and all(r["estimate"] > 0 and r["ours_s"] > 0 for r in rows.values())


def test_explain_script_prints_the_cost_of_each_path_beside_predict(tmp_path):
    out = _run("explain.py", "--model", "inception_resnet_v1", "--images", "2", "--rounds", "1", "--json",
               str(tmp_path / "e.json"))  # fmt: skip
    rows = json.loads((tmp_path / "e.json").read_text())["cost"]
    assert [r["path"] for r in rows][1:] == ["predict (torch fp32)", "explain hirescam (torch fp32)",
                                             "explain gradcam (torch fp32)", "explain hirescam + overlay PNGs"]  # fmt: skip
    assert rows[0]["vs_plain_predict"] == 1.0 and all(r["ms_per_image"] > 0 for r in rows)
    assert "| explain gradcam (torch fp32) |" in out


def test_embed_script_times_embed_beside_predict(tmp_path):
    pytest.importorskip("ray")
    out = _run("embed.py", "--model", "inception_resnet_v1", "--images", "4", "--rounds", "1", "--ray", "1",
               "--json", str(tmp_path / "e.json"))  # fmt: skip
    rates = json.loads((tmp_path / "e.json").read_text())["img_per_s"]
    assert set(rates) == {"predict", "embed -> Parquet", "embed --ray (1 actors)"} and all(r > 0 for r in rates.values())
    assert "| embed -> Parquet |" in out
