"""``optimize_for_inference``: the same function as the per-figure network, in a faster form.

1. BatchNorm folded into every convolution (:func:`fold_batchnorm`).
2. On CPU, every convolution as a oneDNN primitive with its weights reordered once, ahead of
   time, into the blocked layout the kernel reads (eager PyTorch reorders them on every call:
   about a sixth of the time at batch 1) and the ReLU fused into the kernel as a post-op.
3. Every "average pool -> 1x1 conv" branch (Inception-A/B/C, Figs. 4-6) as "1x1 conv -> average
   pool": both are linear and the pool's weights sum to one, so they commute exactly; the pool then
   runs on the conv's 96-256 output channels instead of its 384-1536 input channels.
4. channels_last memory format.

The readable modules stay the definition; this form is derived from them and is checked equal
to them (max |diff| < 1e-4 in fp32) by the tests.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .fold import fold_batchnorm
from .layers import ConvBNReLU, ResidualInception


def prepacking_available() -> bool:
    """Whether this PyTorch build has the oneDNN ops that :class:`PackedConv2d` runs on."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(mkldnn, "_convolution_pointwise")
        and hasattr(mkldnn, "_reorder_convolution_weight")
    )


class PackedConv2d(nn.Module):
    """A Conv2d (+ ReLU) whose CPU fp32 forward runs oneDNN with weights packed once per input shape.

    Anything else -- another device or dtype, autocast, autograd, tracing, torch.export or
    torch.compile -- takes the plain ``F.conv2d`` path, so the module stays exportable and
    differentiable; both paths compute the same function.
    """

    MAX_SHAPES = 8  # packed copies kept (one per input shape seen); the oldest is dropped first

    def __init__(self, conv: nn.Conv2d, relu: bool) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("PackedConv2d needs numeric zero padding")
        self.register_buffer("weight", conv.weight.detach().clone())
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias.to(conv.weight))
        self.stride, self.padding, self.dilation = list(conv.stride), list(conv.padding), list(conv.dilation)
        self.groups, self.relu = conv.groups, relu
        self._packed: dict[tuple, torch.Tensor] = {}

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight.shape
        return f"{i}, {o}, kernel_size=({kh}, {kw}), stride={tuple(self.stride)}, padding={tuple(self.padding)}, relu={self.relu}"

    def _fast_path(self, x: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and x.dim() == 4
            and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
            and not torch.is_autocast_enabled("cpu")
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
        )

    def __getstate__(self) -> dict:  # copy.deepcopy / pickle: packed copies are opaque, and rebuilt on demand
        return {**self.__dict__, "_packed": {}}

    def _apply(self, fn, recurse=True):  # .to() / .half() / ...: packed copies belong to the old weights
        self._packed = {}
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """conv(x) [+ residual] [-> ReLU]; the sum and the ReLU are fused into the kernel on the fast path."""
        if not self._fast_path(x) or (residual is not None and not self._fast_path(residual)):
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            y = y if residual is None else y + residual
            return torch.relu(y) if self.relu else y
        packed = self._packed_weight(x)
        attr = "relu" if self.relu else None
        if residual is not None:
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, residual, packed, self.bias, self.padding, self.stride, self.dilation, self.groups,
                "add", 1.0, attr, [], "",
            )  # fmt: skip
        return torch.ops.mkldnn._convolution_pointwise(
            x, packed, self.bias, self.padding, self.stride, self.dilation, self.groups, attr or "none", [], ""
        )

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape)
        packed = self._packed.get(key)
        if packed is None:
            if len(self._packed) >= self.MAX_SHAPES:
                self._packed.pop(next(iter(self._packed), None), None)  # threads may race here
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, self.padding, self.stride, self.dilation, self.groups, list(key)
            )
            self._packed[key] = packed
        return packed


class FusedResidual(nn.Module):
    """An Inception-ResNet block whose ``x + scale * expand(branches)`` (+ ReLU) is one conv kernel.

    The residual scale is folded into the expansion's weights and bias, and the sum with the
    block input and the ReLU run as the kernel's post-ops (Fig. 20's scaling costs nothing).
    """

    def __init__(self, block: ResidualInception) -> None:
        super().__init__()
        conv = block.expand
        scaled = nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=True).to(conv.weight)
        scaled.weight.copy_(conv.weight * block.scale)
        scaled.bias.copy_((conv.bias if conv.bias is not None else 0) * block.scale)
        block.expand = PackedConv2d(scaled, relu=block.activate)
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block.expand(self.block.branches(x), residual=x)


class AvgPoolAfter1x1(nn.Module):
    """``relu(pool(conv(x)))`` standing in for ``relu(conv(pool(x)))`` (``conv``: 1x1, linear).

    Exact for a 1x1 conv and a pool that averages real pixels only (``count_include_pad=False``):
    pool(W x + b) = W pool(x) + b because every window's weights sum to one.
    """

    def __init__(self, conv: ConvBNReLU, pool: nn.AvgPool2d) -> None:
        super().__init__()
        conv.act = nn.Identity()  # the ReLU moves after the pool
        self.conv, self.pool = conv, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pool(self.conv(x)))  # (N, C_in, H, W) -> (N, C_out, H, W)

    @staticmethod
    def matches(module: nn.Module) -> bool:
        """Whether ``module`` is an exact "average pool -> 1x1 ConvBNReLU" branch."""
        if not (isinstance(module, nn.Sequential) and len(module) == 2):
            return False
        pool, conv = module
        return (
            isinstance(pool, nn.AvgPool2d)
            and not pool.count_include_pad
            and not pool.ceil_mode
            and pool.divisor_override is None
            and isinstance(conv, ConvBNReLU)
            and isinstance(conv.conv, nn.Conv2d)
            and conv.conv.kernel_size == (1, 1)
            and conv.conv.stride == (1, 1)
            and conv.conv.padding == (0, 0)
        )


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


@torch.no_grad()
def optimize_for_inference(model: nn.Module, *, prepack: bool | None = None, channels_last: bool = True) -> nn.Module:
    """A faster copy of ``model`` for inference (eval mode): folded BN, prepacked conv+ReLU, pools
    moved after the 1x1 convs, channels_last.

    ``prepack`` (default: when this PyTorch has oneDNN) swaps every conv for a :class:`PackedConv2d`.
    """
    prepack = prepacking_available() if prepack is None else prepack
    if prepack and not prepacking_available():
        raise RuntimeError("prepack=True needs a PyTorch build with oneDNN (torch.backends.mkldnn)")
    fast = fold_batchnorm(model)
    for name, module in list(fast.named_modules()):
        if AvgPoolAfter1x1.matches(module):
            _set(fast, name, AvgPoolAfter1x1(module[1], module[0]))
    if prepack:
        for name, module in list(fast.named_modules()):
            if isinstance(module, ConvBNReLU) and isinstance(module.conv, nn.Conv2d):
                relu = isinstance(module.act, nn.ReLU)  # False where the ReLU moved after a pool
                module.conv, module.act = PackedConv2d(module.conv, relu=relu), nn.Identity()
            elif isinstance(module, ResidualInception) and isinstance(module.expand, nn.Conv2d):
                _set(fast, name, FusedResidual(module))
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast.eval()


def compile_for_inference(model: nn.Module, *, cpp_wrapper: bool = True) -> nn.Module:
    """torch.compile of the BN-folded, channels_last network with constant freezing (eval only).

    Inductor then packs every conv's weights once, fuses ReLU and residual adds into the kernels,
    and (``cpp_wrapper``) calls them from generated C++ rather than Python: the lowest batch-1
    latency on CPU. The first call per input shape compiles (1-3 minutes on 2 cores).
    """
    fast = fold_batchnorm(model).to(memory_format=torch.channels_last).eval()
    return torch.compile(fast, options={"freezing": True, "cpp_wrapper": cpp_wrapper})


_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc <malloc.h>


def retain_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse rather than hand it back to the kernel.

    By default every block over 128 KiB-32 MiB is a fresh ``mmap`` that is unmapped on free, so each
    forward pass page-faults its activations in again (Inception-v4, measured here: about 3,000
    faults per batch-1 pass and 117,000 per batch of 16, each page zeroed by the kernel). With this
    set, passes after the first reuse the same memory: no faults. onnxruntime gets the same from its
    own memory arena.

    Process-wide and permanent: memory the process has used stays resident until it exits (the
    peak of one forward pass, for an inference loop). One malloc arena is used, so worker threads
    (:class:`BatchParallel`) reuse the same memory. Returns False, changing nothing, where the C
    library is not glibc.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_ARENA_MAX, 1))
    applied = [mallopt(option, value) for option, value in settings]  # every one, even after a refusal
    return all(ok == 1 for ok in applied)


def _one_intra_op_thread() -> None:
    """A BatchParallel worker's intra-op thread count: 1, taken up by this thread at once.

    PyTorch keeps one process-wide count that each thread copies on its first parallel op, and
    ``torch.set_num_threads`` sets it as well as the caller's own. Reading the count here makes
    this thread's copy now, so the caller can put the process-wide value back after the batch.
    """
    torch.set_num_threads(1)
    torch.get_num_threads()


class BatchParallel(nn.Module):
    """Runs a CPU model on chunks of each batch in ``workers`` threads, one intra-op thread each.

    On a few cores, one thread per chunk beats splitting every op across threads: no barrier
    after each of the ~150 convolutions, and a thread slowed by a noisy neighbour just takes
    fewer chunks. The result equals ``model(x)`` (the same kernels on smaller batches).
    """

    def __init__(self, model: nn.Module, workers: int | None = None, chunk: int = 4) -> None:
        super().__init__()
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.model, self.chunk = model, chunk
        self.workers = workers or torch.get_num_threads()
        self._pool = None

    def _executor(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.workers, initializer=_one_intra_op_thread)
        return self._pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.split(self.chunk)
        if len(parts) == 1 or x.device.type != "cpu":
            return self.model(x)
        grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

        def run(part: torch.Tensor) -> torch.Tensor:  # grad modes are thread-local: carry the caller's
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return self.model(part)

        threads = torch.get_num_threads()
        try:
            return torch.cat(list(self._executor().map(run, parts)))
        finally:  # a worker's set_num_threads(1) also set the count every thread started later takes
            torch.set_num_threads(threads)

    def close(self) -> None:
        """Stop the worker threads (they are also stopped when the process exits)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __getstate__(self) -> dict:  # copy.deepcopy / pickle: threads are not copied, a copy starts its own
        return {**self.__dict__, "_pool": None}
