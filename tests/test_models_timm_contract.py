"""timm's model contract, natively: default_cfg, feature_info, unpooled heads, forward_intermediates
and pruning with timm's meaning, FX tracing, scripting, and the registration in timm's registry.
(`make test` also runs timm's own tests/test_models.py on the registered networks.)"""

import pytest
import torch

import inceptionv4 as iv
from inceptionv4.models.network import FeatureInfoList

from .conftest import randomize_bn


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return randomize_bn(iv.create_model("inception_resnet_v1", num_classes=7)).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 75, 75, generator=torch.Generator().manual_seed(1))


def test_default_cfg_is_timms_dict_derived_from_the_card(net):
    cfg = net.default_cfg
    assert isinstance(cfg, dict) and cfg == dict(net.pretrained_cfg)
    assert cfg["input_size"] == (3, 299, 299) and cfg["min_input_size"] == (3, 75, 75) and cfg["pool_size"] == (8, 8)
    assert cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bicubic" and cfg["mean"] == cfg["std"] == (0.5,) * 3
    assert cfg["num_classes"] == 7 and cfg["first_conv"] == "stem.conv1a.conv" and cfg["classifier"] == "head.fc"
    params = dict(net.named_parameters())
    assert cfg["first_conv"] + ".weight" in params and cfg["classifier"] + ".weight" in params
    assert net.pretrained_cfg.get("hf_hub_id") is None and "hf_hub_id" not in net.pretrained_cfg
    with torch.device("meta"):
        for name in iv.list_models():  # every network's pool size is what its trunk gives at 299
            m = iv.create_model(name)
            assert tuple(m.forward_features(torch.empty(1, 3, 299, 299)).shape[-2:]) == m.default_cfg["pool_size"]


def test_feature_info_has_timms_interface_and_still_iterates(net):
    info = net.feature_info
    assert isinstance(info, list) and [f.reduction for f in info] == [2, 4, 8, 16, 32]
    assert info.channels() == [64, 192, 256, 896, 1792] and info.reduction() == [2, 4, 8, 16, 32]
    assert info.module_name(2) == info[2].module and info.channels([0, 4]) == [64, 1792]
    assert info.get_dicts(keys=["num_chs", "reduction"])[-1] == {"num_chs": 1792, "reduction": 32}
    assert info.get("reduction", 3) == 16
    with pytest.raises(KeyError):
        info.get("stride")
    backbone = iv.create_model("inception_v4", features_only=True, out_indices=(1, 3))
    assert backbone.feature_info.channels() == [192, 1024] and backbone.feature_info.reduction() == [4, 16]
    assert len(backbone.feature_info) == 5 and isinstance(backbone.feature_info, FeatureInfoList)


def test_unpooled_heads_from_create_model_and_reset_classifier(net, x):
    feats = net.forward_features(x)
    unpooled = iv.create_model("inception_resnet_v1", num_classes=0, global_pool="")
    unpooled.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("head.")})
    assert torch.equal(unpooled.eval()(x), feats)  # the last map itself, (N, C, H, W)
    m = iv.create_model("inception_resnet_v1", num_classes=7)
    m.load_state_dict(net.state_dict())
    m.eval().reset_classifier(0, "")
    assert torch.equal(m(x), feats) and m.head_hidden_size == 1792
    m.reset_classifier(5)  # keeps the unpooled head: the classifier at every position
    fc = m.get_classifier()
    want = torch.einsum("nchw,kc->nkhw", feats, fc.weight) + fc.bias[:, None, None]
    assert (m(x) - want).abs().max() < 1e-5 and m(x).shape == (2, 5, *feats.shape[-2:])
    m.reset_classifier(5, "avgmax")
    assert m.head_hidden_size == 2 * 1792 and m.forward_head(feats, pre_logits=True).shape == (2, 3584)


def test_reset_classifier_follows_the_networks_device_dtype_and_mode(net):
    m = iv.create_model("inception_v4", num_classes=3).to(torch.float64).train()
    m.reset_classifier(4)
    assert m.get_classifier().weight.dtype == torch.float64 and m.head.training
    m.eval().reset_classifier(2)
    assert not m.head.training


def test_forward_intermediates_and_pruning_have_timms_meaning(net, x):
    final, maps = net.forward_intermediates(x)
    assert torch.equal(final, net.forward_features(x)) and [t.shape[1] for t in maps] == net.feature_info.channels()
    last_two = net.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [t.shape[1] for t in last_two] == [896, 1792] and torch.equal(last_two[0], maps[3])
    early, picked = net.forward_intermediates(x, indices=[1, -3], stop_early=True)
    assert torch.equal(early, maps[2]) and torch.equal(picked[0], maps[1]) and torch.equal(picked[1], maps[2])
    for bad in (0, 6, [5], [], ["a"]):
        with pytest.raises(ValueError, match="indices"):
            net.forward_intermediates(x, indices=bad)
    with pytest.raises(ValueError, match="output_fmt must be 'NCHW'"):
        net.forward_intermediates(x, output_fmt="NHWC")
    pruned = iv.create_model("inception_resnet_v1", num_classes=7)
    pruned.load_state_dict(net.state_dict())
    assert pruned.eval().prune_intermediate_layers((1, 2)) == [1, 2]
    assert torch.equal(pruned(x), maps[2]) and pruned.num_classes == 0
    pruned.train()
    pruned(x).mean().backward()
    assert all(p.grad is not None for p in pruned.parameters())  # nothing left that does not run


def test_fx_tracing_and_feature_extraction_equal_eager(net, x):
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    traced = torch.fx.symbolic_trace(net)
    with torch.no_grad():
        assert (traced(x) - net(x)).abs().max() < 1e-5
    _, nodes = get_graph_node_names(net)
    returns = {}
    for i, module in enumerate(net.feature_info.module_name()):  # the last node inside each tapped module
        returns[[n for n in nodes if n == module or n.startswith(module + ".")][-1]] = str(i)
    extractor = create_feature_extractor(net, return_nodes=returns)
    with torch.no_grad():
        got = list(extractor(x).values())
        want = net.forward_intermediates(x, intermediates_only=True)
    assert len(got) == 5 and all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    with pytest.raises(ValueError, match="smaller than the minimum 75x75"):  # the eager checks are still there
        net(torch.zeros(1, 3, 64, 64))
    with pytest.raises(TypeError, match="floating-point pixels"):
        net(torch.zeros(1, 3, 80, 80, dtype=torch.uint8))


def test_torchscript_equals_eager(net, x):
    scripted = torch.jit.script(net)
    with torch.no_grad():
        assert (scripted(x) - net(x)).abs().max() < 1e-5
    assert len(net.forward_intermediates(x, intermediates_only=True)) == 5  # eager-only methods still run eagerly


def test_register_timm_builds_ours_through_timms_factory():
    timm = pytest.importorskip("timm")
    names = iv.register_timm()
    assert names == [f"iv4_{n}" for n in iv.list_models()] and set(names) <= set(timm.list_models("iv4_*"))
    m = timm.create_model("iv4_inception_v4", num_classes=5, drop_rate=0.1)
    assert isinstance(m, iv.InceptionNet) and m.model_name == "inception_v4" and m.num_classes == 5
    with torch.device("meta"):  # timm's own inception_v4 is left as it was
        assert type(timm.create_model("inception_v4")).__module__.startswith("timm.")
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        timm.create_model("iv4_inception_v4", not_a_model_arg=1)
    meta = timm.create_model("iv4_inception_resnet_v2", device="meta", dtype=torch.float16)
    assert {p.device.type for p in meta.parameters()} == {"meta"} and {p.dtype for p in meta.parameters()} == {torch.float16}
    data = timm.data.resolve_data_config(model=m)
    assert data["input_size"] == (3, 299, 299) and data["crop_pct"] == 0.875 and data["mean"] == (0.5, 0.5, 0.5)
    assert timm.models.get_pretrained_cfg_value("iv4_inception_v4", "min_input_size") == (3, 75, 75)
    backbone = timm.create_model("iv4_inception_v4", features_only=True, out_indices=(2, 4))
    assert backbone.feature_info.channels() == [384, 1536]
    with pytest.raises(ValueError, match="prefix must be"):
        iv.register_timm("bad prefix")


def test_register_timm_without_timm_names_the_extra_and_the_readme_line_runs_with_it(demo_environment):
    import re
    import subprocess
    import sys
    from pathlib import Path

    with pytest.raises(ModuleNotFoundError, match=r"register_timm needs timm: pip install 'inceptionv4\[timm\]'"):
        iv.register_timm()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    [line] = re.findall(r"^python -c \"(import inceptionv4, timm;.*)\"$", readme, re.M)
    assert "pip install -e '.[timm]'" in readme
    run = subprocess.run([sys.executable, "-c", line], capture_output=True, text=True, timeout=300)  # timm is here
    assert run.returncode == 0 and run.stdout.strip() == "1000", run.stderr[-2000:]
