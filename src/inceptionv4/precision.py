"""Precisions: the one table of what each engine runs, shared by inference, training and the benchmarks.

``PRECISIONS`` are what ``--precision`` takes; :func:`engine_precision_gap` says why an engine
cannot run one on this machine (naming the missing instruction set), and training refuses its
``--precision fp16`` on a CPU by the same rule. What ``precision="auto"`` picks asks the engine itself
(:func:`~inceptionv4.engines.open.auto_precision`).
"""

from __future__ import annotations

import torch

from . import devices

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
#: the autocast dtype of each precision torch runs (None: no autocast)
TORCH_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: OpenVINO's INFERENCE_PRECISION_HINT for each precision (an int8 artefact computes in int8 whatever it says)
OV_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


def engine_precision_gap(backend: str, precision: str, device: str = "cpu") -> str | None:
    """Why ``backend`` cannot run ``precision`` on ``device`` ("cpu", "cuda", "mps": its type) here
    (naming the missing instruction set), or None when it can. The one table of what each backend
    runs. fp16 on a CPU without AVX-512 FP16 or AMX-FP16 is refused on every backend: it would run
    at fp32's speed or slower (torch emulates it), so offering it would only mislead."""
    f = devices.cpu_features()  # read through the module: one place to stand in another CPU
    fp16_units = f["avx512_fp16"] or f["amx_fp16"]
    if backend == "torch":
        if precision == "int8":
            return "torch runs fp32, bf16 and fp16 (int8 runs on openvino or onnxruntime)"
        if precision == "fp16" and device == "cpu" and not fp16_units:
            return (f"fp16 on a CPU needs AVX-512 FP16 or AMX-FP16 to be faster than fp32; this one has "
                    f"{devices.vector_units()}: use --precision bf16 or fp32")  # fmt: skip
        return None
    if backend == "onnxruntime":
        if precision in ("bf16", "fp16"):
            return f"onnxruntime's CPU engine runs fp32 and int8, not {precision} (use --backend openvino or torch)"
        return None
    if precision == "bf16" and not (f["avx512_bf16"] or f["amx"]):
        return f"openvino bf16 needs a CPU with AVX-512 BF16 or AMX; this one has {devices.vector_units()}"
    if precision == "fp16" and not fp16_units:
        return f"openvino fp16 needs a CPU with AVX-512 FP16 or AMX-FP16; this one has {devices.vector_units()}"
    return None
