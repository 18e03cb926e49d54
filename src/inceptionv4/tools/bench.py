"""Throughput and latency of a network (ours, and timm's side by side in the same process)."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from ..models import count_flops, create_model
from ..engine.devices import resolve_device
from ..engine.optim import FUSED_DEVICES

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: nn.Module, *, batch_size: int, input_size: int, device: str = "cpu", precision: str = "fp32",
            channels_last: bool = False, compile: bool = False, mode: str = "inference", warmup: int = 3,
            iters: int = 10) -> dict:  # fmt: skip
    """Time ``iters`` steps after ``warmup``: img/s and per-batch latency percentiles (ms)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if mode not in ("inference", "train"):
        raise ValueError(f"mode must be 'inference' or 'train', got {mode!r}")
    dev = torch.device(device)
    model = model.to(dev)
    x = torch.randn(batch_size, 3, input_size, input_size, device=dev)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    run = torch.compile(model) if compile else model
    amp = precision != "fp32"
    fused = {"fused": True} if dev.type in FUSED_DEVICES else {}  # what the trainer uses (engine.optim)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, **fused) if mode == "train" else None
    y = torch.randint(0, 10, (batch_size,), device=dev)

    def step() -> None:
        if mode == "inference":
            with torch.inference_mode(), torch.autocast(dev.type, dtype=PRECISIONS[precision], enabled=amp):
                run(x)
        else:
            with torch.autocast(dev.type, dtype=PRECISIONS[precision], enabled=amp):
                loss = nn.functional.cross_entropy(run(x).float(), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    model.train(mode == "train")
    for _ in range(warmup):
        step()
    _sync(dev)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        _sync(dev)
        times.append(time.perf_counter() - t)
    times.sort()
    return {
        "img_per_s": batch_size * len(times) / sum(times),
        "latency_p50_ms": 1000 * statistics.median(times),
        "latency_p90_ms": 1000 * times[min(len(times) - 1, int(0.9 * len(times)))],
    }


def benchmark(name: str, *, batch_size: int = 16, input_size: int = 299, device: str = "cpu", precision: str = "fp32",
              channels_last: bool = False, compile: bool = False, mode: str = "inference", warmup: int = 3,
              iters: int = 10, compare: str | None = None, optimize: bool = False, fuse: bool = False,
              parallel: bool = False) -> dict:  # fmt: skip
    """Measure ``name`` (and, with ``compare="timm"``, timm's model of the same name in the same run).

    ``optimize`` measures :func:`~inceptionv4.models.inference.optimize_for_inference`'s form, or
    with ``compile`` :func:`~inceptionv4.models.inference.compile_for_inference`; ``fuse`` measures
    :func:`~inceptionv4.models.onednn_graph.fuse_for_inference` (CPU fp32); ``parallel`` wraps ours in
    :class:`~inceptionv4.models.inference.BatchParallel` (all inference only, ``parallel`` on CPU only).
    """
    if batch_size < 1 or iters < 1 or warmup < 0:
        raise ValueError(f"batch_size and iters must be >= 1 and warmup >= 0, got {batch_size}, {iters}, {warmup}")
    if compare not in (None, "timm"):
        raise ValueError(f"compare must be 'timm' or None, got {compare!r}")
    device = str(resolve_device(device))  # "auto", and a GPU that is not there, said before any model is built
    if compare == "timm":
        try:
            import timm
        except ImportError:
            raise ImportError("--compare timm needs timm installed (pip install timm)") from None
        if name not in timm.list_models():
            raise ValueError(f"timm has no {name}; it can be compared for inception_v4 and inception_resnet_v2")
    settings = {"batch_size": batch_size, "input_size": input_size, "device": device, "precision": precision,
                "channels_last": channels_last, "compile": compile, "mode": mode, "warmup": warmup, "iters": iters}  # fmt: skip
    ours = create_model(name, num_classes=1000)
    gflops = count_flops(ours, input_size) / 1e9 * (3 if mode == "train" else 1)
    ours_settings = dict(settings)
    if (optimize or parallel or fuse) and mode != "inference":
        raise ValueError("optimize, fuse and parallel apply to inference only")
    if fuse and (device != "cpu" or precision != "fp32" or optimize or compile):
        raise ValueError("fuse measures fuse_for_inference: CPU fp32, without optimize or compile")
    if parallel and device != "cpu":
        raise ValueError("parallel splits batches over CPU threads; it needs device='cpu'")
    if optimize:
        from ..models.inference import compile_for_inference, optimize_for_inference

        ours = compile_for_inference(ours) if compile else optimize_for_inference(ours)
        ours_settings.update(compile=False, channels_last=True)  # compiled / laid out already
    if fuse:
        from ..models.onednn_graph import fuse_for_inference

        ours = fuse_for_inference(ours, torch.randn(batch_size, 3, input_size, input_size))
        ours_settings.update(channels_last=False)  # traced and fused for NCHW input
    if parallel:
        from ..models.inference import BatchParallel

        ours = BatchParallel(ours)
    result = {
        "model": name,
        **settings,
        "optimize": optimize,
        "fuse": fuse,
        "parallel": parallel,
        "gflops_per_image": gflops,
        "ours": measure(ours, **ours_settings),
    }
    result["ours"]["tflops"] = result["ours"]["img_per_s"] * gflops / 1000
    if compare == "timm":
        theirs = measure(timm.create_model(name), **settings)
        theirs["tflops"] = theirs["img_per_s"] * gflops / 1000
        result["timm"] = theirs
        result["speedup_vs_timm"] = result["ours"]["img_per_s"] / theirs["img_per_s"]
    return result
