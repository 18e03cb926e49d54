"""Fig. 9: Inception-v4, in the layout of the released checkpoint (timm's ``inception_v4``).

| stage | figure | output at 299 |
|---|---|---|
| stem | 3 | 35x35x384 |
| stage_a: 4 x Inception-A | 4 | 35x35x384 |
| reduction_a (k, l, m, n = 192, 224, 256, 384) | 7 | 17x17x1024 |
| stage_b: 7 x Inception-B | 5 | 17x17x1024 |
| reduction_b | 8 | 8x8x1536 |
| stage_c: 3 x Inception-C | 6 | 8x8x1536 |
| avg pool -> dropout (keep 0.8) -> fc | 9 | 1000 |
"""

from __future__ import annotations

from torch import nn

from .fig03_stem import Stem
from .fig04_inception_a import InceptionA
from .fig05_inception_b import InceptionB
from .fig06_inception_c import InceptionC
from .fig07_reduction_a import TABLE1, ReductionA
from .fig08_reduction_b import ReductionB
from .network import FeatureInfo, InceptionNet

#: Taps shared by every network with the Fig. 3 stem.
FIG3_STEM_TAPS = [FeatureInfo("stem.conv2b", 64, 2), FeatureInfo("stem.mixed_4a", 192, 4)]


def inception_v4(*, in_chans: int = 3, residual_scale: object = None, **head) -> InceptionNet:
    """Build Inception-v4 (Fig. 9). ``head``: num_classes, drop_rate, global_pool."""
    if residual_scale is not None:
        raise ValueError(
            f"inception_v4 has no residual connections, so residual_scale must be None, got {residual_scale!r}"
        )
    stem = Stem(in_chans)  # 35x35x384
    reduction_a = ReductionA(384, *TABLE1["inception_v4"])  # 17x17x1024
    reduction_b = ReductionB(reduction_a.out_chs)  # 8x8x1536
    return InceptionNet(
        stem=stem,
        stage_a=nn.Sequential(*[InceptionA(384) for _ in range(4)]),
        reduction_a=reduction_a,
        stage_b=nn.Sequential(*[InceptionB(1024) for _ in range(7)]),
        reduction_b=reduction_b,
        stage_c=nn.Sequential(*[InceptionC(1536) for _ in range(3)]),
        post=None,
        num_features=1536,
        feature_info=[
            *FIG3_STEM_TAPS,
            FeatureInfo("stage_a", 384, 8),
            FeatureInfo("stage_b", 1024, 16),
            FeatureInfo("stage_c", 1536, 32),
        ],
        in_chans=in_chans,
        min_input_size=75,
        **head,
    )
