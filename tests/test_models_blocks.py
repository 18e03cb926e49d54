"""One test per paper figure: each block maps the paper's input shape to the paper's output shape."""

import pytest
import torch

from inceptionv4.models import (
    fig03_stem,
    fig04_inception_a,
    fig05_inception_b,
    fig06_inception_c,
    fig07_reduction_a,
    fig08_reduction_b,
    fig14_stem_resnet_v1,
    released_irv2_stem,
)
from inceptionv4.models import fig10_16_inception_resnet_a as ir_a
from inceptionv4.models import fig11_17_inception_resnet_b as ir_b
from inceptionv4.models import fig12_18_reduction_b_resnet as red_b
from inceptionv4.models import fig13_19_inception_resnet_c as ir_c
from inceptionv4.models.layers import ConvBNReLU

# (block factory, input CxHxW, expected output CxHxW) -- the paper's shapes at 299x299.
BLOCKS = {
    "fig3_stem": (lambda: fig03_stem.Stem(), (3, 299, 299), (384, 35, 35)),
    "fig3_stem_split1": (lambda: fig03_stem.StemSplit1(), (64, 147, 147), (160, 73, 73)),
    "fig3_stem_split2": (lambda: fig03_stem.StemSplit2(), (160, 73, 73), (192, 71, 71)),
    "fig3_stem_split3": (lambda: fig03_stem.StemSplit3(), (192, 71, 71), (384, 35, 35)),
    "fig4_inception_a": (lambda: fig04_inception_a.InceptionA(), (384, 35, 35), (384, 35, 35)),
    "fig5_inception_b": (lambda: fig05_inception_b.InceptionB(), (1024, 17, 17), (1024, 17, 17)),
    "fig6_inception_c": (lambda: fig06_inception_c.InceptionC(), (1536, 8, 8), (1536, 8, 8)),
    "fig7_reduction_a_v4": (
        lambda: fig07_reduction_a.ReductionA(384, 192, 224, 256, 384),
        (384, 35, 35),
        (1024, 17, 17),
    ),
    "fig7_reduction_a_resnet_v1": (
        lambda: fig07_reduction_a.ReductionA(256, 192, 192, 256, 384),
        (256, 35, 35),
        (896, 17, 17),
    ),
    "fig7_reduction_a_resnet_v2": (
        lambda: fig07_reduction_a.ReductionA(384, 256, 256, 384, 384),
        (384, 35, 35),
        (1152, 17, 17),
    ),
    "fig8_reduction_b": (lambda: fig08_reduction_b.ReductionB(), (1024, 17, 17), (1536, 8, 8)),
    "fig10_inception_resnet_a_v1": (lambda: ir_a.InceptionResNetA(256, ir_a.WIDTHS_V1), (256, 35, 35), (256, 35, 35)),
    "fig11_inception_resnet_b_v1": (lambda: ir_b.InceptionResNetB(896, ir_b.WIDTHS_V1), (896, 17, 17), (896, 17, 17)),
    "fig12_reduction_b_resnet_v1": (lambda: red_b.ReductionBResNet(896, red_b.WIDTHS_V1), (896, 17, 17), (1792, 8, 8)),
    "fig13_inception_resnet_c_v1": (lambda: ir_c.InceptionResNetC(1792, ir_c.WIDTHS_V1), (1792, 8, 8), (1792, 8, 8)),
    "fig14_stem_resnet_v1": (lambda: fig14_stem_resnet_v1.StemResNetV1(), (3, 299, 299), (256, 35, 35)),
    "fig16_inception_resnet_a_v2": (lambda: ir_a.InceptionResNetA(384, ir_a.WIDTHS_V2), (384, 35, 35), (384, 35, 35)),
    "fig17_inception_resnet_b_v2": (
        lambda: ir_b.InceptionResNetB(1152, ir_b.WIDTHS_V2),
        (1152, 17, 17),
        (1152, 17, 17),
    ),
    "fig18_reduction_b_resnet_v2": (
        lambda: red_b.ReductionBResNet(1152, red_b.WIDTHS_V2),
        (1152, 17, 17),
        (2144, 8, 8),
    ),
    "fig19_inception_resnet_c_v2": (lambda: ir_c.InceptionResNetC(2144, ir_c.WIDTHS_V2), (2144, 8, 8), (2144, 8, 8)),
    "released_mixed_5b": (lambda: released_irv2_stem.Mixed5b(), (192, 35, 35), (320, 35, 35)),
    "released_stem_v2": (lambda: released_irv2_stem.StemReleasedV2(), (3, 299, 299), (320, 35, 35)),
    "released_mixed_7a": (lambda: red_b.ReductionBResNet(1088, red_b.WIDTHS_V2), (1088, 17, 17), (2080, 8, 8)),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block(name):
    factory, in_shape, out_shape = BLOCKS[name]
    block = factory().eval()
    with torch.no_grad():
        y = block(torch.randn(1, *in_shape))
    assert tuple(y.shape[1:]) == out_shape
    assert torch.isfinite(y).all()
    if hasattr(block, "out_chs"):
        assert block.out_chs == out_shape[0]


def test_conv_bn_relu_is_the_paper_layer():
    layer = ConvBNReLU(8, 16, (1, 7))
    assert layer.conv.bias is None  # BN supplies the shift
    assert layer.conv.padding == (0, 3)  # SAME for a 1x7 kernel
    assert layer.bn.eps == 1e-3  # the released checkpoints' epsilon
    assert (layer(torch.randn(2, 8, 5, 9)) >= 0).all()


def test_same_padding_refuses_stride_2():
    with pytest.raises(ValueError, match="stride 1"):
        ConvBNReLU(3, 8, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="'same' or 'valid'"):
        ConvBNReLU(3, 8, 3, padding="full")


def test_residual_block_adds_scaled_branch():
    """Sec. 3.3: out = relu(x + s * expand(branches(x))); the linear variant skips the ReLU."""
    torch.manual_seed(0)
    block = ir_a.InceptionResNetA(32, ir_a.WIDTHS_V1, scale=0.3).eval()
    x = torch.randn(2, 32, 9, 9)
    with torch.no_grad():
        expected = torch.relu(x + 0.3 * block.expand(block.branches(x)))
        assert torch.allclose(block(x), expected, atol=1e-6)
        block.activate = False
        linear = block(x)
        assert (linear < 0).any()
        assert torch.allclose(linear, x + 0.3 * block.expand(block.branches(x)), atol=1e-6)
    assert block.expand.bias is not None  # the released checkpoints' expansion carries a bias


def test_pool_branch_ignores_padding_like_tensorflow():
    block = fig04_inception_a.InceptionA()
    pool = block.branch_pool[0]
    assert pool.count_include_pad is False
    x = torch.ones(1, 1, 4, 4)
    assert torch.allclose(pool(x), x)  # a border average over real pixels only stays 1
