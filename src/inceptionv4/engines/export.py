"""Export to ONNX, TorchScript or a torch.export program, each checked against eager."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..models.fold import fold_batchnorm
from ..weights.io import atomic_write

FORMATS = ("onnx", "torchscript", "exported-program")


class ExportMismatchError(RuntimeError):
    """The exported model disagrees with eager PyTorch by more than the tolerance."""


def export_model(
    model: nn.Module,
    path: str | Path,
    *,
    format: str = "onnx",
    input_size: int | None = None,
    fold_bn: bool = False,
    tolerance: float = 1e-4,
    check_batch: int = 3,
) -> dict:
    """Write ``model`` to ``path`` with a dynamic batch size, run the export on random inputs
    (ONNX through onnxruntime) and compare with eager; raise if max |diff| exceeds ``tolerance``.

    Returns ``{"path", "format", "max_abs_diff", "input_size", "fold_bn"}``.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    model = model.eval()
    size = model.pretrained_cfg.input_size[-1] if input_size is None else input_size
    reference = model
    if fold_bn:
        model = fold_batchnorm(model)
    example = torch.randn(2, model.in_chans, size, size)
    if hasattr(model, "check_input"):
        model.check_input(example)  # a size the network cannot take: said before anything is written
    path = Path(path)
    x = torch.randn(check_batch, model.in_chans, size, size, generator=torch.Generator().manual_seed(0))
    with atomic_write(path) as tmp:  # a failed export or check leaves no file, and an earlier one as it was
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter; the parity check below is the judge
            if format == "onnx":
                torch.onnx.export(model, (example,), tmp, dynamo=False, input_names=["images"], output_names=["logits"],
                                  dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)  # fmt: skip
            elif format == "torchscript":
                torch.jit.save(torch.jit.trace(model, example), tmp)
            else:
                batch = torch.export.Dim("batch", min=1, max=1024)
                torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), tmp)
        with torch.no_grad():
            expected = reference(x)
            got = run_exported(tmp, format, x)
        diff = float((expected - got).abs().max())
        if not diff <= tolerance:
            raise ExportMismatchError(
                f"{path}: exported model differs from eager by {diff:.3g} > {tolerance:g}; not written"
            )
    return {"path": str(path), "format": format, "max_abs_diff": diff, "input_size": size, "fold_bn": fold_bn}


def run_exported(path: str | Path, format: str, x: torch.Tensor) -> torch.Tensor:
    """Run an exported file on a batch (ONNX via onnxruntime), for checks and for predict."""
    if format == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("checking an ONNX export needs onnxruntime: pip install 'inceptionv4[export]'") from None
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    if format == "torchscript":
        return torch.jit.load(str(path))(x)
    return torch.export.load(str(path)).module()(x)
