"""``optimize_for_inference``: the same function as the per-figure network, in a faster form.

1. BatchNorm folded into every convolution (:func:`fold_batchnorm`).
2. The 1x1 convolutions that open several branches of a block on the same input (Inception-A's
   three, Mixed_5b's three, ...) merged into one wider convolution, whose output is sliced back
   to the branches: one large GEMM instead of two or three small ones.
3. channels_last memory format.

The readable modules stay the definition; this form is derived from them and is checked equal
to them (max |diff| < 1e-4 in fp32) by the tests.
"""

from __future__ import annotations

import torch
from torch import nn

from .fold import fold_batchnorm
from .layers import ConvBNReLU


class _Shared:
    """Holds the merged output while one block runs (a plain object: no parameters, no state dict)."""

    value: torch.Tensor | None = None


class SliceOfMerged(nn.Module):
    """Stands in for an opening 1x1 conv: returns its channels of the merged conv's output."""

    def __init__(self, shared: _Shared, start: int, end: int) -> None:
        super().__init__()
        self.shared, self.start, self.end = shared, start, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x is the block input, already consumed
        return self.shared.value[:, self.start : self.end]


class MergedOpenings(nn.Module):
    """A block whose opening 1x1 convs run as one conv (+ ReLU) before the block's own forward."""

    def __init__(self, block: nn.Module, merged: nn.Conv2d, shared: _Shared) -> None:
        super().__init__()
        self.block, self.merged, self.shared = block, merged, shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shared.value = torch.relu(self.merged(x))
        try:
            return self.block(x)
        finally:
            self.shared.value = None


def _openings(model: nn.Module, size: int) -> dict[str, list[str]]:
    """For each trunk step, the 1x1 stride-1 ConvBNReLUs inside it that read the step's own input."""
    found: dict[str, list[str]] = {}
    names = {m: n for n, m in model.named_modules()}
    current: dict[str, object] = {}
    hooks = []
    for step_name, step in model.trunk():
        hooks.append(step.register_forward_pre_hook(lambda m, a, s=step_name: current.update(step=s, x=a[0])))
        for sub in step.modules():
            conv = getattr(sub, "conv", None)
            if isinstance(sub, ConvBNReLU) and conv.kernel_size == (1, 1) and conv.stride == (1, 1):

                def hook(m, a):
                    if a[0] is current.get("x"):
                        found.setdefault(current["step"], []).append(names[m])

                hooks.append(sub.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, model.in_chans, size, size))
    finally:
        for h in hooks:
            h.remove()
    return {step: convs for step, convs in found.items() if len(convs) > 1}


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


@torch.no_grad()
def optimize_for_inference(model: nn.Module, *, merge_1x1: bool = True, channels_last: bool = True) -> nn.Module:
    """A faster copy of ``model`` for inference (eval mode): folded BN, merged 1x1s, channels_last."""
    fast = fold_batchnorm(model)
    if merge_1x1:
        size = model.min_input_size
        for step, paths in _openings(fast, size).items():
            convs = [fast.get_submodule(p).conv for p in paths]
            merged = nn.Conv2d(convs[0].in_channels, sum(c.out_channels for c in convs), 1, bias=True)
            merged = merged.to(convs[0].weight.device, convs[0].weight.dtype)
            merged.weight.copy_(torch.cat([c.weight for c in convs]))
            merged.bias.copy_(torch.cat([c.bias for c in convs]))
            shared, start = _Shared(), 0
            for path, conv in zip(paths, convs, strict=True):
                _set(fast, path, SliceOfMerged(shared, start, start + conv.out_channels))
                start += conv.out_channels
            _set(fast, step, MergedOpenings(fast.get_submodule(step), merged, shared))
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast.eval()
