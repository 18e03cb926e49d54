"""The torch engine: each network as it is (eager) or compiled, under autocast in the session's
precision, on a CPU, a CUDA GPU or MPS. :func:`~inceptionv4.engines.open.open_session` calls
:func:`torch_runners` after it has checked the settings, and builds the session from what it returns."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..precision import TORCH_DTYPES
from .session import Runner, device_of


def compile_for_inference(model: torch.nn.Module, *, cpp_wrapper: bool = True) -> torch.nn.Module:
    """``torch.compile`` of a copy of ``model`` with BatchNorm folded, in channels_last, with its
    constants frozen (eval only; ``model`` itself is left as it is).

    Inductor then packs every conv's weights once and fuses ReLUs and residual adds into the
    kernels; ``cpp_wrapper`` calls them from generated C++ rather than Python (on a CPU: the
    lowest torch batch-1 latency). The first call per input shape compiles.
    """
    from ..models.fold import fold_batchnorm

    # With ATen's kernels held below the CPU's own units (ATEN_CPU_CAPABILITY=avx2 or default on an
    # AVX-512 machine), torch 2.14.1's C++ wrapper over frozen channels_last convolutions returned
    # values of 1e24 where eager gives the right ones; the Python wrapper stays exact there.
    cpp_wrapper = cpp_wrapper and not os.environ.get("ATEN_CPU_CAPABILITY")
    fast = fold_batchnorm(model).to(memory_format=torch.channels_last).eval()
    return torch.compile(fast, options={"freezing": True, "cpp_wrapper": cpp_wrapper})


@dataclass
class TorchRunners:
    """What :func:`torch_runners` built: a runner per network, the modules they run, and where."""

    runners: list[Runner]
    modules: list[torch.nn.Module]
    device: torch.device
    chunk: int  # views per forward pass


def torch_runners(models: list[torch.nn.Module], device: torch.device, *, precision: str, form: str = "eager",
                  channels_last: bool = False, keep_devices: bool = False) -> TorchRunners:  # fmt: skip
    """Torch runners: each model as it is (``form="eager"``) or compiled
    (:func:`compile_for_inference`), on ``device`` or where it is with ``keep_devices``, under
    autocast in ``precision``. A model not on ``device`` is moved there (in place, as
    ``Module.to`` is) and put in eval mode; a compiled form is a copy, so a caller's own module
    keeps its layers."""
    from ..devices import to_device

    runners, modules = [], []
    for m in models:
        m = m.eval() if keep_devices else to_device([m], device)[0]
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        if form == "compile":
            m = compile_for_inference(m, cpp_wrapper=device_of(m).type == "cpu")
        modules.append(m)
        runners.append(_torch_runner(m, TORCH_DTYPES[precision], channels_last or form == "compile"))
    device = device_of(models[0]) if keep_devices else device
    return TorchRunners(runners, modules, device, 256 if device.type == "cuda" else 64)


def _torch_runner(module: torch.nn.Module, dtype: torch.dtype | None, channels_last: bool) -> Runner:
    device = device_of(module)

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return module(x)

    return run
