"""Parameters and FLOPs recomputed from a model, to check the model cards against."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (BatchNorm running statistics are buffers and do not count)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, size: int | tuple[int, int] = 299) -> int:
    """FLOPs of one forward pass on one image (2 per multiply-add; convolutions and matmuls).

    Build the model under ``torch.device("meta")`` to count without memory or compute.
    """
    h, w = (size, size) if isinstance(size, int) else size
    param = next(model.parameters())
    x = torch.zeros(1, getattr(model, "in_chans", 3), h, w, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def stage_shapes(model: nn.Module, size: int = 299) -> list[tuple[str, tuple[int, int, int]]]:
    """(step, (C, H, W)) after each stem step and each stage, for one ``size`` x ``size`` image.

    Build the model under ``torch.device("meta")`` to get them without memory or compute.
    """
    param = next(model.parameters())
    x = torch.zeros(1, model.in_chans, size, size, device=param.device, dtype=param.dtype)
    model.check_input(x)
    out: list[tuple[str, tuple[int, int, int]]] = []
    with torch.no_grad():
        for name, module in model.trunk():
            x = module(x)
            stage = name if name.startswith("stem.") else name.split(".")[0]
            if out and out[-1][0] == stage:
                out.pop()
            out.append((stage, tuple(x.shape[1:])))
    return out
