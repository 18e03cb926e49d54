"""create_model / list_models / model cards: names, arguments, parameter counts, GFLOPs."""

import dataclasses

import pytest
import torch

import inceptionv4 as iv
from inceptionv4.models import count_flops, count_params

EXPECTED_PARAMS = {
    "inception_v4": 42_679_816,  # = timm's inception_v4
    "inception_resnet_v2": 55_843_464,  # = timm's inception_resnet_v2
    "inception_resnet_v1": 24_357_096,  # docs/architecture.md
    "inception_resnet_v2_paper": 32_433_928,  # docs/architecture.md
}


def test_list_models():
    assert iv.list_models() == sorted(EXPECTED_PARAMS)


def test_param_count_and_card(model_name):
    with torch.device("meta"):
        model = iv.create_model(model_name)
    assert count_params(model) == EXPECTED_PARAMS[model_name]
    assert model.pretrained_cfg.num_params == EXPECTED_PARAMS[model_name]
    assert count_flops(model) / 1e9 == pytest.approx(model.pretrained_cfg.gflops, abs=0.01)


def test_card_preprocessing(model_name):
    card = iv.get_model_card(model_name)
    assert card.input_size == (3, 299, 299)
    assert card.mean == card.std == (0.5, 0.5, 0.5)  # pixels scaled to [-1, 1]
    assert card.min_input_size == (3, 75, 75)
    assert 0.8 <= card.crop_pct <= 0.9
    assert card.to_dict()["name"] == model_name
    assert card.paper_top1 is not None and 75 < card.paper_top1 < 85


def test_inception_resnet_v1_without_facenet_block():
    with torch.device("meta"):
        exact = iv.create_model("inception_resnet_v1", final_linear_block=False)
    assert len(exact.stage_c) == 5 and all(b.activate for b in exact.stage_c)
    assert count_params(exact) == 22_756_328


def test_residual_scale_is_configurable():
    with torch.device("meta"):
        default = iv.create_model("inception_resnet_v2")
        one = iv.create_model("inception_resnet_v2", residual_scale=0.3)
        triple = iv.create_model("inception_resnet_v1", residual_scale=(0.1, 0.2, 0.3))
    assert [default.stage_a[0].scale, default.stage_b[0].scale, default.stage_c[0].scale] == [0.17, 0.10, 0.20]
    assert default.stage_c[-1].scale == 1.0 and default.stage_c[-1].activate is False
    assert {b.scale for b in one.stage_a} | {b.scale for b in one.stage_b} == {0.3}
    assert one.stage_c[-1].scale == 1.0  # the released linear block keeps its 1.0
    assert (triple.stage_a[0].scale, triple.stage_b[0].scale, triple.stage_c[0].scale) == (0.1, 0.2, 0.3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "inception_v5"}, "known models: inception_resnet_v1, inception_resnet_v2"),
        ({"name": "inception_v4", "num_classes": -1}, "num_classes must be an integer >= 0, got -1"),
        ({"name": "inception_v4", "num_classes": 2.5}, "got 2.5"),
        ({"name": "inception_v4", "in_chans": 0}, "in_chans must be an integer >= 1, got 0"),
        ({"name": "inception_v4", "drop_rate": 1.0}, r"drop_rate must be a float in \[0, 1\), got 1.0"),
        ({"name": "inception_v4", "global_pool": "median"}, "global_pool must be one of"),
        ({"name": "inception_v4", "residual_scale": 0.2}, "no residual connections"),
        ({"name": "inception_resnet_v2", "residual_scale": -0.1}, "residual_scale must be a positive float"),
        ({"name": "inception_resnet_v2", "residual_scale": (0.1, 0.2)}, r"got \(0.1, 0.2\)"),
        ({"name": "inception_resnet_v2", "residual_scale": "big"}, "got 'big'"),
        ({"name": "inception_v4", "out_indices": (1,)}, "only meaningful with features_only"),
        (
            {"name": "inception_v4", "features_only": True, "out_indices": (5,)},
            r"out_indices must be integers in \[0, 5\)",
        ),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with torch.device("meta"), pytest.raises(ValueError, match=match):
        iv.create_model(kwargs.pop("name"), **kwargs)


def test_an_unknown_keyword_is_a_type_error_as_python_and_timm_say():
    """timm's model tests expect a TypeError for an argument the builder does not take (issue 33 item 14)."""
    with torch.device("meta"), pytest.raises(TypeError, match=r"^inception_v4\(\) got unexpected keyword argument\(s\) "
                                                              r"not_a_model_arg, widht$"):  # fmt: skip
        iv.create_model("inception_v4", widht=3, not_a_model_arg=1)


def test_pretrained_cfg_follows_num_classes():
    with torch.device("meta"):
        model = iv.create_model("inception_v4", num_classes=10)
    assert model.pretrained_cfg.num_classes == 10
    assert dataclasses.replace(model.pretrained_cfg, num_classes=1000) == iv.get_model_card("inception_v4")
