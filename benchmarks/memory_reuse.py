"""What ``models.retain_freed_memory`` buys: page faults and time per call, with and without it.

    python benchmarks/memory_reuse.py [--model inception_v4] [--batch 16] [--rounds 6] [--parallel]

Both settings run in one process, switched before every call (glibc's ``mallopt``), in the paired
rounds of ``cpu.py``; "without" holds malloc at its starting 128 KiB mmap threshold, so it shows
the most faults glibc's default can give (its dynamic threshold gives fewer after a while).
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import statistics

import torch
from cpu import paired_ratio, paired_rounds

import inceptionv4 as iv
from inceptionv4.models import BatchParallel, optimize_for_inference, retain_freed_memory

_libc = ctypes.CDLL("libc.so.6")


def glibc_default() -> None:
    """Back to malloc's starting behaviour: blocks over 128 KiB mmapped, the heap top trimmed."""
    for option, value in ((-4, 65536), (-3, 128 * 1024), (-1, 128 * 1024)):  # MMAP_MAX, MMAP_THRESHOLD, TRIM
        _libc.mallopt(option, value)
    _libc.malloc_trim(0)


def faults(fn) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="inception_v4")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=299)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--parallel", action="store_true", help="measure BatchParallel(optimize_for_inference(model))")
    args = ap.parse_args()
    model = optimize_for_inference(iv.create_model(args.model).eval())
    model = BatchParallel(model) if args.parallel else model
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)

    def call(setting):
        def run():
            setting()
            with torch.inference_mode():
                model(x)

        return run

    paths = {"glibc default": call(glibc_default), "retain_freed_memory": call(retain_freed_memory)}
    for label, fn in paths.items():
        fn()
        print(f"{label}: {faults(fn)} page faults per call")
    samples = paired_rounds(paths, args.rounds, warmup=1, gap=0.1)
    for label in paths:
        print(f"{label}: {1000 * statistics.median(samples[label]):.0f} ms per call, "
              f"{paired_ratio(samples, label, 'glibc default'):.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
