"""Where work runs: a device name from a user checked against this machine, models moved there, and
the CPU's vector units (which decide what runs fast, and are named beside every CPU figure)."""

from __future__ import annotations

import torch
from torch import nn


def resolve_device(spec: str = "auto") -> torch.device:
    """``"auto"`` (the first GPU if PyTorch sees one, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``
    or ``"mps"`` -> a device that exists here; anything else is a ValueError that says what is wrong,
    raised before a model is moved or a file read (not a CUDA error from the first forward pass)."""
    if spec == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {spec!r}: give auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {spec!r}: PyTorch sees no CUDA GPU on this machine (torch.cuda.is_available() is False); "
                "use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), cuda:0 ...")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {spec!r}: this machine has no MPS (Apple GPU) device")
    elif device.type != "cpu":
        raise ValueError(f"device {spec!r}: inference runs on cpu, cuda or mps")
    return device


def to_device(models: list[nn.Module], device: torch.device, *, channels_last: bool = False) -> list[nn.Module]:
    """The models moved to ``device`` in eval mode (in place, as ``Module.to`` is), channels_last if asked
    (faster convolutions on GPUs with tensor cores and on oneDNN CPUs)."""
    out = [m.to(device).eval() for m in models]
    return [m.to(memory_format=torch.channels_last) for m in out] if channels_last else out


def cpu_features() -> dict[str, bool]:
    """The vector units of this CPU that decide what runs fast: AVX2, AVX-512, VNNI (int8),
    AVX-512 BF16, AMX (bf16/int8 tiles) and AVX-512 FP16, read from ``/proc/cpuinfo`` (all False
    where it is not there)."""
    try:
        flags = set()
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        flags = set()
    return {
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "vnni": "avx512_vnni" in flags or "avx_vnni" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_tile" in flags,
        "avx512_fp16": "avx512_fp16" in flags,
        "amx_fp16": "amx_fp16" in flags,
    }


def vector_units() -> str:
    """This CPU's vector units in a few words, for every CPU figure: "AVX-512, VNNI, BF16"."""
    f = cpu_features()
    names = [("avx2", "AVX2"), ("avx512", "AVX-512"), ("vnni", "VNNI"), ("avx512_bf16", "BF16"),
             ("avx512_fp16", "FP16"), ("amx", "AMX")]  # fmt: skip
    shown = [n for k, n in names if f[k] and not (k == "avx2" and f["avx512"])]
    return ", ".join(shown) or "no AVX2"
