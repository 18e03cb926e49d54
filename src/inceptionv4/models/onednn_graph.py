"""``fuse_for_inference``: the inference form run as oneDNN Graph partitions (CPU, fp32).

:func:`~inceptionv4.models.inference.optimize_for_inference` still calls one PyTorch op per
convolution, and PyTorch's oneDNN binding spends 80-130 us per call outside the kernel building
descriptors and allocating outputs; at batch 1 that, the Python between the ops and the
``torch.cat`` copies leave it at about 0.8x onnxruntime. Here the same form is traced, frozen, and
handed to oneDNN Graph (TorchScript's "LLGA" fuser): each conv (+ residual add) + ReLU, each
concatenation and each pool becomes a compiled partition whose primitive, packed weights and
layouts are kept between calls. Measured on 2 CPU cores (benchmarks/RESULTS.md): 1.2-1.4x the
eager inference form at batch 1, level with onnxruntime; under BatchParallel at batch 16, 1.13x it.

PyTorch marks TorchScript deprecated; where a build has no oneDNN Graph fuser,
:func:`onednn_graph_available` is False and :func:`fuse_for_inference` says so.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from .inference import optimize_for_inference, prepacking_available

_DEPRECATION_NOTICE = r".*(TorchScript|torch\.jit).*deprecated"  # PyTorch's FutureWarning on every jit call


def onednn_graph_available() -> bool:
    """Whether this PyTorch build has oneDNN and TorchScript's oneDNN Graph fuser."""
    return (
        prepacking_available() and hasattr(torch._C, "_jit_set_llga_enabled") and hasattr(torch._C, "_jit_llga_enabled")
    )


@contextlib.contextmanager
def _fuser_on() -> Iterator[None]:
    """The fuser switch is process-wide: on while a graph is profiled and fused, then as it was."""
    before = torch._C._jit_llga_enabled()
    torch._C._jit_set_llga_enabled(True)
    try:
        yield
    finally:
        torch._C._jit_set_llga_enabled(before)


class OneDNNGraph(nn.Module):
    """A traced, frozen copy of an inference-form model whose CPU fp32 calls run fused partitions.

    The first call with a new input shape (or memory layout) runs the graph ``WARMUP`` times with
    the fuser on: TorchScript profiles the shapes, then fuses. Later calls with that shape run the
    fused graph directly. Anything the graph does not cover -- another device or dtype, autograd --
    runs ``model``, the eager form it was traced from, which computes the same function.

    oneDNN builds each partition's kernels for the intra-op thread count of the thread that
    fused it, and runs them with that many threads from any caller. So each thread count gets
    its own trace: BatchParallel's one-thread workers would otherwise each start a team of the
    main thread's size, and a 16-core server would run 16 x 16 threads on 16 cores.
    """

    WARMUP = 2  # TorchScript profiles a shape on its first pass, fuses and compiles on the second

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        super().__init__()
        self.model = model.eval()
        self.graph = self._trace(example)  # the constructing thread's; others are traced on first use
        self._graphs: dict[int, torch.jit.ScriptModule] = {torch.get_num_threads(): self.graph}
        self._warm: set[tuple] = set()  # (shape, stride, intra-op threads) already fused
        self._lock = threading.Lock()

    def _trace(self, example: torch.Tensor) -> torch.jit.ScriptModule:
        with warnings.catch_warnings(), torch.no_grad():
            # The trace is of eval-mode, shape-checked code: its TracerWarnings (Python bools
            # from shapes) and TorchScript's deprecation notice say nothing about this graph.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=_DEPRECATION_NOTICE, category=FutureWarning)
            warnings.filterwarnings("ignore", message=r".*deprecated.*", category=DeprecationWarning)
            return torch.jit.freeze(torch.jit.trace(self.model, example, check_trace=False))

    def __getstate__(self) -> dict:
        raise TypeError("a OneDNNGraph cannot be pickled or copied; call fuse_for_inference again on the model")

    def _covered(self, x: torch.Tensor) -> bool:
        return (
            isinstance(x, torch.Tensor)
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and not (torch.is_grad_enabled() and x.requires_grad)
            and not torch.is_autocast_enabled("cpu")
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._covered(x):
            return self.model(x)
        check = getattr(self.model, "check_input", None)
        if check is not None:
            check(x)  # the trace dropped the eager form's checks: keep their clear errors
        threads = torch.get_num_threads()
        key = (tuple(x.shape), x.stride(), threads)
        with torch.no_grad():
            if key in self._warm:
                return self._graphs[threads](x)
            with self._lock, _fuser_on(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_DEPRECATION_NOTICE, category=FutureWarning)
                graph = self._graphs.get(threads)
                if graph is None:
                    graph = self._graphs[threads] = self._trace(x)
                for _ in range(self.WARMUP):
                    y = graph(x)
                self._warm.add(key)
            return y


def fuse_for_inference(model: nn.Module, example: torch.Tensor | None = None) -> OneDNNGraph:
    """:func:`optimize_for_inference`'s form of ``model``, run as oneDNN Graph partitions on CPU.

    ``example`` (default: one image at 299x299, NCHW) is what the graph is traced with; it fixes
    nothing but the first shape fused -- other shapes are fused on their first call. The result
    equals ``model(x)`` (max |diff| < 1e-4 fp32, in the tests). The fused path is for inference
    (its outputs carry no gradient); an input that requires grad runs the eager form instead.
    """
    if not onednn_graph_available():
        raise RuntimeError(
            "fuse_for_inference needs a PyTorch build with oneDNN and TorchScript's oneDNN Graph fuser "
            "(torch._C._jit_set_llga_enabled); use optimize_for_inference instead"
        )
    if getattr(model, "features_only", False):
        raise ValueError("fuse_for_inference takes a classifier; a features_only model returns a list of maps")
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in model.parameters()):
        raise ValueError("fuse_for_inference runs on CPU in float32; move the model with .float().cpu() first")
    if example is None:
        example = torch.zeros(1, getattr(model, "in_chans", 3), 299, 299)
    form = optimize_for_inference(model, prepack=False)  # oneDNN Graph packs the weights itself
    fused = OneDNNGraph(form, example)
    fused(example)  # profile and fuse the example's shape now, not on the user's first call
    return fused
