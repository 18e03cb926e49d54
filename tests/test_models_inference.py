"""The inference forms compute what the per-figure network computes."""

import copy
import os
import shutil
import sys
import sysconfig
import threading

import pytest
import torch
from torch import nn

import inceptionv4 as iv
from inceptionv4.models.inference import (
    AvgPoolAfter1x1,
    BatchParallel,
    FusedResidual,
    PackedConv2d,
    compile_for_inference,
    optimize_for_inference,
    prepacking_available,
)

from .conftest import eval_model as _model
from .conftest import randomize_bn

needs_onednn = pytest.mark.skipif(not prepacking_available(), reason="this PyTorch has no oneDNN")


def test_optimized_equals_eager(model_name):
    model = _model(model_name)
    x = torch.randn(2, 3, 91, 91)
    with torch.no_grad():
        ref = model(x)
        for options in ({}, {"prepack": False}):
            fast = optimize_for_inference(model, **options)
            assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
            assert (fast(x.to(memory_format=torch.channels_last)) - ref).abs().max() < 1e-4, options
            assert (fast(x) - ref).abs().max() < 1e-4, options  # contiguous input works too
            assert (fast(x[:1]) - ref[:1]).abs().max() < 1e-4, options  # a second input shape


@needs_onednn
def test_prepacked_form_replaces_every_conv(model_name):
    model = _model(model_name)
    fast = optimize_for_inference(model)
    plain = [m for m in fast.modules() if type(m) is nn.Conv2d]
    assert plain == []  # every trunk conv is a PackedConv2d (the classifier is a Linear)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert sum(isinstance(m, PackedConv2d) for m in fast.modules()) == convs
    residual = sum(isinstance(m, iv.models.layers.ResidualInception) for m in model.modules())
    assert sum(isinstance(m, FusedResidual) for m in fast.modules()) == residual
    assert model_name == "inception_v4" or residual >= 20


@needs_onednn
def test_packed_conv_paths_agree():
    """The oneDNN path and the fallback (autograd, autocast, other dtypes) give one function."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, (1, 7), padding=(0, 3), bias=True)
    packed = PackedConv2d(conv, relu=True)
    x = torch.randn(3, 16, 12, 12).to(memory_format=torch.channels_last)
    residual = torch.randn(3, 24, 12, 12).to(memory_format=torch.channels_last)
    with torch.no_grad():
        want = torch.relu(conv(x))
        assert (packed(x) - want).abs().max() < 1e-5
        assert len(packed._packed) == 1  # packed once for this shape ...
        packed(x)
        assert len(packed._packed) == 1  # ... and reused
        assert (packed(x, residual=residual) - torch.relu(conv(x) + residual)).abs().max() < 1e-5
        as_double = copy.deepcopy(packed).double()
        assert (as_double(x.double()) - want.double()).abs().max() < 1e-5  # fallback for float64
    y = packed(x.requires_grad_())  # autograd: fallback, and gradients flow
    y.sum().backward()
    assert x.grad is not None and (y - want).abs().max() < 1e-5
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert packed(x).dtype == torch.bfloat16  # autocast is honoured, not bypassed


@needs_onednn
def test_packed_cache_is_bounded_and_follows_dtype_changes():
    packed = PackedConv2d(nn.Conv2d(4, 8, 3, padding=1), relu=False)
    with torch.no_grad():
        for size in range(8, 8 + PackedConv2d.MAX_SHAPES + 3):
            packed(torch.randn(1, 4, size, size))
        assert len(packed._packed) == PackedConv2d.MAX_SHAPES
        packed.double()
        assert packed._packed == {} and packed.weight.dtype == torch.float64


@needs_onednn
def test_optimized_form_exports_and_traces():
    """Tracing and torch.export take the plain path, so the fast form stays exportable."""
    model = _model("inception_resnet_v1")
    fast = optimize_for_inference(model)
    x = torch.randn(1, 3, 75, 75)
    with torch.no_grad():
        ref = model(x)
        traced = torch.jit.trace(fast, x)
        assert (traced(x) - ref).abs().max() < 1e-4
        program = torch.export.export(fast, (x,))
        assert (program.module()(x) - ref).abs().max() < 1e-4


def test_avg_pool_moves_after_the_1x1_conv_exactly():
    model = _model("inception_v4")
    fast = optimize_for_inference(model)
    moved = [m for m in fast.modules() if isinstance(m, AvgPoolAfter1x1)]
    assert len(moved) == 4 + 7 + 3  # every Inception-A, -B and -C block's pool branch
    assert all(m.pool.count_include_pad is False for m in moved)
    if prepacking_available():
        assert all(m.conv.conv.relu is False for m in moved)  # the ReLU runs after the pool
    # one block, on a map whose borders make the pool average 4, 6 and 9 pixels
    block = copy.deepcopy(model.stage_b[0])
    x = torch.randn(2, 1024, 7, 9)
    with torch.no_grad():
        eager = block(x)
        pooled_first = block.branch_pool(x)
        rewritten = AvgPoolAfter1x1(
            copy.deepcopy(fast.stage_b[0].branch_pool.conv), nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        )
        assert (rewritten(x) - pooled_first).abs().max() < 1e-4
        assert (fast.stage_b[0](x.to(memory_format=torch.channels_last)) - eager).abs().max() < 1e-4
    # a pool that counts the padding does not commute with the conv, so it is left alone
    with_pad = nn.Sequential(nn.AvgPool2d(3, 1, 1), iv.models.layers.ConvBNReLU(8, 4, 1))
    assert not AvgPoolAfter1x1.matches(with_pad)
    assert AvgPoolAfter1x1.matches(iv.models.layers.avg_pool_branch(8, 4))


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_batch_parallel_equals_the_model_and_keeps_order(two_threads):
    model = optimize_for_inference(_model("inception_resnet_v1"))
    parallel = BatchParallel(model, workers=2, chunk=2)
    x = torch.randn(7, 3, 75, 75)  # 4 chunks, the last one short
    with torch.inference_mode():
        ref = model(x)
        out = parallel(x)
    assert out.shape == ref.shape and (out - ref).abs().max() < 1e-5
    assert torch.get_num_threads() == 2  # the workers' single thread does not leak into the caller
    started_after = []  # nor into threads started later (PyTorch's process-wide default count)
    thread = threading.Thread(target=lambda: started_after.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert started_after == [2]
    pool = parallel._executor()
    assert {pool.submit(torch.get_num_threads).result() for _ in range(6)} == {1}  # while they keep 1
    clone = copy.deepcopy(parallel)  # copies start their own threads
    with torch.inference_mode():
        assert (clone(x) - ref).abs().max() < 1e-5
    parallel.close()
    clone.close()


def test_batch_parallel_raises_the_workers_error():
    class Fails(nn.Module):
        def forward(self, x):
            if x.shape[0] < 2:
                raise ValueError("chunk too small")
            return x

    parallel = BatchParallel(Fails(), workers=2, chunk=2)
    with pytest.raises(ValueError, match="chunk too small"):
        parallel(torch.zeros(5, 1))
    with pytest.raises(ValueError, match="chunk must be"):
        BatchParallel(Fails(), chunk=0)


HAS_TOOLCHAIN = bool(shutil.which("g++") or shutil.which("c++")) and os.path.exists(
    os.path.join(sysconfig.get_paths()["include"], "Python.h")
)


@pytest.mark.skipif(not HAS_TOOLCHAIN, reason="inductor's C++ wrapper needs a C++ compiler and Python's headers")
def test_compile_for_inference_is_the_same_function():
    """Inductor with freezing and the C++ wrapper, on a small ConvBNReLU stack (a full network takes minutes)."""
    from inceptionv4.models.layers import ConvBNReLU

    torch.manual_seed(0)
    net = randomize_bn(
        nn.Sequential(ConvBNReLU(3, 8, 3, stride=2, padding="valid"), ConvBNReLU(8, 16, (1, 7)), ConvBNReLU(16, 8, 1))
    )
    net.eval()
    compiled = compile_for_inference(net)
    x = torch.randn(2, 3, 33, 33)
    with torch.inference_mode():
        assert (compiled(x) - net(x)).abs().max() < 1e-4
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the caller's network untouched


_FAULTS = """
import resource, sys, torch
from torch import nn
from inceptionv4.models import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
torch.manual_seed(0)
net = nn.Sequential(*[nn.Conv2d(32, 32, 3, padding=1) for _ in range(4)]).eval()
x = torch.randn(2, 32, 96, 96)  # 2.4 MB activations: above malloc's mmap threshold
def faults():
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.inference_mode():
        net(x)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
for _ in range(3):
    faults()
# the median of 5 passes: the steady state, not one pass another process's load happened to disturb
# (CI once read 576 faults in one of three passes, with a test running beside it)
print(applied, sorted(faults() for _ in range(5))[2])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_retain_freed_memory_stops_page_faults_on_reuse():
    import subprocess

    def run(mode):
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
        applied, faults = out.stdout.split()
        return applied == "True", int(faults)

    applied, retained = run("retain")
    _, default = run("default")
    assert default > 1_000  # each activation is mmapped afresh: one fault per 4 KiB page
    if applied:  # glibc
        assert retained < 50, retained


def test_retain_freed_memory_is_a_no_op_off_glibc(monkeypatch):
    import platform

    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("musl", ""))
    assert iv.models.retain_freed_memory() is False
