"""The CPU table: our eager paths, timm and onnxruntime, measured side by side in one run.

    python benchmarks/cpu.py [--models inception_v4 inception_resnet_v2] [--batch 16] [--rounds 5]
                             [--compile] [--bf16] [--no-retain] [--latency-only] [--threads N]
                             [--json out.json]

Prints a markdown table (img/s at batch 16, latency at batch 1) with every figure also as a ratio
to timm's eager NCHW model and to onnxruntime, both measured in the same rounds of the same process.
"""

from __future__ import annotations

import argparse
import copy
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
from inceptionv4.models import (
    BatchParallel,
    compile_for_inference,
    fuse_for_inference,
    onednn_graph_available,
    optimize_for_inference,
    retain_freed_memory,
)
from inceptionv4.models.fold import fold_batchnorm


def cpu_description() -> str:
    """The processor's name and the vector units the figures depend on (``platform.processor()`` is
    empty on Linux): oneDNN and onnxruntime pick different kernels for AVX2, AVX-512 and AMX."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{name}; {' '.join(isa) or 'no AVX2'}; PyTorch kernels: {capability}"


def torch_runner(model, x, channels_last=False, bf16=False):
    model = model.eval()
    if channels_last:  # on a copy: Module.to() works in place, and the NCHW path shares this model
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(x)

    return run


def compiled_runner(model, x):
    """compile_for_inference: inductor with constant freezing and the C++ wrapper; compile time recorded."""
    compiled = compile_for_inference(model)
    x = x.to(memory_format=torch.channels_last)
    start = time.perf_counter()
    with torch.inference_mode():
        compiled(x)

    def run():
        with torch.inference_mode():
            return compiled(x)

    run.compile_seconds = time.perf_counter() - start
    return run


def ort_runner(model, x):
    """onnxruntime on our ONNX export; the file is gone once the session has read it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        export_model(model, path, format="onnx", input_size=x.shape[-1])
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {"images": x.numpy()}
    return lambda: torch.from_numpy(session.run(None, feed)[0])


def paired_rounds(paths: dict, rounds: int, warmup: int, gap: float) -> dict[str, list[float]]:
    """Seconds per call of every path, timed in rounds (order reversed every other round).

    The shared machine's speed drifts by tens of percent within a minute; a path compared with
    another in the same round sees the same drift, so ratios are taken round by round. ``gap``
    lets the previous path's idle threads (onnxruntime's spin-waiting pool, OpenMP's) go to
    sleep before the next path is timed: without it, whichever path runs second loses a core.
    """
    for fn in paths.values():
        for _ in range(warmup):
            fn()
    names, samples = list(paths), {label: [] for label in paths}
    for r in range(rounds):
        for label in names if r % 2 == 0 else names[::-1]:
            time.sleep(gap)
            start = time.perf_counter()
            paths[label]()
            samples[label].append(time.perf_counter() - start)
    return samples


def paired_ratio(samples: dict[str, list[float]], label: str, base: str) -> float:
    """Median over rounds of time(base) / time(label): how many times faster ``label`` is."""
    return statistics.median(b / a for a, b in zip(samples[label], samples[base], strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["inception_v4"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=299)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="rounds at --batch (batch 1 gets 3x as many)")
    ap.add_argument("--gap", type=float, default=0.1, help="seconds of idle before each timed call")
    ap.add_argument("--chunk", type=int, default=4, help="images per BatchParallel task")
    ap.add_argument("--bf16", action="store_true", help="also measure bf16 autocast (worth it with AVX-512 BF16 / AMX)")
    ap.add_argument(
        "--compile", action="store_true", help="also measure compile_for_inference (about a minute per shape)"
    )
    ap.add_argument("--no-retain", action="store_true",
                    help="leave glibc malloc as it is (default: models.retain_freed_memory, for every path alike)")  # fmt: skip
    ap.add_argument("--threads", type=int, help="intra-op threads for torch and onnxruntime alike (default: torch's)")
    ap.add_argument("--latency-only", action="store_true", help="batch 1 only (3x --rounds rounds)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: batch 2, 1 round, 75 px")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.rounds, args.warmup, args.size, args.gap = 2, 1, 1, 75, 0.0
    if args.threads:
        torch.set_num_threads(args.threads)  # ort_runner gives onnxruntime the same count
    import timm

    # Every torch path then reuses its activations' memory instead of page-faulting it in afresh
    # each call; onnxruntime has its own arena either way.
    retained = False if args.no_retain else retain_freed_memory()
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        ours = iv.create_model(name).eval()
        theirs = timm.create_model(name).eval()
        fast = optimize_for_inference(ours)
        xb = torch.randn(args.batch, 3, args.size, args.size)
        x1 = xb[:1].clone()
        groups = []
        paths = {
            "timm eager NCHW": torch_runner(theirs, xb),
            "timm eager channels_last": torch_runner(theirs, xb, channels_last=True),
            "ours eager NCHW": torch_runner(ours, xb),
            "ours folded-BN channels_last": torch_runner(fold_batchnorm(ours), xb, channels_last=True),
            "ours optimize_for_inference": torch_runner(fast, xb, channels_last=True),
            f"ours optimize_for_inference + BatchParallel(chunk={args.chunk})": torch_runner(
                BatchParallel(fast, chunk=args.chunk), xb, channels_last=True
            ),
            "onnxruntime fp32 (our export)": ort_runner(ours, xb),
        }
        fused = fuse_for_inference(ours, x1 if args.latency_only else xb) if onednn_graph_available() else None
        if fused is not None:
            paths["ours fuse_for_inference"] = torch_runner(fused, xb)
            paths[f"ours fuse_for_inference + BatchParallel(chunk={args.chunk})"] = torch_runner(
                BatchParallel(fused, chunk=args.chunk), xb
            )
        if args.compile:
            paths["ours compile_for_inference"] = compiled_runner(ours, xb)
        if args.bf16:
            paths["ours optimize_for_inference bf16"] = torch_runner(fast, xb, channels_last=True, bf16=True)
        if not args.latency_only:
            groups.append((paths, args.batch, args.rounds))
        lat = {
            "timm eager NCHW": torch_runner(theirs, x1),
            "ours optimize_for_inference": torch_runner(fast, x1, channels_last=True),
            "onnxruntime fp32 (our export)": ort_runner(ours, x1),
        }
        if fused is not None:
            lat["ours fuse_for_inference"] = torch_runner(fused, x1)
        if args.compile:
            lat["ours compile_for_inference"] = compiled_runner(ours, x1)
        groups.append((lat, 1, 3 * args.rounds))
        for group, batch, rounds in groups:
            samples = paired_rounds(group, rounds, args.warmup, args.gap)
            for label, fn in group.items():
                t = statistics.median(samples[label])
                row = {"model": name, "path": label, "batch": batch, "img_per_s": batch / t, "latency_ms": 1000 * t,
                       "vs_timm": paired_ratio(samples, label, "timm eager NCHW"),
                       "vs_ort": paired_ratio(samples, label, "onnxruntime fp32 (our export)")}  # fmt: skip
                if "bf16" in label:  # the same form in fp32, in the same rounds: issue 7's ">= 1.6x our fp32"
                    row["vs_fp32"] = paired_ratio(samples, label, "ours optimize_for_inference")
                    # and against the fastest fp32 path of ours in the same rounds (the fused forms)
                    ours_fp32 = [p for p in group if p.startswith("ours") and "bf16" not in p]
                    row["vs_fastest_ours_fp32"] = min(paired_ratio(samples, label, p) for p in ours_fp32)
                    # how far bf16's logits are from fp32's, and how often it picks the same class, on the
                    # same inputs. Random weights leave the 1000 logits nearly tied, so the agreement here is
                    # a lower bound (trained logits are far apart); the relative error is the figure to read.
                    low, ref = fn().float(), group["ours optimize_for_inference"]().float()
                    row["logit_rel_err_vs_fp32"] = ((low - ref).norm() / ref.norm()).item()
                    row["top1_agreement_vs_fp32"] = (low.argmax(1) == ref.argmax(1)).float().mean().item()
                if hasattr(fn, "compile_seconds"):
                    row["compile_s"] = fn.compile_seconds
                rows.append(row)
    meta = {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores ({cpu_description()})",
            "threads": torch.get_num_threads(), "torch": torch.__version__, "timm": timm.__version__,
            "size": args.size, "rounds": args.rounds, "gap_s": args.gap, "retain_freed_memory": retained}  # fmt: skip
    try:
        import onnxruntime

        meta["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    print(f"\n{meta}\n")
    print("| model | path | batch | img/s | ms per batch | vs timm eager NCHW | vs onnxruntime |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        extra = f" (compile {r['compile_s']:.0f} s)" if "compile_s" in r else ""
        if "vs_fp32" in r:
            extra += (f" ({r['vs_fp32']:.2f}x the same form in fp32, {r['vs_fastest_ours_fp32']:.2f}x our fastest fp32; "
                      f"logits {r['logit_rel_err_vs_fp32']:.1e} from fp32's, "
                      f"top-1 agreement {r['top1_agreement_vs_fp32']:.2f})")  # fmt: skip
        print(f"| {r['model']} | {r['path']}{extra} | {r['batch']} | {r['img_per_s']:.2f} | {r['latency_ms']:.0f} | "
              f"{r['vs_timm']:.2f}x | {r['vs_ort']:.2f}x |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
