"""timm state dicts convert into ours and give the same logits (max |diff| < 1e-4, fp32, eval)."""

import pytest
import torch

import inceptionv4 as iv
from inceptionv4.weights import convert_state_dict

from .conftest import randomize_bn

timm = pytest.importorskip("timm")


def _pair(name: str, seed: int = 0):
    torch.manual_seed(seed)
    ref = randomize_bn(timm.create_model(name), seed)
    with torch.no_grad():  # logits of order 1, so an absolute tolerance of 1e-4 means something
        fc = ref.get_classifier()
        fc.weight.mul_(20.0)
    ours = iv.create_model(name)
    ours.load_state_dict(convert_state_dict(ref.state_dict(), source="timm", model=name))
    return ref.eval(), ours.eval()


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
@pytest.mark.parametrize("size", [(299, 299), (331, 263)])
def test_timm_equivalence(name, size):
    ref, ours = _pair(name)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert expected.abs().max() > 0.5
    assert (expected - got).abs().max().item() < 1e-4
    assert torch.equal(expected.argmax(1), got.argmax(1))


def test_timm_features_agree():
    ref, ours = _pair("inception_v4", seed=1)
    x = torch.randn(1, 3, 150, 150)
    with torch.no_grad():
        assert (ref.forward_features(x) - ours.forward_features(x)).abs().max() < 1e-4


def test_wrong_architecture_is_refused_with_both_names():
    sd = timm.create_model("inception_v4").state_dict()
    with pytest.raises(ValueError, match="does not look like a timm inception_resnet_v2 checkpoint"):
        convert_state_dict(sd, source="timm", model="inception_resnet_v2")


def test_missing_and_misshaped_weights_are_named():
    sd = dict(timm.create_model("inception_v4").state_dict())
    del sd["features.21.branch3.1.conv.weight"]
    sd["features.0.conv.weight"] = torch.zeros(32, 3, 5, 5)
    with pytest.raises(ValueError) as err:
        convert_state_dict(sd, source="timm", model="inception_v4")
    assert "stage_c.2.branch_pool.1.conv.weight" in str(err.value)
    assert "stem.conv1a.conv.weight: (32, 3, 5, 5) vs (32, 3, 3, 3)" in str(err.value)


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_a_timm_checkpoint_names_its_network_by_its_shapes(name):
    from inceptionv4.weights.convert import identify_architecture

    with torch.device("meta"):
        sd = timm.create_model(name, num_classes=7).state_dict()
    assert identify_architecture(sd, source="timm") == [name]
    del sd[next(k for k in sd if k.endswith("running_var"))]
    assert identify_architecture(sd, source="timm") == []


@pytest.mark.parametrize("name", iv.list_models())
def test_a_state_dict_in_our_names_fits_exactly_one_network(name):
    from inceptionv4.weights.convert import identify_architecture

    with torch.device("meta"):
        sd = iv.create_model(name, num_classes=11).state_dict()
    assert identify_architecture(sd, source="inceptionv4") == [name]


def test_num_classes_follows_the_checkpoint():
    sd = timm.create_model("inception_resnet_v2", num_classes=5).state_dict()
    converted = convert_state_dict({"state_dict": sd}, source="timm", model="inception_resnet_v2")
    assert converted["head.fc.weight"].shape == (5, 1536)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"source": "caffe", "model": "inception_v4"},
            "unknown source .caffe.; known sources: timm, cadene, facenet, keras, tf-slim",
        ),
        ({"source": "timm", "model": "inception_v9"}, "unknown model 'inception_v9'"),
        ({"source": "timm", "model": "inception_resnet_v1"}, "has no inception_resnet_v1 checkpoints"),
    ],
)
def test_bad_source_or_model(kwargs, match):
    with pytest.raises(ValueError, match=match):
        convert_state_dict({}, **kwargs)


def test_not_a_state_dict():
    with pytest.raises(TypeError, match="got str"):
        convert_state_dict("weights.pth", source="timm", model="inception_v4")
