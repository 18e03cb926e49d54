"""The demo pipeline, reduced: every artefact is written and the ONNX export agrees with eager."""

import shutil
from pathlib import Path

import pytest

from inceptionv4.demo import format_report, run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    yield run_demo(out, max_steps=4, samples=4, progress=False)
    shutil.rmtree(out, ignore_errors=True)  # ~0.4 GB of checkpoints; CI's disk is shared


def test_every_artefact_exists(demo):
    out = Path(demo["out_dir"])
    for rel in ("model.safetensors", "model.onnx", "metrics.jsonl", "metrics.csv", "config.yaml", "plots/loss.png",
                "plots/accuracy.png", "plots/lr.png", "plots/confusion.png"):  # fmt: skip
        assert (out / rel).is_file(), rel
    assert len(list((out / "samples").glob("*.png"))) == 4
    assert demo["steps"] == 4 and demo["val_images"] == 359


def test_onnx_agrees_with_eager(demo):
    assert demo["onnx_max_abs_diff"] < 1e-4
    for row in demo["samples"]:
        assert row["onnx"] == row["eager"]
        assert row["onnx_prob"] == pytest.approx(row["eager_prob"], abs=1e-4)


def test_report_names_everything(demo):
    text = format_report(demo)
    assert "held-out digits" in text and "model.onnx" in text and "inceptionv4 predict" in text
    assert text.count("label") >= 4
