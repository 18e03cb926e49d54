"""Fig. 15: the Inception-ResNets -- v1, the paper's v2, and the released v2.

Stem -> N_a x IR-A -> Reduction-A -> N_b x IR-B -> Reduction-B -> N_c x IR-C -> avg pool ->
dropout -> fc. Each residual branch is scaled before the add (Sec. 3.3); ``residual_scale`` is a
float for all three stages or a (a, b, c) triple. The released code appends one more IR-C block
without ReLU and with scale 1.0; it keeps that scale whatever ``residual_scale`` says.
"""

from __future__ import annotations

import math

from torch import nn

from . import fig10_16_inception_resnet_a as ir_a
from . import fig11_17_inception_resnet_b as ir_b
from . import fig12_18_reduction_b_resnet as red_b
from . import fig13_19_inception_resnet_c as ir_c
from .fig03_stem import Stem
from .fig07_reduction_a import TABLE1, ReductionA
from .fig14_stem_resnet_v1 import StemResNetV1
from .inception_v4 import FIG3_STEM_TAPS
from .layers import ConvBNReLU
from .network import FeatureInfo, InceptionNet
from .released_irv2_stem import StemReleasedV2

#: Scales of the released code (TF-slim, facenet), used by default for every Inception-ResNet.
DEFAULT_SCALES = (0.17, 0.10, 0.20)

#: Taps of the stems without Fig. 3's splits (v1, released v2): conv2b at /2, conv4a at /4.
PLAIN_STEM_TAPS = [FeatureInfo("stem.conv2b", 64, 2), FeatureInfo("stem.conv4a", 192, 4)]


def resolve_scales(residual_scale: object) -> tuple[float, float, float]:
    """None -> the released defaults; a float -> all stages; an (a, b, c) triple -> per stage."""
    if residual_scale is None:
        return DEFAULT_SCALES
    values = (residual_scale,) * 3 if isinstance(residual_scale, int | float) else residual_scale
    try:
        scales = tuple(float(s) for s in values)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        scales = ()
    if len(scales) != 3 or isinstance(residual_scale, bool) or not all(math.isfinite(s) and s > 0 for s in scales):
        raise ValueError(
            f"residual_scale must be a positive float or an (a, b, c) triple of them, got {residual_scale!r}"
        )
    return scales  # type: ignore[return-value]


def _residual_net(
    *,
    stem: nn.Sequential,
    stem_taps: list[FeatureInfo],
    blocks: tuple[int, int, int],
    widths: tuple[tuple, tuple, tuple, tuple],
    table1: tuple[int, int, int, int],
    scales: tuple[float, float, float],
    final_linear_block: bool,
    post_chs: int | None,
    in_chans: int,
    **head,
) -> InceptionNet:
    wa, wb, wrb, wc = widths
    sa, sb, sc = scales
    c_a = stem.out_chs  # 35x35
    reduction_a = ReductionA(c_a, *table1)
    c_b = reduction_a.out_chs  # 17x17
    reduction_b = red_b.ReductionBResNet(c_b, wrb)
    c_c = reduction_b.out_chs  # 8x8
    stage_c = [ir_c.InceptionResNetC(c_c, wc, sc) for _ in range(blocks[2])]
    if final_linear_block:
        stage_c.append(ir_c.InceptionResNetC(c_c, wc, 1.0, activate=False))
    post = ConvBNReLU(c_c, post_chs, 1) if post_chs else None
    out = post_chs or c_c
    return InceptionNet(
        stem=stem,
        stage_a=nn.Sequential(*[ir_a.InceptionResNetA(c_a, wa, sa) for _ in range(blocks[0])]),
        reduction_a=reduction_a,
        stage_b=nn.Sequential(*[ir_b.InceptionResNetB(c_b, wb, sb) for _ in range(blocks[1])]),
        reduction_b=reduction_b,
        stage_c=nn.Sequential(*stage_c),
        post=post,
        num_features=out,
        feature_info=[
            *stem_taps,
            FeatureInfo("stage_a", c_a, 8),
            FeatureInfo("stage_b", c_b, 16),
            FeatureInfo("post" if post_chs else "stage_c", out, 32),
        ],
        in_chans=in_chans,
        min_input_size=75,
        **head,
    )


def inception_resnet_v1(
    *,
    in_chans: int = 3,
    residual_scale: object = None,
    final_linear_block: bool = True,
    embedding_dim: int = 0,
    **head,
) -> InceptionNet:
    """Inception-ResNet-v1 (Figs. 10-15): 35x35x256 -> 17x17x896 -> 8x8x1792.

    ``final_linear_block=True`` (default) appends facenet's 6th IR-C block (no ReLU, scale 1.0)
    after the paper's five, so facenet-pytorch's weights map one to one; False builds Fig. 15 exactly.
    ``embedding_dim=512`` gives facenet's face-embedding head (L2-normalised with ``num_classes=0``).
    """
    return _residual_net(
        stem=StemResNetV1(in_chans),
        stem_taps=PLAIN_STEM_TAPS,
        blocks=(5, 10, 5),
        widths=(ir_a.WIDTHS_V1, ir_b.WIDTHS_V1, red_b.WIDTHS_V1, ir_c.WIDTHS_V1),
        table1=TABLE1["inception_resnet_v1"],
        scales=resolve_scales(residual_scale),
        final_linear_block=final_linear_block,
        post_chs=None,
        in_chans=in_chans,
        embedding_dim=embedding_dim,
        **head,
    )


def inception_resnet_v2(*, in_chans: int = 3, residual_scale: object = None, **head) -> InceptionNet:
    """The released Inception-ResNet-v2 (timm's ``inception_resnet_v2``, Keras, TF-slim).

    Released stem + Mixed_5b (35x35x320) -> 10 x block35 -> Mixed_6a (17x17x1088) -> 20 x block17
    -> Mixed_7a (8x8x2080) -> 9 x block8 + 1 linear block8 -> 1x1 conv to 1536.
    """
    return _residual_net(
        stem=StemReleasedV2(in_chans),
        stem_taps=PLAIN_STEM_TAPS,
        blocks=(10, 20, 9),
        widths=(ir_a.WIDTHS_V2, ir_b.WIDTHS_V2, red_b.WIDTHS_V2, ir_c.WIDTHS_V2),
        table1=TABLE1["inception_resnet_v2"],
        scales=resolve_scales(residual_scale),
        final_linear_block=True,
        post_chs=1536,
        in_chans=in_chans,
        **head,
    )


def inception_resnet_v2_paper(*, in_chans: int = 3, residual_scale: object = None, **head) -> InceptionNet:
    """Inception-ResNet-v2 as the paper draws it (Figs. 3, 16-19, 15; Table 1).

    Fig. 3 stem (35x35x384) -> 5 x IR-A -> Reduction-A (256, 256, 384, 384: 17x17x1152) -> 10 x IR-B
    -> Reduction-B (8x8x2144) -> 5 x IR-C. The figures' expansions (1154 after IR-B, 2048 after
    IR-C) cannot be added to their inputs (1152, 2144): each expansion is built to its block's
    input width, as the text's "filter expansion ... to match the depth of the input" says.
    """
    return _residual_net(
        stem=Stem(in_chans),
        stem_taps=FIG3_STEM_TAPS,
        blocks=(5, 10, 5),
        widths=(ir_a.WIDTHS_V2, ir_b.WIDTHS_V2, red_b.WIDTHS_V2, ir_c.WIDTHS_V2),
        table1=TABLE1["inception_resnet_v2"],
        scales=resolve_scales(residual_scale),
        final_linear_block=False,
        post_chs=None,
        in_chans=in_chans,
        **head,
    )
