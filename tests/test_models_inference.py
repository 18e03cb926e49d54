"""The inference form computes what the per-figure network computes."""

import torch

import inceptionv4 as iv
from inceptionv4.models.inference import MergedOpenings, optimize_for_inference

from .conftest import randomize_bn


def test_optimized_equals_eager(model_name):
    torch.manual_seed(0)
    model = randomize_bn(iv.create_model(model_name, num_classes=10)).eval()
    fast = optimize_for_inference(model)
    merged = [m for m in fast.modules() if isinstance(m, MergedOpenings)]
    assert len(merged) >= 5  # every multi-branch block opens with one merged conv
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    x = torch.randn(2, 3, 91, 91)
    with torch.no_grad():
        assert (fast(x.to(memory_format=torch.channels_last)) - model(x)).abs().max() < 1e-4
        assert (fast(x) - model(x)).abs().max() < 1e-4  # contiguous input works too


def test_merge_counts_for_inception_v4():
    with torch.no_grad():
        fast = optimize_for_inference(iv.create_model("inception_v4").eval(), channels_last=False)
    merged = {type(m.block).__name__: m.merged.out_channels for m in fast.modules() if isinstance(m, MergedOpenings)}
    # Inception-A: 96 + 64 + 64; Inception-B: 384 + 192 + 192; Inception-C: 256 + 384 + 384; Reduction-B: 192 + 256
    assert merged == {"StemSplit2": 128, "InceptionA": 224, "InceptionB": 768, "ReductionB": 448, "InceptionC": 1024}
