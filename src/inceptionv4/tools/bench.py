"""Throughput and latency: every inference engine this machine runs, side by side in one process
(:func:`compare_engines`), and one torch path, for inference or a training step (:func:`benchmark`)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import nn

from ..devices import resolve_device
from ..train.optim import FUSED_DEVICES
from ..models import build_model, count_flops

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
    fused = {"fused": True} if dev.type in FUSED_DEVICES else {}  # what the trainer uses (train.optim)
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
              iters: int = 10, compare: str | None = None) -> dict:  # fmt: skip
    """Measure one torch path of ``name`` (and, with ``compare="timm"``, timm's model of the same
    name in the same run, with the same settings): inference or a training step, eager or
    ``torch.compile``, in ``precision`` by autocast. :func:`compare_engines` measures the engines.
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
    ours = build_model(name, num_classes=1000)
    gflops = count_flops(ours, input_size) / 1e9 * (3 if mode == "train" else 1)
    result = {"model": name, **settings, "gflops_per_image": gflops, "ours": measure(ours, **settings)}
    result["ours"]["tflops"] = result["ours"]["img_per_s"] * gflops / 1000
    if compare == "timm":
        theirs = measure(timm.create_model(name), **settings)
        theirs["tflops"] = theirs["img_per_s"] * gflops / 1000
        result["timm"] = theirs
        result["speedup_vs_timm"] = result["ours"]["img_per_s"] / theirs["img_per_s"]
    return result


def engine_paths(*, device: str = "cpu", backends: list[str] | None = None,
                 precisions: list[str] | None = None) -> list[tuple[str, str, str]]:  # fmt: skip
    """Every (backend, precision, torch form) this machine runs, in table order: torch eager in
    fp32, and in bf16 where the device has bf16 units, then each installed engine's precisions.
    (``torch.compile`` takes minutes per shape: ``benchmark(..., compile=True)`` times it.)"""
    from ..devices import cpu_features
    from ..engines.options import BACKENDS
    from ..extras import installed
    from ..precision import PRECISIONS, engine_precision_gap

    for kind, given, known in (("backend", backends, BACKENDS[1:]), ("precision", precisions, PRECISIONS)):
        unknown = sorted(set(given or ()) - set(known))
        if unknown:
            raise ValueError(f"unknown {kind} {', '.join(unknown)}: choose from {', '.join(known)}")
    f = cpu_features()
    bf16_units = device != "cpu" or f["avx512_bf16"] or f["amx"]
    paths = [("torch", "fp32", "eager")]
    if bf16_units:
        paths.append(("torch", "bf16", "eager"))
    if device == "cpu":
        for engine in ("onnxruntime", "openvino"):
            if not installed(engine) or (engine == "openvino" and not installed("nncf")):
                continue
            for precision in ("fp32", "bf16", "fp16", "int8"):
                if engine_precision_gap(engine, precision) is None:
                    paths.append((engine, precision, "eager"))
    return [p for p in paths if (not backends or p[0] in backends) and (not precisions or p[1] in precisions)]


def compare_engines(name: str = "inception_v4", *, weights: str | None = None, batch_sizes: tuple[int, ...] = (16, 1),
                    rounds: int = 3, seconds: float = 2.0, device: str = "cpu", backends: list[str] | None = None,
                    precisions: list[str] | None = None, timm_reference: bool = True, cache_dir=None,
                    log=None) -> dict:  # fmt: skip
    """Every backend x precision x form this machine runs (:func:`engine_paths`), timed in the same
    process with the rounds interleaved: each round times every path for about ``seconds`` at
    each batch size, and a path's figure is its best round (img/s). Ratios are to timm eager fp32
    (when timm is installed) and to onnxruntime fp32 and OpenVINO fp32 (when measured).

    int8 paths are quantized on random images: a speed figure only (``inceptionv4 quantize``
    measures accuracy). ``weights`` times a real bundle; default: random weights of ``name``.
    """
    import tempfile

    from ..devices import vector_units

    if rounds < 1 or not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"rounds and batch sizes must be >= 1, got {rounds}, {batch_sizes}")
    device = str(resolve_device(device))
    log = log or (lambda text: None)
    source = weights if weights is not None else build_model(name, num_classes=1000).eval()
    paths = engine_paths(device=device, backends=backends, precisions=precisions)
    with tempfile.TemporaryDirectory() as tmp:
        runs = _open_paths(source, paths, device, cache_dir, Path(tmp), log)
        size = next(iter(runs.values())).pre.input_size
        if timm_reference:
            runs = {**_timm_reference(name, device), **runs}
        xs = {b: torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(b)) for b in batch_sizes}
        best = _interleaved(runs, xs, rounds, seconds, log)
    table = []
    for b in batch_sizes:
        for label, rate in best[b].items():
            row = {"batch_size": b, "path": label, "img_per_s": rate}
            for ref in ("timm eager fp32", "onnxruntime fp32", "openvino fp32"):
                if ref in best[b]:
                    row[f"vs {ref}"] = rate / best[b][ref]
            table.append(row)
    return {"model": name, "weights": weights, "device": device, "cpu": vector_units(), "rounds": rounds,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": table}  # fmt: skip


def _open_paths(source, paths: list, device: str, cache_dir, tmp: Path, log) -> dict:
    """A session per path, by label; an int8 path is quantized first, on random images."""
    import numpy as np
    from PIL import Image

    from ..engines.artefacts import ARTEFACT_SUFFIX
    from ..engines.open import open_session
    from ..engines.quantize import quantize

    sessions: dict[str, object] = {}
    for backend, precision, form in paths:
        label = f"{backend} {precision}" + (f" {form}" if backend == "torch" else "")
        log(f"opening {label} ...")
        if precision != "int8":
            sessions[label] = open_session(source, backend=backend, precision=precision, form=form, device=device,
                                           cache_dir=cache_dir)  # fmt: skip
            continue
        calib = tmp / "calib"
        if not calib.exists():
            calib.mkdir()
            rng = np.random.default_rng(0)
            for i in range(8):
                Image.fromarray(rng.integers(0, 256, (342, 342, 3), dtype=np.uint8)).save(calib / f"{i}.png")
        q = quantize(source, calib, tmp / f"q-{backend}{ARTEFACT_SUFFIX[backend]}", backend=backend,
                     min_agreement=0.0, cache_dir=cache_dir)  # fmt: skip
        sessions[label] = open_session(q["path"])
    return sessions


def _timm_reference(name: str, device: str) -> dict:
    """timm's own network of ``name`` as a path, when timm is installed and has it."""
    try:
        import timm
    except ImportError:
        return {}
    if name not in timm.list_models():
        return {}
    ref = timm.create_model(name, num_classes=1000).eval().to(device)
    return {"timm eager fp32": lambda x: ref(x.to(device))}


def _interleaved(runs: dict, xs: dict, rounds: int, seconds: float, log) -> dict[int, dict[str, float]]:
    """Each path's best img/s per batch size over ``rounds`` interleaved rounds of about
    ``seconds`` each (every shape warmed up twice first: an engine's first passes set up)."""
    best: dict[int, dict[str, float]] = {b: {} for b in xs}
    with torch.inference_mode():
        for x in xs.values():
            for run in runs.values():
                run(x)
                run(x)
        for r in range(rounds):
            for b, x in xs.items():
                for label, run in runs.items():
                    n, t0 = 0, time.perf_counter()
                    while True:
                        run(x)
                        n += 1
                        if time.perf_counter() - t0 >= seconds and n >= 2:
                            break
                    best[b][label] = max(best[b].get(label, 0.0), n * b / (time.perf_counter() - t0))
            log(f"round {r + 1}/{rounds} done")
    return best
