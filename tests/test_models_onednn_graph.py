"""fuse_for_inference: the inference form as oneDNN Graph partitions computes the network's function."""

import copy
import os

import pytest
import torch
from torch import nn

import inceptionv4 as iv
from inceptionv4.models import BatchParallel, fuse_for_inference, onednn_graph_available
from inceptionv4.models import onednn_graph as og

from .conftest import eval_model as _model

pytestmark = pytest.mark.skipif(not onednn_graph_available(), reason="this PyTorch has no oneDNN Graph fuser")


def _fused_convs(graph: torch._C.Graph) -> tuple[int, int]:
    """(fusion groups, convolutions inside them) in an optimized TorchScript graph, nested blocks included."""
    groups = convs = 0
    for node in graph.nodes():
        if node.kind().startswith("prim::oneDNNFusionGroup"):
            groups += 1
            convs += sum(n.kind() == "aten::_convolution" for n in node.g("Subgraph").nodes())
        for block in node.blocks():
            g, c = _fused_convs(block)
            groups, convs = groups + g, convs + c
    return groups, convs


def test_fused_equals_eager_and_fuses_every_conv(model_name):
    model = _model(model_name)
    x = torch.randn(2, 3, 91, 91)
    before = torch._C._jit_llga_enabled()
    fused = fuse_for_inference(model, x)
    assert torch._C._jit_llga_enabled() == before  # the process-wide switch is put back
    with torch.no_grad():
        ref = model(x)
    assert ref.abs().max() > 1e-2  # non-trivial logits (random BN statistics)
    assert (fused(x) - ref).abs().max() < 1e-4
    groups, convs = _fused_convs(fused.graph.graph_for(x))
    assert convs == sum(isinstance(m, nn.Conv2d) for m in model.modules())  # every conv runs fused
    assert groups >= convs // 2
    with torch.inference_mode():  # a second shape and the channels_last layout are fused on first use
        assert (fused(x[:1]) - ref[:1]).abs().max() < 1e-4
        assert (fused(x.to(memory_format=torch.channels_last)) - ref).abs().max() < 1e-4
    assert len(fused._warm) == 3
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the caller's model untouched


def test_the_warm_up_leaves_nothing_to_compile_for_the_next_call(capfd):
    """After ``WARMUP`` passes (TorchScript profiles on the first, fuses and compiles on the
    second), the next call of that shape only executes partitions: oneDNN's verbose log, which
    names every compile and every primitive created, shows none. With one pass it would compile."""
    model = _model("inception_resnet_v1")
    x = torch.randn(1, 3, 75, 75)
    fused = fuse_for_inference(model, x)
    capfd.readouterr()
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON_CREATION):
        fused(x)
    log = [line.split(",") for line in capfd.readouterr().out.splitlines() if line.startswith("onednn_verbose")]
    assert sum(f[2:4] == ["graph", "exec"] for f in log) >= 100  # every partition ran
    assert not [f for f in log if f[3].startswith(("compile", "create"))]  # nothing was built
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON_CREATION):
        fused(torch.randn(2, 3, 75, 75))  # a new shape: fused on this call
    assert any(f[3].startswith("compile") for f in (line.split(",") for line in capfd.readouterr().out.splitlines()))


def test_uncovered_calls_run_the_eager_form():
    model = _model("inception_v4")
    fused = fuse_for_inference(model, torch.randn(1, 3, 75, 75))
    x = torch.randn(1, 3, 75, 75, requires_grad=True)
    y = fused(x)  # autograd wanted: the eager form, with a graph back to x
    assert y.grad_fn is not None
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        assert (y - model(x)).abs().max() < 1e-4


def test_bad_input_and_bad_model_get_clear_errors(monkeypatch):
    model = _model("inception_v4")
    fused = fuse_for_inference(model, torch.randn(1, 3, 75, 75))
    with pytest.raises(ValueError, match="smaller than the minimum 75x75"):
        fused(torch.randn(1, 3, 64, 64))  # the trace dropped this check; the wrapper keeps it
    with pytest.raises(ValueError, match=r"shape \(N, 3, H, W\)"):
        fused(torch.randn(1, 4, 80, 80))
    with pytest.raises(TypeError, match="cannot be pickled or copied"):
        copy.deepcopy(fused)
    with pytest.raises(ValueError, match="features_only"):
        fuse_for_inference(iv.create_model("inception_v4", features_only=True))
    with pytest.raises(ValueError, match="float32"):
        fuse_for_inference(_model("inception_v4").double())
    monkeypatch.setattr(og, "onednn_graph_available", lambda: False)
    with pytest.raises(RuntimeError, match="use optimize_for_inference instead"):
        fuse_for_inference(model)


def test_batch_parallel_over_the_fused_graph():
    model = _model("inception_resnet_v2")
    x = torch.randn(4, 3, 75, 75)
    fused = fuse_for_inference(model, x[:2])
    with torch.no_grad():
        ref = model(x)
        out = BatchParallel(fused, workers=2, chunk=2)(x)
    assert (out - ref).abs().max() < 1e-4
    chunk = ((2, 3, 75, 75), x[:2].stride())
    # both workers ran the one chunk shape, fused for their one intra-op thread
    assert fused._warm == {(*chunk, torch.get_num_threads()), (*chunk, 1)}


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
def test_batch_parallel_workers_start_no_thread_teams_of_their_own():
    """oneDNN runs a partition with the thread count it was fused under, whoever calls it: fused
    by a 2-thread caller, each one-thread worker would start a team of 2 (16 x 16 on 16 cores)."""
    model = _model("inception_v4")
    x = torch.randn(4, 3, 75, 75)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    parallel = None
    try:
        fused = fuse_for_inference(model, x[:2])
        with torch.no_grad():
            fused(x[:2])  # the caller's own OpenMP team exists from here on
            before = len(os.listdir("/proc/self/task"))
            parallel = BatchParallel(fused, workers=2, chunk=2)  # kept: its workers live as long as it
            out = parallel(x)
            grown = len(os.listdir("/proc/self/task")) - before
            ref = model(x)
    finally:
        torch.set_num_threads(threads)
        if parallel is not None:
            parallel.close()
    assert (out - ref).abs().max() < 1e-4
    assert grown == 2  # the two workers, and no OpenMP threads started for them
