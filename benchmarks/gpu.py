"""The GPU table: ours and timm, inference and training, both released models, and the input
pipeline (the rows of benchmarks/input_pipeline.py), measured side by side in one run (target:
under 5 minutes on one H100).

    python benchmarks/gpu.py --json gpu.json            # on a CUDA machine
    python benchmarks/gpu.py --device cpu --quick        # a smoke run of the script itself

bf16 autocast and channels_last throughout; timm compiled with torch.compile's default mode. The
training step is forward, backward and a fused SGD step (the same optimizer for both). Each
figure is printed as it is measured and the JSON rewritten after it, so a run cut short (a
device lease ending) keeps what it measured. Compiled rows come after the eager ones of the
same model and are skipped, marked as such, once ``--budget`` seconds have passed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch
from input_pipeline import jpegs, measure_eval, write_folder
from input_pipeline import measure as measure_pipeline

import inceptionv4 as iv
from inceptionv4.tools.bench import measure
from inceptionv4.models.fold import fold_batchnorm
from inceptionv4.engines.torch import compile_for_inference
from inceptionv4.devices import vector_units


def cpu_description() -> str:
    """The processor's name, its vector units and the kernels PyTorch picked for them."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}; {vector_units()}; PyTorch kernels: {torch.backends.cpu.get_cpu_capability()}"


def throughput(model, mode: str, batch: int, size: int, dev: torch.device, warmup: int, iters: int,
               compile: bool = False) -> float:  # fmt: skip
    """img/s of ``inceptionv4 bench``'s measurement: bf16 autocast, channels_last."""
    return measure(model, batch_size=batch, input_size=size, device=str(dev), precision="bf16", channels_last=True,
                   compile=compile, mode=mode, warmup=warmup, iters=iters)["img_per_s"]  # fmt: skip


def eval_end_to_end(ds, size: int, dev: torch.device, quick: bool) -> dict[str, float]:
    """img/s of ``evaluate_protocol`` itself -- loader workers, transfer, views, Inception-v4 in
    bf16 and channels_last -- with each decoder, at 1 crop and at 144 (12 on a quick run). The
    second of two runs is timed: the first tunes cuDNN for the pass shapes and warms the files."""
    from inceptionv4.data.datasets import Subset
    from inceptionv4.infer.evaluate import evaluate_protocol
    from inceptionv4.engines.open import open_session

    model = iv.create_model("inception_v4", num_classes=len(ds.classes)).to(dev).to(memory_format=torch.channels_last)
    model.pretrained_cfg = model.pretrained_cfg.at_input_size(size)
    workers = 1 if quick else min(12, (os.cpu_count() or 2) - 1)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    out: dict[str, float] = {"e2e_eval_workers": workers}
    for crops, n in ((1, 8), (12, 2)) if quick else ((1, 1024), (144, 32)):  # default batch sizes, as a user gets
        subset = Subset(ds, [i % len(ds) for i in range(n)])
        session = open_session(model, backend="torch", device=str(dev), precision="bf16", crops=crops,
                               channels_last=True)  # fmt: skip
        for decode in ("workers", "device"):
            run = {"workers": workers, "decode": decode}
            evaluate_protocol(session, subset, **run)
            sync()
            start = time.perf_counter()
            evaluate_protocol(session, subset, **run)
            sync()
            out[f"e2e_eval{crops}_{decode}_img_s"] = n / (time.perf_counter() - start)
            print(f"eval end to end, {crops} crop(s), --decode {decode}, {workers} workers: "
                  f"{out[f'e2e_eval{crops}_{decode}_img_s']:.1f} img/s", flush=True)  # fmt: skip
    return out


class Table:
    """Figures as they come: printed at once, the JSON rewritten after each."""

    def __init__(self, meta: dict, path: str | None, budget_s: float) -> None:
        self.meta, self.path, self.budget_s = meta, path, budget_s
        self.start = time.perf_counter()
        self.rows: dict[str, dict] = {}
        self.pipeline: dict[str, float] = {}
        print(json.dumps(meta), flush=True)

    def over_budget(self) -> bool:
        return time.perf_counter() - self.start > self.budget_s

    def add(self, model: str, key: str, fn: Callable[[], float], *, compiled: bool = False) -> None:
        row = self.rows.setdefault(model, {"model": model})
        if compiled and self.over_budget():
            row[key] = None
            print(f"{model:20s} {key:28s} skipped (past --budget {self.budget_s:.0f} s)", flush=True)
        else:
            t0 = time.perf_counter()
            row[key] = fn()
            row[key + "_wall_s"] = time.perf_counter() - t0  # compiling included, where there is any
            print(f"{model:20s} {key:28s} {row[key]:10.1f} img/s  ({row[key + '_wall_s']:.0f} s)", flush=True)
        self.save()

    def save(self) -> None:
        if self.path:
            with open(self.path, "w") as fh:
                json.dump(
                    {"meta": self.meta, "rows": list(self.rows.values()), "pipeline": self.pipeline}, fh, indent=2
                )

    def print_table(self) -> None:
        keys = ["timm_eager_inf", "timm_compiled_inf", "ours_eager_inf", "ours_folded_inf", "ours_compiled_inf",
                "timm_eager_train", "ours_eager_train", "ours_compiled_train"]  # fmt: skip
        print("| model | " + " | ".join(k.replace("_", " ") for k in keys) + " |")
        print("|---|" + "---|" * len(keys))
        for r in self.rows.values():
            print(f"| {r['model']} | " + " | ".join(f"{r[k]:.0f}" if r.get(k) else "-" for k in keys) + " |")
        print("input pipeline (img/s):", json.dumps(self.pipeline))
        p, steps = self.pipeline, [r.get("ours_eager_train") for r in self.rows.values()]
        if p.get("device_path_device_img_s") and any(steps):
            fastest = max(s for s in steps if s)
            print(
                f"device pipeline / fastest eager training step: {p['device_path_device_img_s'] / fastest:.2f}x; "
                f"worker cores to feed that step: {fastest / p['workers_full_img_s_per_core']:.1f} "
                f"(--decode workers), {fastest / p['device_path_worker_img_s_per_core']:.1f} (--decode device)"
            )
        inference = [r.get("ours_eager_inf") for r in self.rows.values()]
        if p.get("eval144_pieces_img_s_per_core") and any(inference):
            fastest = max(v for v in inference if v)  # views/s the eval passes take
            runs = [(c, d) for c in (1, 144) for d in ("workers", "device")]
            v4 = self.rows.get("inception_v4", {}).get("ours_eager_inf")  # the network eval_end_to_end runs
            if v4 and all(p.get(f"e2e_eval{c}_{d}_img_s") for c, d in runs):
                print("eval end to end, inception_v4 (img/s; its views/s over its eager inference pass): " + ", ".join(
                    f"{c} crop(s) --decode {d} {p[f'e2e_eval{c}_{d}_img_s']:.0f} "
                    f"({p[f'e2e_eval{c}_{d}_img_s'] * c / v4:.2f}x)" for c, d in runs))  # fmt: skip
            print("eval: worker cores to feed the fastest eager inference pass: " + ", ".join(
                f"{c} crop(s) {fastest / (p[f'eval{c}_pieces_img_s_per_core'] * c):.1f}" for c in (1, 12, 144))
                + f"; device share (cut + normalise) / that pass: {p['eval144_device_views_s'] / fastest:.2f}x"
                + f"; --decode device at 1 crop (nvJPEG + resample) / that pass: "
                  f"{p['eval1_device_decode_views_s'] / fastest:.2f}x")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check that the script runs")
    ap.add_argument("--models", nargs="+", default=["inception_v4", "inception_resnet_v2"])
    ap.add_argument("--budget", type=float, default=300.0, help="seconds after which compiled rows are skipped")
    ap.add_argument("--json", help="write the figures here (after every figure)")
    ap.add_argument("--compile", action="store_true", help="the compiled rows on CPU too (minutes; checks the script)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    import timm

    size, bs_inf, bs_train, warmup, iters = (75, 4, 2, 1, 2) if args.quick else (299, 256, 128, 5, 20)
    meta = {"date": str(date.today()), "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_description(),
            "host": f"{os.cpu_count()} cores ({cpu_description()})",
            "torch": torch.__version__, "timm": timm.__version__, "size": size, "batch_inference": bs_inf,
            "batch_train": bs_train, "precision": "bf16 autocast, channels_last"}  # fmt: skip
    table = Table(meta, args.json, args.budget)
    compiled = dev.type == "cuda" or args.compile  # a CPU smoke run leaves them out: minutes of compiling
    inf = {"mode": "inference", "batch": bs_inf, "size": size, "dev": dev, "warmup": warmup, "iters": iters}
    train = {**inf, "mode": "train", "batch": bs_train}
    for name in args.models:
        # eager rows of both models first: the compiled ones are what a short lease can lose
        table.add(name, "timm_eager_inf", lambda n=name: throughput(timm.create_model(n), **inf))
        table.add(name, "ours_eager_inf", lambda n=name: throughput(iv.create_model(n), **inf))
        table.add(name, "ours_folded_inf", lambda n=name: throughput(fold_batchnorm(iv.create_model(n)), **inf))
        table.add(name, "timm_eager_train", lambda n=name: throughput(timm.create_model(n), **train))
        table.add(name, "ours_eager_train", lambda n=name: throughput(iv.create_model(n), **train))
    # the input pipeline before the compiled rows: it is one of the targets, they are the long part
    with tempfile.TemporaryDirectory() as tmp:
        ds = write_folder(jpegs(32 if args.quick else 256, np.random.default_rng(0)), Path(tmp))
        sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
        table.pipeline.update(measure_pipeline(ds, size, 8 if args.quick else 128, dev, sync))
        table.pipeline.update(measure_eval(ds, size, dev, sync))
        table.pipeline.update(eval_end_to_end(ds, size, dev, args.quick))
    table.save()
    if compiled:
        for name in args.models:
            table.add(name, "timm_compiled_inf", lambda n=name: throughput(timm.create_model(n), **inf, compile=True),
                      compiled=True)  # fmt: skip
            # compile_for_inference: folded BN, channels_last, constants frozen into the graph
            table.add(name, "ours_compiled_inf", lambda n=name: throughput(
                compile_for_inference(iv.create_model(n).to(dev), cpp_wrapper=False), **inf), compiled=True)  # fmt: skip
            table.add(name, "ours_compiled_train", lambda n=name: throughput(iv.create_model(n), **train, compile=True),
                      compiled=True)  # fmt: skip
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    table.save()
    table.print_table()


if __name__ == "__main__":
    main()
