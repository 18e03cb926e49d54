"""The trainer end to end: a run folder, exact resume, preemption, NaN handling, DDP, the README example."""

import json
import math
import re
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import inceptionv4 as iv
from inceptionv4.train import (
    NonFiniteLossError,
    latest_checkpoint,
    load_checkpoint,
    train,
)
from inceptionv4.train.checkpoint import list_checkpoints
from inceptionv4.train.runlog import read_metrics

PROBE = Path(__file__).parent / "scripts" / "train_probe.py"
SMALL = {"model": "inception_resnet_v1", "dataset": "synthetic", "input_size": 75, "batch_size": 8, "workers": 0,
         "progress": False, "recipe": "finetune", "from_scratch": True}  # fmt: skip


def _run_probe(out_dir, *settings, env=None, wait=True):
    cmd = [sys.executable, str(PROBE), str(out_dir), *[f"{k}={json.dumps(v)}" for k, v in settings]]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return _summaries(out)[0]


def _summaries(text):
    return [json.loads(line[8:]) for line in text.splitlines() if line.startswith("SUMMARY ")]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    summary = train(**SMALL, epochs=2, out_dir=str(out), plots=True, log_every=2, lr=0.02)
    yield out, summary
    shutil.rmtree(out, ignore_errors=True)  # ~0.4 GB of checkpoints; CI's disk is shared


def test_training_learns_and_writes_its_run_folder(short_run):
    out, s = short_run
    assert s["status"] == "finished" and s["steps"] == 64  # 256 images / 8, two epochs
    assert s["val_top1"] > 50.0  # 4 classes: chance is 25%
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "model.safetensors", "plots/loss.png",
                 "plots/accuracy.png", "plots/lr.png", "plots/confusion.png"):  # fmt: skip
        assert (out / name).is_file(), name
    records = read_metrics(out / "metrics.jsonl")
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2] and epochs[-1]["val_top1"] == pytest.approx(s["val_top1"])
    assert yaml.safe_load((out / "config.yaml").read_text())["lr"] == 0.02
    model = iv.load_weights(out / "model.safetensors")
    assert model.class_names == ["class_0", "class_1", "class_2", "class_3"]


def test_a_short_run_plots_the_schedule_at_every_step_and_its_loss_to_the_end(tmp_path, monkeypatch):
    """18 steps logged every 10: the step records still reach the last step, the learning-rate plot
    is the schedule at every step (warm-up, then decay), and a 4-class head plots no top-5."""
    import inceptionv4.train.trainer as trainer

    calls, plot = [], trainer.plot_run
    monkeypatch.setattr(trainer, "plot_run", lambda out, **kw: calls.append(kw) or plot(out, **kw))
    train(**SMALL, max_steps=18, log_every=10, warmup_epochs=0.25, schedule="cosine", lr=0.01, out_dir=str(tmp_path))
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "step"] == [1, 10, 18]
    [kw] = calls
    steps, rates = kw["lr_curve"]
    assert steps == list(range(1, 19)) and kw["num_classes"] == 4
    peak = rates.index(max(rates))
    assert 0 < peak < 17 and rates[0] < rates[peak] > rates[-1]  # rises through warm-up, then decays
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1:]))
    assert rates[-1] == pytest.approx([r for r in records if r["kind"] == "epoch"][-1]["lr"])


def test_plots_leave_out_top5_for_five_classes_or_fewer(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from inceptionv4.plots import plot_run

    epoch = {"kind": "epoch", "epoch": 1, "step": 4, "val_loss": 1.0, "val_top1": 50.0, "val_top5": 100.0}
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"kind": "step", "step": 1, "loss": 1.2, "lr": 0.1}) + "\n"
                                            + json.dumps(epoch) + "\n")  # fmt: skip
    labels = []
    draw = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda self, *a, **k: labels.append(k.get("label")) or draw(self, *a, **k))
    plot_run(tmp_path, num_classes=3)
    assert "val top-1" in labels and "val top-5" not in labels and "learning rate" in labels
    labels.clear()
    plot_run(tmp_path, num_classes=10, lr_curve=([1, 2, 3, 4], [0.1, 0.2, 0.1, 0.05]))
    assert "val top-5" in labels and "learning rate (schedule)" in labels


def test_a_run_says_what_its_weights_started_from(short_run, tmp_path):
    """In the summary, config.yaml, the final bundle and `info`; a weights file is named with its sha256."""
    out, s = short_run
    assert s["started_from"] == "random weights"
    from inceptionv4.data import run_split

    val, line = run_split(out)  # no images held out: the run's config says where its split is
    assert len(val) == s["val_images"] == 64 and line == f"the 64 val images of run {out} (synthetic)"
    with pytest.raises(FileNotFoundError, match="not a training run's folder"):
        run_split(tmp_path)
    assert yaml.safe_load((out / "config.yaml").read_text())["started_from"] == "random weights"
    info = subprocess.run([sys.executable, "-m", "inceptionv4", "info", str(out / "model.safetensors")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert info.returncode == 0 and "  started from: random weights" in info.stdout, info.stderr
    import hashlib

    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    s2 = train(**{**SMALL, "from_scratch": False}, pretrained=str(out / "model.safetensors"), max_steps=1,
               plots=False, out_dir=str(tmp_path))  # fmt: skip
    assert s2["started_from"] == f"{out / 'model.safetensors'}, sha256 {digest}"
    from inceptionv4.weights import describe_bundle

    assert describe_bundle(s2["weights"])["meta"]["started_from"] == s2["started_from"]


def test_tensorboard_gets_the_same_figures_as_the_metrics_file(short_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = short_run
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    epochs = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "epoch"]
    for tag in ("val_top1", "val_loss", "train_loss", "lr"):
        logged = [(e.step, e.value) for e in events.Scalars(f"epoch/{tag}")]
        assert logged == [(r["step"], pytest.approx(r[tag], rel=1e-6)) for r in epochs], tag
    steps = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "step"]
    assert len(steps) > 1 and len(events.Scalars("step/loss")) == len(steps)


def test_tensorboard_logging_does_not_import_tensorflow(tmp_path):
    """TensorBoard imports TensorFlow where it is installed (about 10 s) unless told to use its stub."""
    pytest.importorskip("tensorboard")
    code = (
        "import sys; from inceptionv4.train.runlog import RunLog; "
        f"log = RunLog({str(tmp_path)!r}, {{}}); log.write({{'kind': 'step', 'step': 1, 'loss': 0.5}}); log.close(); "
        "print('tensorflow' in sys.modules, log._tb is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["False", "True"]
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_resuming_with_other_settings_names_them_and_changes_nothing(short_run):
    out, _ = short_run
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*"))
    with pytest.raises(ValueError, match=r"that run had model 'inception_resnet_v1' \(now 'inception_v4'\)"):
        train(**{**SMALL, "model": "inception_v4"}, out_dir=str(out), resume=True)
    with pytest.raises(ValueError, match=r"optimizer 'sgd' \(now 'adamw'\)"):
        train(**SMALL, optimizer="adamw", out_dir=str(out), resume=True)
    with pytest.raises(FileExistsError, match=r"already holds a run \(checkpoints up to step-00000064.pt\)"):
        train(**SMALL, out_dir=str(out))  # neither resume nor overwrite
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    with pytest.raises(ValueError, match="input_size 50 is below inception_resnet_v1's minimum of 75"):
        train(**{**SMALL, "input_size": 50}, out_dir=str(out / "small"))


def test_overwrite_replaces_the_earlier_run_whole(tmp_path):
    train(**SMALL, out_dir=str(tmp_path), max_steps=2, save_every=1, plots=False, keep_checkpoints=2)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000001.pt", "step-00000002.pt"]
    summary = train(**SMALL, out_dir=str(tmp_path), max_steps=1, plots=False, overwrite=True)
    assert summary["steps"] == 1
    # no step-2 of the earlier run is left for a later resume to pick up
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000001.pt"]


def test_resume_with_nothing_to_resume_starts_fresh_and_says_so(tmp_path, caplog):
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match=r"out_dir .*afile is a file, not a folder"):
        train(**SMALL, out_dir=str(tmp_path / "afile"), max_steps=1, plots=False)
    with caplog.at_level("INFO", logger="inceptionv4.train.trainer"):
        summary = train(**SMALL, out_dir=str(tmp_path / "run"), max_steps=1, plots=False, resume=True)
    assert "--resume: no checkpoint in" in caplog.text and "starting a fresh run" in caplog.text
    assert summary["steps"] == 1 and summary["resumed_from"] is None


def test_trains_on_a_folder_of_class_folders_with_a_held_out_part(tmp_path, caplog):
    from PIL import Image

    for name, color in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (48, 40), color).save(tmp_path / "photos" / name / f"{i}.jpg")
    settings = {**SMALL, "dataset": None, "data": str(tmp_path / "photos"), "batch_size": 4}
    with caplog.at_level("INFO", logger="inceptionv4.train.trainer"):
        s = train(**settings, max_steps=2, plots=False, out_dir=str(tmp_path / "run"))
    assert "no train/ and val/: validating on 2 held-out images (10% of each class), training on 18" in caplog.text
    assert s["status"] == "finished" and s["classes"] == ["cat", "dog"]
    assert (s["train_images"], s["val_images"]) == (18, 2)  # one of each class held out
    # the split is kept in the run folder, and `eval --run` scores the held-out images and no others
    from inceptionv4.data import ListFile

    val, kept = ListFile(tmp_path / "run" / "splits" / "val.txt"), ListFile(tmp_path / "run" / "splits" / "train.txt")
    assert len(val) == 2 and len(kept) == 18 and not {p for p, _ in val.samples} & {p for p, _ in kept.samples}
    assert sorted(val.classes) == ["cat", "dog"]
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "inceptionv4", "eval", "--run", str(tmp_path / "run"), "--report",
                           str(report), "--no-progress"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(report.read_text())
    assert r["n"] == 2 and r["scored"].startswith("the 2 val images of run") and "held out from" in r["scored"]
    assert "scored the 2 val images" in proc.stderr


def test_a_folder_of_one_class_is_refused_before_anything_is_written(tmp_path):
    from PIL import Image

    (tmp_path / "photos" / "cat").mkdir(parents=True)
    for i in range(10):
        Image.new("RGB", (48, 40), (200, 30, 30)).save(tmp_path / "photos" / "cat" / f"{i}.jpg")
    settings = {**SMALL, "dataset": None, "data": str(tmp_path / "photos"), "batch_size": 1}
    with pytest.raises(ValueError, match=r"photos has 1 class \(cat\): a classifier needs at least 2"):
        train(**settings, max_steps=2, plots=False, out_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    common = [*SMALL.items(), ("max_steps", 6), ("save_every", 1), ("deterministic", True), ("plots", False),
              ("lr", 0.05), ("warmup_epochs", 0)]  # fmt: skip
    reference = _run_probe(tmp_path / "ref", *common)
    proc = _run_probe(tmp_path / "killed", *common, wait=False)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpts / "step-00000003.pt").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = latest_checkpoint(ckpts)
    assert done is not None and load_checkpoint(done)["step"] < 6  # killed mid-run
    resumed = _run_probe(tmp_path / "killed", *common, ("resume", True))
    assert resumed["resumed_from"] is not None and resumed["steps"] == 6
    assert resumed["weights_digest"] == reference["weights_digest"]


KILL_POINTS = ["checkpoint:3", "weights", "plots"]


def test_kill_9_at_any_write_then_resume_gives_the_uninterrupted_runs_bytes(tmp_path):
    """kill -9 in the middle of a checkpoint write, of the final weights write and of the plots
    (the last two failed every resume with a NoneType format error), a damaged newest checkpoint,
    and resuming a finished run: each resume finishes with the uninterrupted run's tensors, a
    model.safetensors of the same SHA-256, each metrics row once, and no temp file left."""
    import hashlib

    common = [*SMALL.items(), ("max_steps", 4), ("save_every", 1), ("deterministic", True), ("plots", True),
              ("lr", 0.05), ("warmup_epochs", 0), ("keep_checkpoints", 2)]  # fmt: skip
    reference = _run_probe(tmp_path / "ref", *common)
    sha = hashlib.sha256((tmp_path / "ref" / "model.safetensors").read_bytes()).hexdigest()
    want_rows = _measured(tmp_path / "ref")
    outcomes = {}
    for point in KILL_POINTS:
        run = tmp_path / point.replace(":", "-")
        proc = _run_probe(run, *common, env={"PROBE_KILL": point}, wait=False)
        proc.communicate(timeout=600)
        assert proc.returncode == -signal.SIGKILL, point
        outcomes[point] = _resumed(run, common)
    # a damaged newest checkpoint: the intact one before it is resumed from
    run = tmp_path / "damaged"
    proc = _run_probe(run, *common, env={"PROBE_KILL": "weights"}, wait=False)
    proc.communicate(timeout=600)
    newest = latest_checkpoint(run / "checkpoints")
    newest.write_bytes(newest.read_bytes()[:1000])
    outcomes["damaged newest checkpoint"] = _resumed(run, common)
    outcomes["resume of a finished run"] = _resumed(tmp_path / "ref", common)
    for what, (summary, run) in outcomes.items():
        assert summary["status"] == "finished" and summary["steps"] == 4, what
        assert summary["weights_digest"] == reference["weights_digest"], what
        assert hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest() == sha, what
        assert _measured(run) == want_rows, what
        records = [(r["kind"], r["step"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
        assert len(records) == len(set(records)), what
        assert (run / "plots" / "loss.png").is_file() and summary["val_top1"] is not None, what
        assert not [f for f in run.rglob("*") if ".tmp" in f.name], what
    assert len(outcomes) == 5


def _measured(run: Path) -> list[list[str]]:
    """metrics.csv without its timings: what a resumed run must reproduce, row for row."""
    import csv

    with open(run / "metrics.csv", newline="") as f:
        return [[v for k, v in row.items() if k not in ("epoch_time_s", "img_per_s")] for row in csv.DictReader(f)]


def _resumed(run, common) -> tuple[dict, Path]:
    return _run_probe(run, *common, ("resume", True)), run


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    proc = _run_probe(tmp_path, *SMALL.items(), ("epochs", 3), ("plots", False), wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path).glob("metrics.jsonl")):
        time.sleep(0.05)
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    s = _summaries(out)[0]
    assert s["status"] == "preempted" and 0 < s["steps"] < 96
    assert load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))["step"] == s["steps"]


def test_nan_loss_stops_without_overwriting_a_checkpoint(tmp_path, monkeypatch):
    from inceptionv4.train import trainer

    calls = {"n": 0}
    real = trainer.F.cross_entropy

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * math.nan if calls["n"] == 4 else loss

    monkeypatch.setattr(trainer.F, "cross_entropy", poisoned)
    with pytest.raises(NonFiniteLossError, match="non-finite loss .* at step 3") as err:
        train(**SMALL, epochs=1, max_steps=6, save_every=2, out_dir=str(tmp_path), plots=False)
    assert "step-00000002.pt" in str(err.value)
    assert load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))["step"] == 2

    calls["n"] = 0
    s = train(**SMALL, epochs=1, max_steps=6, out_dir=str(tmp_path / "skip"), plots=False, nan_policy="skip")
    assert s["status"] == "finished" and s["skipped_steps"] == 1 and s["steps"] == 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_SETTINGS = [*SMALL.items(), ("max_steps", 3), ("drop_rate", 0.0), ("freeze_bn", True), ("plots", False),
                ("deterministic", True), ("lr", 0.05), ("warmup_epochs", 0), ("accum_steps", 2)]  # fmt: skip


def _torchrun(args, out_dir):
    cmd = [sys.executable, "-m", "torch.distributed.run", *args, str(PROBE), str(out_dir),
           *[f"{k}={json.dumps(v)}" for k, v in DDP_SETTINGS]]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip


def test_ddp_two_processes_equal_one_process(tmp_path):
    """gloo on CPU: both ranks end identical, and equal (fp32 tolerance) to one process, same global batch."""
    single = _run_probe(tmp_path / "one", *DDP_SETTINGS)
    proc = _torchrun(
        ["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port())], tmp_path / "two"
    )
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    ranks = {s["rank"]: s for s in _summaries(out)}
    assert sorted(ranks) == [0, 1]
    assert ranks[0]["weights_digest"] == ranks[1]["weights_digest"]
    one = iv.load_weights(tmp_path / "one" / "model.safetensors").state_dict()
    two = iv.load_weights(tmp_path / "two" / "model.safetensors").state_dict()
    worst = max((one[k].double() - two[k].double()).abs().max().item() for k in one if one[k].is_floating_point())
    assert worst < 1e-4
    torch.manual_seed(0)  # the trainer's initial weights: the runs really moved away from them
    init = iv.create_model("inception_resnet_v1", num_classes=4, drop_rate=0.0).state_dict()
    assert (init["head.fc.weight"] - two["head.fc.weight"]).abs().max() > 1e-3
    assert ranks[0]["val_top1"] == pytest.approx(single["val_top1"], abs=2.0)


def test_under_torchrun_only_rank_0_speaks(tmp_path):
    """The command line and the Python train() alike: one epoch line, one summary, no rank-1 noise."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({**SMALL, "max_steps": 2, "plots": False, "out_dir": str(tmp_path / "cli")}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "inceptionv4", "train", "--config", str(cfg)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("finished 2 steps") == 1 and "weights None" not in proc.stdout
    assert proc.stderr.count("epoch 1/10: train loss") == 1, proc.stderr[-3000:]
    assert proc.stderr.count("a short run: warm-up") == 1, proc.stderr[-3000:]
    probe = _torchrun(["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port())],
                      tmp_path / "api")  # fmt: skip
    _, err = probe.communicate(timeout=600)
    assert probe.returncode == 0 and err.count("epoch 1/1: train loss") == 1, err[-3000:]


def test_two_nodes_meet_on_localhost(tmp_path):
    """The multi-node path: two torchrun 'nodes' of one process each, c10d rendezvous on 127.0.0.1."""
    port = _free_port()
    common = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
              "--rdzv-id", "test-job"]  # fmt: skip
    nodes = [_torchrun([*common, "--node-rank", str(n)], tmp_path / "multi") for n in (0, 1)]
    outs = [p.communicate(timeout=600) for p in nodes]
    assert all(p.returncode == 0 for p in nodes), [e[-2000:] for _, e in outs]
    summaries = [s for out, _ in outs for s in _summaries(out)]
    assert sorted(s["rank"] for s in summaries) == [0, 1]
    assert len({s["weights_digest"] for s in summaries}) == 1
    assert (tmp_path / "multi" / "model.safetensors").is_file()


def test_cli_train_with_yaml(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({**SMALL, "max_steps": 2, "plots": False, "out_dir": str(tmp_path / "out")}))
    proc = subprocess.run([sys.executable, "-m", "inceptionv4", "train", "--config", str(cfg), "--epochs", "1"],
                          capture_output=True, text=True, check=False, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finished 2 steps" in proc.stdout
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["max_steps"] == 2


def test_accumulation_and_grad_checkpointing_equal_the_plain_step_and_aux_loss_trains(tmp_path):
    common = {
        **SMALL,
        "max_steps": 2,
        "drop_rate": 0.0,
        "freeze_bn": True,
        "plots": False,
        "lr": 0.05,
        "warmup_epochs": 0,
    }
    a = train(**common, out_dir=str(tmp_path / "a"))
    b = train(**common, accum_steps=2, out_dir=str(tmp_path / "b"))
    wa = iv.load_weights(tmp_path / "a" / "model.safetensors").state_dict()
    wb = iv.load_weights(tmp_path / "b" / "model.safetensors").state_dict()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa if wa[k].is_floating_point()) < 1e-4
    assert a["steps"] == b["steps"] == 2
    assert train(**common, grad_checkpointing=True, out_dir=str(tmp_path / "d"))["steps"] == 2  # recomputed blocks
    wd = iv.load_weights(tmp_path / "d" / "model.safetensors").state_dict()
    assert max((wa[k] - wd[k]).abs().max().item() for k in wa if wa[k].is_floating_point()) < 1e-4
    assert yaml.safe_load((tmp_path / "d" / "config.yaml").read_text())["grad_checkpointing"] is True
    c = train(**common, aux_weight=0.4, out_dir=str(tmp_path / "c"))
    assert c["status"] == "finished"
    assert any(k.startswith("aux_head.") for k in iv.load_weights(tmp_path / "c" / "model.safetensors").state_dict())


def test_freeze_backbone_trains_the_head_only(tmp_path):
    torch.manual_seed(0)
    init = iv.create_model("inception_resnet_v1", num_classes=4).state_dict()
    train(**SMALL, max_steps=2, freeze_backbone=True, freeze_bn=True, plots=False, lr=0.05, warmup_epochs=0,
          out_dir=str(tmp_path))  # fmt: skip
    after = iv.load_weights(tmp_path / "model.safetensors").state_dict()
    assert torch.equal(after["stem.conv1a.conv.weight"], init["stem.conv1a.conv.weight"])
    assert torch.equal(after["stage_b.3.expand.weight"], init["stage_b.3.expand.weight"])
    assert not torch.equal(after["head.fc.weight"], init["head.fc.weight"])


def test_bf16_autocast_and_channels_last_train_on_cpu(tmp_path):
    s = train(**SMALL, max_steps=2, precision="bf16", channels_last=True, plots=False, out_dir=str(tmp_path))
    assert s["status"] == "finished" and math.isfinite(s["val_loss"])
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16; got 'fp8'"):
        train(**SMALL, precision="fp8", out_dir=str(tmp_path / "x"))


def test_amp_the_old_name_of_precision_is_read_with_a_notice(tmp_path, caplog):
    """--amp, amp= and a config file's amp: read as precision ("none" is fp32), said to be deprecated."""
    from inceptionv4.train import TrainConfig

    with pytest.warns(DeprecationWarning, match="amp is deprecated: use precision bf16"):
        assert TrainConfig.from_sources(amp="bf16").precision == "bf16"
    with pytest.warns(DeprecationWarning):
        assert TrainConfig.from_sources(amp="none").precision == "fp32"
    (tmp_path / "old.yaml").write_text("amp: fp16\nepochs: 2\n")
    with pytest.warns(DeprecationWarning):
        assert TrainConfig.from_sources(tmp_path / "old.yaml").precision == "fp16"
    with pytest.raises(ValueError, match="give precision or the deprecated amp, not both"):
        TrainConfig.from_sources(amp="bf16", precision="bf16")
    with pytest.raises(ValueError, match="amp must be one of none, bf16, fp16; got 'fp8'"):
        TrainConfig.from_sources(amp="fp8")
    from inceptionv4.cli import build_parser

    args = build_parser().parse_args(["train", "--amp", "bf16"])
    assert args.amp == "bf16" and args.precision is None  # parsed; _train hands it to from_sources


def test_the_readmes_training_example_trains(tmp_path, monkeypatch, caplog, capsys, demo_environment):
    """The README's Python training block, as written, from a scratch folder, where only what
    `make demo` installs can be imported: a short run is fitted to its length, says so, and learns
    the digits."""
    import logging
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.findall(r"```python\n(.*?)```", readme, re.S)[2]
    assert 'recipe="modern"' in block and 'dataset="digits"' in block
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        exec(compile(block, "README.md training block", "exec"), {"__name__": "readme"})  # noqa: S102
    top1, weights = capsys.readouterr().out.split()
    assert float(top1) >= 90.0, top1
    assert Path(weights).resolve() == (tmp_path / "runs/quick/model.safetensors").resolve()
    said = caplog.text
    assert "warm-up 5 epochs -> " in said and "weight averaging (EMA 0.9998) off" in said


def test_fp16_training_on_a_cpu_without_fp16_units_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """torch emulates fp16 on such a CPU, about 10x slower than fp32 (issue 33): one line that says
    so and what to use, before a step runs or the run folder is made."""
    from inceptionv4 import devices as devices_module

    monkeypatch.setattr(devices_module, "cpu_features", lambda: dict.fromkeys(
        ("avx2", "avx512", "vnni", "avx512_bf16", "amx", "avx512_fp16", "amx_fp16"), False) | {"avx2": True})  # fmt: skip
    with pytest.raises(ValueError, match=r"precision fp16 on a CPU needs AVX-512 FP16 or AMX-FP16; on this one \(AVX2\) "
                                         r"torch emulates it, about 10x slower than fp32: use --precision bf16 or fp32"):  # fmt: skip
        train(**SMALL, precision="fp16", max_steps=1, plots=False, out_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_train_takes_device_as_the_other_commands_do(tmp_path, monkeypatch, capsys):
    """--device (issue 33 item 4): cpu trains there; a device this machine lacks, or no device at
    all, is refused before any data is read, with the words eval and predict use."""
    from inceptionv4.cli import main

    s = train(**SMALL, device="cpu", max_steps=1, plots=False, out_dir=str(tmp_path / "cpu"))
    assert s["status"] == "finished" and s["steps"] == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, words in (("cuda", "device 'cuda': PyTorch sees no CUDA GPU on this machine"),
                          ("tpu", "unknown device 'tpu': give auto, cpu, cuda, cuda:N or mps")):  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(words)):
            train(**SMALL, device=device, max_steps=1, plots=False, out_dir=str(tmp_path / device))
        assert not (tmp_path / device).exists()
    assert main(["train", "--device", "cuda:1", "--dataset", "synthetic", "--out-dir", str(tmp_path / "x")]) == 2
    assert "inceptionv4 train: error: device 'cuda:1': PyTorch sees no CUDA GPU" in capsys.readouterr().err


def test_a_run_whose_images_cannot_be_read_stops_instead_of_finishing(tmp_path):
    """Every training image unreadable 'finished' with loss 0.0 and wrote a model (issue 34): now
    it stops at the epoch's end, naming the first files, and writes no weights; a share under
    max_unreadable is skipped and counted as before."""
    from PIL import Image

    from inceptionv4.train import UnreadableDataError

    for name, color in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (48, 40), color).save(tmp_path / "photos" / name / f"{i}.jpg")
            (tmp_path / "junk" / name).mkdir(parents=True, exist_ok=True)
            (tmp_path / "junk" / name / f"{i}.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    settings = {**SMALL, "dataset": None, "batch_size": 4, "max_steps": 4, "plots": False}
    with pytest.raises(UnreadableDataError, match=r"epoch 1: 16 of 16 training images could not be read, 4 whole "
                                                  r"batch\(es\) among them.*The first: .*junk/cat/\d\.jpg: "):  # fmt: skip
        train(**settings, data=str(tmp_path / "junk"), out_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run" / "model.safetensors").exists()
    import hashlib

    held = min((f"{i}.jpg" for i in range(10)), key=lambda n: hashlib.sha1(n.encode()).digest())  # validates
    victim = next(f"{i}.jpg" for i in range(10) if f"{i}.jpg" != held)
    (tmp_path / "photos" / "cat" / victim).write_bytes(b"broken")  # 1 of 18 training images: counted, not fatal
    whole_epoch = {**settings, "batch_size": 3, "max_steps": None, "epochs": 1}  # all 18, 6 steps of 3
    s = train(**whole_epoch, data=str(tmp_path / "photos"), out_dir=str(tmp_path / "ok"))
    assert s["status"] == "finished" and [f.split(": ")[0] for f in s["skipped_files"]] == [
        str(tmp_path / "photos" / "cat" / victim)]  # fmt: skip
    with pytest.raises(UnreadableDataError, match="1 of 18 training images could not be read, over the 0% max"):
        train(**whole_epoch, data=str(tmp_path / "photos"), out_dir=str(tmp_path / "strict"), max_unreadable=0.0)
