"""Optimizers, schedules and EMA: TensorFlow's RMSprop and average, fused and foreach forms equal the
per-tensor step, fp16 skips, and the fitting of warm-up and averaging to a short run."""


import pytest
import torch

import inceptionv4 as iv
from inceptionv4.train import (
    EMA,
    TFRMSprop,
    lr_at,
)
from inceptionv4.train.optim import build_optimizer, load_optimizer_state, param_groups, scaler_step


def test_paper_schedule_decays_by_094_every_two_epochs():
    kw = {"base_lr": 0.045, "schedule": "exponential", "steps_per_epoch": 100, "epochs": 10, "warmup_epochs": 0}
    assert lr_at(0, **kw) == 0.045 and lr_at(199, **kw) == 0.045
    assert lr_at(200, **kw) == pytest.approx(0.045 * 0.94)
    assert lr_at(999, **kw) == pytest.approx(0.045 * 0.94**4)
    cos = {**kw, "schedule": "cosine", "warmup_epochs": 1}
    assert lr_at(0, **cos) == pytest.approx(0.045 / 100) and lr_at(999, **cos) < 1e-4


def test_tf_rmsprop_matches_tensorflows_update():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = TFRMSprop([p], lr=0.1, decay=0.9, momentum=0.9, eps=1.0)
    g = torch.tensor([0.5, 3.0])
    ms, mom, w = torch.ones(2), torch.zeros(2), p.detach().clone()
    for _ in range(3):
        p.grad = g.clone()
        opt.step()
        ms = 0.9 * ms + 0.1 * g * g
        mom = 0.9 * mom + 0.1 * g / torch.sqrt(ms + 1.0)
        w = w - mom
    assert torch.allclose(p.detach(), w, atol=1e-7)


def _with_grads(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = iv.create_model(name, num_classes=10)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 0.01
    return model


def test_tf_rmsprop_foreach_equals_the_loop_on_a_whole_network():
    """The foreach form (the default on CUDA) is the readable loop's arithmetic, tensor list by list."""
    results = []
    for foreach in (False, True):
        model = _with_grads("inception_resnet_v1", 0)
        opt = TFRMSprop(param_groups(model, 4e-5), lr=0.045, foreach=foreach)
        for step in range(3):
            opt.step()
            for i, p in enumerate(model.parameters()):  # new gradients, the same in both runs
                p.grad = torch.full_like(p, 0.01 * (step + 1) * (-1) ** i)
        results.append([p.detach().clone() for p in model.parameters()])
    loop, foreach = results
    assert len(loop) > 300  # every tensor of the network
    assert max((a - b).abs().max().item() for a, b in zip(loop, foreach, strict=True)) == 0.0
    start = list(_with_grads("inception_resnet_v1", 0).parameters())
    assert min((a - b).abs().max().item() for a, b in zip(loop, start, strict=True)) > 1e-4  # every tensor moved


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_build_optimizer_is_fused_and_equals_the_plain_step(name):
    model, plain_model = _with_grads("inception_resnet_v1", 1), _with_grads("inception_resnet_v1", 1)
    opt = build_optimizer(name, model, lr=0.01, weight_decay=1e-4)
    assert all(g["fused"] for g in opt.param_groups)
    plain = type(opt)(
        param_groups(plain_model, 1e-4), lr=0.01, **({"momentum": 0.9, "nesterov": True} if name == "sgd" else {})
    )
    for _ in range(3):
        opt.step()
        plain.step()
    diff = max((a - b).abs().max().item() for a, b in zip(model.parameters(), plain_model.parameters(), strict=True))
    assert diff < 1e-6


def _overflow_then_steps(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> torch.Tensor:
    """Three fp16-scaled steps, the first of them with an infinite gradient (the scaler skips it)."""
    scaler = torch.amp.GradScaler("cpu")
    for i in range(3):
        loss = sum((p * (2.0 + torch.arange(p.numel()).view_as(p))).sum() for p in params)
        if i == 0:
            loss = loss * float("inf")
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    return torch.cat([p.detach().flatten() for p in params])


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_an_fp16_step_the_scaler_skips_leaves_the_optimizer_exact(name):
    """PyTorch's fused SGD reads a momentum buffer a skipped step never wrote: not with a grad scaler."""
    results = []
    for built in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 33), torch.nn.Linear(33, 4))
        params = list(model.parameters())
        if built:
            opt = build_optimizer(name, model, lr=0.1, weight_decay=1e-2, grad_scaling=True)
            assert all(bool(g["fused"]) == (name == "adamw") for g in opt.param_groups)
        else:
            kind = {"sgd": {"momentum": 0.9, "nesterov": True, "foreach": False}, "adamw": {"foreach": False}}[name]
            opt = type(opt)(param_groups(model, 1e-2), lr=0.1, **kind)
        results.append(_overflow_then_steps(opt, params))
    assert torch.isfinite(results[0]).all()
    assert (results[0] - results[1]).abs().max() < 1e-5


def test_resume_keeps_the_optimizer_form_of_this_run():
    model = torch.nn.Linear(4, 2)
    fused = build_optimizer("sgd", model, lr=0.1, weight_decay=0.0)
    model(torch.randn(3, 4)).sum().backward()
    fused.step()
    scaled = build_optimizer("sgd", model, lr=0.1, weight_decay=0.0, grad_scaling=True)
    load_optimizer_state(scaled, fused.state_dict())
    assert [g["fused"] for g in scaled.param_groups] == [None, None]  # not the saved run's True
    assert torch.equal(scaled.state[model.weight]["momentum_buffer"], fused.state[model.weight]["momentum_buffer"])


def test_ema_update_is_tensorflows_average_of_every_tensor():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ema = EMA(model, decay=0.5)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()(torch.randn(2, 3, 8, 8))  # running stats and the batch counter move
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    decay = min(0.5, 2 / 11)  # TensorFlow's num_updates warm-up on the first update
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            assert torch.allclose(ema.shadow[k], decay * start[k] + (1 - decay) * v, atol=1e-6), k
        else:
            assert torch.equal(ema.shadow[k], v) and v.item() == 1, k


def test_ema_skips_what_the_fp16_grad_scaler_skipped():
    """fp16 training: a step with inf gradients is skipped by the scaler (which halves its scale);
    scaler_step says so as a device tensor and the EMA then stays put, with no host sync."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    ema = EMA(model, decay=0.5)
    applied = []
    for overflow in (False, True, False):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        shadow = {k: v.clone() for k, v in ema.shadow.items()}
        scaler.scale(model(torch.randn(8, 4)).square().mean()).backward()
        if overflow:
            model[0].weight.grad[0, 0] = float("inf")
        applied.append(scaler_step(scaler, optimizer))
        optimizer.zero_grad(set_to_none=True)
        ema.update(model, applied[-1])
        w = "0.weight"
        if overflow:  # the weights did not move, nor did their average
            assert torch.equal(model.state_dict()[w], before[w]) and torch.equal(ema.shadow[w], shadow[w])
        else:
            decay = min(0.5, (1 + ema.updates) / (10 + ema.updates))
            assert not torch.equal(model.state_dict()[w], before[w])
            assert torch.allclose(ema.shadow[w], decay * shadow[w] + (1 - decay) * model.state_dict()[w], atol=1e-6)
    assert [a.item() for a in applied] == [1.0, 0.0, 1.0] and all(a.dim() == 0 for a in applied)
    assert scaler.get_scale() == 2.0**7  # halved once, by the overflow
    assert ema.updates == 2  # the skipped step does not advance the warm-up either
    state = ema.state_dict()
    assert state["updates"] == 2 and isinstance(state["updates"], int)
    shadow = {k: v.clone() for k, v in ema.shadow.items()}
    ema.update(model)  # without a scaler again: the third averaging step
    decay = min(0.5, 4 / 13)
    w = "0.weight"
    assert torch.allclose(ema.shadow[w], decay * shadow[w] + (1 - decay) * model.state_dict()[w], atol=1e-6)
    assert ema.updates == 3
    off = torch.amp.GradScaler("cpu", enabled=False)
    model(torch.randn(8, 4)).square().mean().backward()
    assert scaler_step(off, optimizer) is None  # no scaler: every step applies, the plain lerp runs



def test_fit_to_run_scales_warm_up_and_averaging_to_the_run():
    from inceptionv4.train.optim import fit_to_run

    assert fit_to_run(5.0, 0.9998, 44, 44) == (pytest.approx(0.2), None, [
        "warm-up 5 epochs -> 0.2 (20% of the 44 steps)",
        "weight averaging (EMA 0.9998) off: 44 steps is too short a run for it"])  # fmt: skip
    warm, decay, notes = fit_to_run(5.0, 0.9998, 10_000, 1000)
    assert warm == 2.0 and decay == pytest.approx(1 - 1 / 1000) and len(notes) == 2
    assert fit_to_run(1.0, 0.9998, 100_000, 1000) == (1.0, 0.9998, [])  # a long run keeps its recipe
