"""The CPU table: our eager paths, timm and onnxruntime, measured side by side in one run.

    python benchmarks/cpu.py [--models inception_v4 inception_resnet_v2] [--batch 16] [--iters 5] [--json out.json]

Prints a markdown table (img/s at batch 16, latency at batch 1) with every figure also as a ratio
to timm's eager NCHW model measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import date

import torch

import inceptionv4 as iv
from inceptionv4.engine.export import export_model
from inceptionv4.models.fold import fold_batchnorm
from inceptionv4.models.inference import optimize_for_inference


def timed(fn, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def torch_runner(model, x, channels_last=False, bf16=False):
    model = model.eval()
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x)

    return run


def compiled_runner(model, x):
    """torch.compile (inductor, with constant freezing) of the BN-folded, channels_last model."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    model = model.eval().to(memory_format=torch.channels_last)
    x = x.to(memory_format=torch.channels_last)
    compiled = torch.compile(model)
    start = time.perf_counter()
    with torch.inference_mode():
        compiled(x)
    compiled.compile_seconds = time.perf_counter() - start

    def run():
        with torch.inference_mode():
            compiled(x)

    run.compile_seconds = compiled.compile_seconds
    return run


def ort_runner(model, x, path):
    import onnxruntime as ort

    export_model(model, path, format="onnx", input_size=x.shape[-1])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {"images": x.numpy()}
    return lambda: session.run(None, feed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["inception_v4"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=299)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--bf16", action="store_true", help="also measure bf16 autocast (worth it with AVX-512 BF16 / AMX)")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (about a minute per shape)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    import timm

    rows, tmp = [], tempfile.mkdtemp()
    for name in args.models:
        torch.manual_seed(0)
        ours = iv.create_model(name).eval()
        theirs = timm.create_model(name).eval()
        folded = fold_batchnorm(ours)
        fast = optimize_for_inference(ours)
        xb = torch.randn(args.batch, 3, args.size, args.size)
        x1 = xb[:1].clone()
        paths = {
            "timm eager NCHW": torch_runner(theirs, xb),
            "timm eager channels_last": torch_runner(theirs, xb, channels_last=True),
            "ours eager NCHW": torch_runner(ours, xb),
            "ours eager channels_last": torch_runner(ours, xb, channels_last=True),
            "ours folded-BN channels_last": torch_runner(folded, xb, channels_last=True),
            "ours optimize_for_inference": torch_runner(fast, xb, channels_last=True),
            "onnxruntime fp32 (our export)": ort_runner(ours, xb, os.path.join(tmp, f"{name}.onnx")),
        }
        if args.compile:
            paths["ours folded-BN torch.compile (inductor, freezing)"] = compiled_runner(folded, xb)
        if args.bf16:
            paths["ours optimize_for_inference bf16"] = torch_runner(fast, xb, channels_last=True, bf16=True)
        lat = {
            "timm eager NCHW": torch_runner(theirs, x1),
            "ours folded-BN channels_last": torch_runner(folded, x1, channels_last=True),
            "ours optimize_for_inference": torch_runner(fast, x1, channels_last=True),
            "onnxruntime fp32 (our export)": ort_runner(ours, x1, os.path.join(tmp, f"{name}-1.onnx")),
        }
        if args.compile:
            lat["ours folded-BN torch.compile (inductor, freezing)"] = compiled_runner(folded, x1)
        # Round-robin: every path is timed once per round, so slow drifts of the shared machine
        # (throttling, neighbours) hit all paths alike; each figure is the median over rounds.
        for group, batch, key in ((paths, args.batch, "img_per_s"), (lat, 1, "latency_ms")):
            for fn in group.values():
                timed(fn, args.warmup, 0)
            samples = {label: [] for label in group}
            for _ in range(args.iters if key == "img_per_s" else max(args.iters * 2, 5)):
                for label, fn in group.items():
                    samples[label] += timed(fn, 0, 1)
            base = None
            for label, fn in group.items():
                t = statistics.median(samples[label])
                row = {"model": name, "path": label, "batch": batch}
                if key == "img_per_s":
                    ips = batch / t
                    base = base or ips
                    row.update(img_per_s=ips, vs_timm=ips / base)
                else:
                    row["latency_ms"] = 1000 * t
                if hasattr(fn, "compile_seconds"):
                    row["compile_s"] = fn.compile_seconds
                rows.append(row)
    meta = {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores ({platform.processor() or 'cpu'})",
            "threads": torch.get_num_threads(), "torch": torch.__version__, "timm": timm.__version__,
            "size": args.size}  # fmt: skip
    try:
        import onnxruntime

        meta["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    print(f"\n{meta}\n")
    print("| model | path | batch | img/s | vs timm eager NCHW | latency (ms) |\n|---|---|---|---|---|---|")
    for r in rows:
        ips = f"{r['img_per_s']:.2f}" if "img_per_s" in r else ""
        ratio = f"{r['vs_timm']:.2f}x" if "vs_timm" in r else ""
        lat = f"{r['latency_ms']:.0f}" if "latency_ms" in r else ""
        print(f"| {r['model']} | {r['path']} | {r['batch']} | {ips} | {ratio} | {lat} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
