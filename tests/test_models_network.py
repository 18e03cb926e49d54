"""The shared model interface, run on every network (full size, small inputs on CPU)."""

import copy

import pytest
import torch

import inceptionv4 as iv

from .conftest import randomize_bn

MIN = 75


def test_forward_backward_at_minimum_size(model_name):
    torch.manual_seed(0)
    model = iv.create_model(model_name, num_classes=7).train()
    y = model(torch.randn(2, 3, MIN, MIN))
    assert y.shape == (2, 7) and torch.isfinite(y).all()
    y.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []
    assert sum(p.grad.abs().sum() for p in model.parameters()) > 0


def test_input_below_minimum_fails_before_any_convolution(model_name):
    model = iv.create_model(model_name).eval()
    calls = []
    model.stem.conv1a.conv.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match=f"minimum {MIN}x{MIN}"):
        model(torch.randn(1, 3, MIN, MIN - 1))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(3, 299, 299))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(1, 1, 299, 299))
    with pytest.raises(TypeError, match=r"expected floating-point pixels .* got torch.uint8"):
        model(torch.zeros(1, 3, 299, 299, dtype=torch.uint8))  # a decoded image, not normalised
    assert calls == []


def test_minimum_size_is_tight():
    """At 74 pixels some VALID layer would produce an empty map: the documented 75 is the true minimum."""
    with torch.device("meta"):
        model = iv.create_model("inception_v4").eval()
        x = torch.empty(1, 3, MIN - 1, MIN - 1)
        with pytest.raises(RuntimeError):
            for _, module in model.trunk():  # bypass check_input
                x = module(x)


def test_non_square_input(model_name):
    model = iv.create_model(model_name, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 75, 140)).shape == (1, 3)


def test_features_only(model_name):
    torch.manual_seed(0)
    full = iv.create_model(model_name)
    backbone = iv.create_model(model_name, features_only=True)
    x = torch.randn(1, 3, 107, 107)
    maps = backbone(x)
    assert [f.reduction for f in backbone.feature_info] == [2, 4, 8, 16, 32]
    assert [m.shape[1] for m in maps] == [f.num_chs for f in backbone.feature_info]
    for m, info in zip(maps, backbone.feature_info, strict=True):
        # VALID convolutions make the maps a little smaller than size / stride
        assert 107 / info.reduction - 4 <= m.shape[-1] <= 107 / info.reduction + 1
    assert backbone.head is None
    wanted = set(backbone.state_dict())
    assert wanted < set(full.state_dict())  # backbone weights load as they are
    backbone.load_state_dict({k: v for k, v in full.state_dict().items() if k in wanted})
    full.eval(), backbone.eval()
    with torch.no_grad():
        assert torch.equal(backbone(x)[-1], full.forward_features(x))


def test_features_only_out_indices_prunes_later_stages():
    model = iv.create_model("inception_v4", features_only=True, out_indices=(1, 2))
    x = torch.randn(2, 3, 80, 80)
    maps = model(x)
    assert [m.shape[1] for m in maps] == [192, 384]
    sum(m.mean() for m in maps).backward()
    assert all(p.grad is not None for p in model.parameters())  # nothing dead left for DDP to trip on
    assert not any(k.startswith(("stage_b", "stage_c", "reduction_b")) for k in model.state_dict())


def test_forward_head_and_reset_classifier():
    model = iv.create_model("inception_resnet_v2", num_classes=10).eval()
    x = torch.randn(1, 3, 75, 75)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (1, 1536, 1, 1)
        assert model.forward_head(feats, pre_logits=True).shape == (1, 1536)
        assert torch.allclose(model.forward_head(feats), model(x))
    model.reset_classifier(5)
    assert model.get_classifier().out_features == 5 and model.num_classes == 5
    model.reset_classifier(0, global_pool="avgmax")
    with torch.no_grad():
        assert model(x).shape == (1, 3072)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(-3)


def test_channels_last_matches(model_name):
    torch.manual_seed(0)
    model = randomize_bn(iv.create_model(model_name)).eval()
    x = torch.randn(2, 3, 91, 91)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    assert (out - ref).abs().max() < 1e-4


def test_grad_checkpointing_gives_same_gradients_and_batchnorm_statistics():
    """The recomputing forward must not fold the batch into BN's running averages a second time."""
    torch.manual_seed(0)
    plain = iv.create_model("inception_resnet_v1", num_classes=4, drop_rate=0.0).train()
    saved = copy.deepcopy(plain)
    saved.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 75, 75)
    for model in (plain, saved):
        model(x).sum().backward()
    grads = dict(saved.named_parameters())
    assert max((p.grad - grads[n].grad).abs().max().item() for n, p in plain.named_parameters()) < 1e-4
    after, after_saved = plain.state_dict(), saved.state_dict()
    stats = [k for k in after if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(stats) > 300 and after["stem.conv1a.bn.num_batches_tracked"].item() == 1
    assert max((after[k].double() - after_saved[k].double()).abs().max().item() for k in stats) < 1e-6
    assert all(m.track_running_stats for m in saved.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_torch_export_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(iv.create_model(name, num_classes=10)).eval()
    x = torch.randn(2, 3, 75, 75)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "model.pt2")
    loaded = torch.export.load(tmp_path / "model.pt2").module()
    x3 = torch.randn(3, 3, 75, 75)
    with torch.no_grad():
        assert (loaded(x3) - model(x3)).abs().max() < 1e-4


def test_torch_compile_traces_without_graph_breaks():
    model = iv.create_model("inception_resnet_v2_paper").eval()
    explanation = torch._dynamo.explain(model)(torch.randn(1, 3, 75, 75))
    assert explanation.graph_break_count == 0


def test_auxiliary_head_in_training_only(model_name):
    torch.manual_seed(0)
    model = iv.create_model(model_name, num_classes=6, aux_logits=True).train()
    logits, aux = model(torch.randn(2, 3, 75, 75))
    assert logits.shape == aux.shape == (2, 6)
    (logits.sum() + aux.sum()).backward()
    assert model.aux_head.conv1.conv.weight.grad.abs().sum() > 0
    assert model.aux_head.conv1.conv.in_channels == model.feature_info[3].num_chs  # the 17x17 stage
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 75, 75)).shape == (1, 6)
    model.reset_classifier(3)
    assert model.aux_head.fc.out_features == 3


def test_auxiliary_head_is_the_released_shape_at_299():
    model = iv.create_model("inception_v4", aux_logits=True).train()
    seen = {}
    model.aux_head.conv2.register_forward_hook(lambda m, i, o: seen.update(i=tuple(i[0].shape), o=tuple(o.shape)))
    model(torch.randn(2, 3, 299, 299))
    assert seen == {"i": (2, 128, 5, 5), "o": (2, 768, 1, 1)}  # 17x17 -> avgpool 5/3 -> 5x5 -> conv 5x5 VALID
