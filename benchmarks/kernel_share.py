"""Where a batch-1 pass of fuse_for_inference spends its time: oneDNN's kernels against the wall clock.

    python benchmarks/kernel_share.py [--model inception_v4] [--batch 1] [--runs 5]

Runs the fused form in a child process with ``ONEDNN_VERBOSE=profile_exec`` (oneDNN then prints
every primitive it executes with its time), and prints per pass: wall time, the time inside
convolution, concatenation and pooling primitives, the rest, and the convolutions' GFLOP/s. For
scale it also times a 2048^3 fp32 matrix product on one thread (the per-core rate this machine's
GEMM reaches). A pass whose convolutions run near (threads x that rate) is bound by the kernels,
not by what happens between them. Last, the memory the fused form adds to the process (Linux).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

CHILD = """
import sys, time, torch
from inceptionv4 import create_model
from inceptionv4.models import fuse_for_inference, retain_freed_memory
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
retain_freed_memory()
model = create_model(sys.argv[1]).eval()
x = torch.randn(int(sys.argv[2]), 3, 299, 299)
with torch.inference_mode():
    model(x)
before = rss_mb()
fused = fuse_for_inference(model, x)
with torch.inference_mode():
    for _ in range(3):
        fused(x)
print(f"@@rss,{before},{rss_mb()}", flush=True)
with torch.inference_mode():
    for _ in range(int(sys.argv[3])):
        time.sleep(0.1)
        print("@@start", flush=True)
        start = time.perf_counter()
        fused(x)
        print(f"@@wall,{1000 * (time.perf_counter() - start)}", flush=True)
"""


def gemm_rate_per_thread() -> float:
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(8))
    return 2 * 2048**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="inception_v4")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    import torch

    from inceptionv4.models import count_flops, create_model

    threads = torch.get_num_threads()
    with torch.device("meta"):
        gflop = count_flops(create_model(args.model), 299) / 1e9 * args.batch
    env = {**os.environ, "ONEDNN_VERBOSE": "profile_exec"}
    cmd = [sys.executable, "-c", CHILD, args.model, str(args.batch), str(args.runs)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    print(f"{args.model}, batch {args.batch}, {threads} threads, {gflop:.2f} GFLOP per pass")
    print("| pass | wall ms | conv ms | concat ms | pool ms | other ms | conv GFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    times: dict[str, float] = {}
    rss = (0.0, 0.0)
    run = 0
    for line in out.splitlines():
        fields = line.split(",")
        if line.startswith("@@start"):
            times = {"convolution": 0.0, "concat": 0.0, "pooling": 0.0}
        elif line.startswith("onednn_verbose") and len(fields) > 5 and fields[2] == "primitive" and fields[3] == "exec":
            if fields[5] in times:
                times[fields[5]] += float(fields[-1])
        elif line.startswith("@@rss"):
            rss = (float(fields[1]), float(fields[2]))
        elif line.startswith("@@wall"):
            wall = float(fields[1])
            conv = times["convolution"]
            other = wall - conv - times["concat"] - times["pooling"]
            run += 1
            print(f"| {run} | {wall:.1f} | {conv:.1f} | {times['concat']:.1f} | {times['pooling']:.1f} | "
                  f"{other:.1f} | {gflop / conv * 1000:.0f} |")  # fmt: skip
    weights_mb = sum(p.numel() for p in create_model(args.model).parameters()) * 4 / 2**20
    print(f"memory: {weights_mb:.0f} MB of fp32 weights; the process grew by {rss[1] - rss[0]:.0f} MB "
          "once the model was fused and run (Linux /proc/self/statm)")  # fmt: skip
    rate = gemm_rate_per_thread()
    print(f"fp32 GEMM on one thread: {rate:.0f} GFLOP/s ({threads} threads x that: {threads * rate:.0f})")


if __name__ == "__main__":
    main()
