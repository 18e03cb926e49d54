"""Optimizers and learning-rate schedules of the recipes (Sec. 4 of the paper and two modern ones)."""

from __future__ import annotations

import math

import torch
from torch import nn


class TFRMSprop(torch.optim.Optimizer):
    """RMSProp as TensorFlow computes it, which is what the paper used (decay 0.9, epsilon 1.0).

    It differs from ``torch.optim.RMSprop`` where the paper's large epsilon makes it matter: the
    epsilon goes inside the square root, and the mean square starts at 1, not 0::

        ms  = decay * ms + (1 - decay) * g^2          (ms starts at 1)
        mom = momentum * mom + lr * g / sqrt(ms + eps)
        p  -= mom

    With ``foreach`` each line runs for all of a group's tensors in one ``torch._foreach`` call.
    Inception-ResNet-v2 has 694 parameter tensors, so the per-tensor loop issues about 5,000 small
    kernels a step, and on a GPU their launches cost more than the update's arithmetic. On a CPU
    the two are about level, the update being bound by memory traffic either way
    (``benchmarks/optim_step.py``). The default, ``None``, uses foreach for CUDA tensors and the
    loop otherwise, as ``torch.optim`` does. Both compute the same numbers (the tests compare them).
    """

    def __init__(self, params, lr: float = 0.045, decay: float = 0.9, momentum: float = 0.9, eps: float = 1.0,
                 weight_decay: float = 0.0, foreach: bool | None = None) -> None:  # fmt: skip
        if lr <= 0 or not 0 <= decay < 1 or eps <= 0:
            raise ValueError(f"bad TFRMSprop settings: lr={lr}, decay={decay}, eps={eps}")
        defaults = {"lr": lr, "decay": decay, "momentum": momentum, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, {**defaults, "foreach": foreach})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                state = self.state[p]
                if not state:
                    state["ms"] = torch.ones_like(p, memory_format=torch.preserve_format)
                    state["mom"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            for (device, _), same in _by_device_and_dtype(params).items():
                foreach = group.get("foreach")
                if foreach or (foreach is None and device.type == "cuda"):
                    self._update_foreach(same, group)
                else:
                    for p in same:
                        self._update_one(p, group)
        return loss

    def _update_one(self, p: torch.Tensor, group: dict) -> None:
        g = p.grad
        if group["weight_decay"]:
            g = g.add(p, alpha=group["weight_decay"])  # TF's L2 regulariser: in the loss
        ms, mom = self.state[p]["ms"], self.state[p]["mom"]
        ms.mul_(group["decay"]).addcmul_(g, g, value=1 - group["decay"])
        mom.mul_(group["momentum"]).addcdiv_(g, ms.add(group["eps"]).sqrt_(), value=group["lr"])
        p.sub_(mom)

    def _update_foreach(self, params: list[torch.Tensor], group: dict) -> None:
        grads = [p.grad for p in params]
        if group["weight_decay"]:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        ms = [self.state[p]["ms"] for p in params]
        mom = [self.state[p]["mom"] for p in params]
        torch._foreach_mul_(ms, group["decay"])
        torch._foreach_addcmul_(ms, grads, grads, value=1 - group["decay"])
        denom = torch._foreach_add(ms, group["eps"])
        torch._foreach_sqrt_(denom)
        torch._foreach_mul_(mom, group["momentum"])
        torch._foreach_addcdiv_(mom, grads, denom, value=group["lr"])
        torch._foreach_sub_(params, mom)


def _by_device_and_dtype(tensors: list[torch.Tensor]) -> dict[tuple, list[torch.Tensor]]:
    """One list per (device, dtype): a ``torch._foreach`` call takes tensors of one kind."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return groups


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv and linear weights only (as TF-slim's regularisers), not on BN or biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


OPTIMIZERS = ("rmsprop_tf", "sgd", "adamw")
SCHEDULES = ("exponential", "cosine", "constant")
FUSED_DEVICES = {"cpu", "cuda"}  # where torch.optim.SGD / AdamW have fused kernels for fp32 parameters


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float = 0.9,
                    grad_scaling: bool = False) -> torch.optim.Optimizer:  # fmt: skip
    """The recipe's optimizer over ``model``'s trainable parameters, in its fastest exact form.

    SGD and AdamW take PyTorch's fused kernels where the parameters' device has them: one pass
    over each tensor per step, the same update (``benchmarks/optim_step.py`` times both forms).
    ``TFRMSprop`` picks foreach or its loop by device.

    With ``grad_scaling`` (fp16's GradScaler), SGD is not fused: PyTorch's fused SGD does not honour
    a step the scaler skips for inf/NaN gradients (its momentum buffer goes on from a value the
    skipped step never wrote). Fused AdamW does; the tests check both.
    """
    groups = param_groups(model, weight_decay)
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = {"fused": True} if devices and devices <= FUSED_DEVICES else {}
    if name == "rmsprop_tf":
        return TFRMSprop(groups, lr=lr, decay=0.9, momentum=momentum, eps=1.0)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0,
                               **({} if grad_scaling else fused))  # fmt: skip
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **fused)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


IMPLEMENTATION = ("fused", "foreach")  # how a group is stepped: this process's choice, not the checkpoint's


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)``, keeping the implementation ``optimizer`` was built with.

    A saved param group carries its ``fused`` / ``foreach`` flags, and PyTorch restores them. A run
    saved without a grad scaler (fused SGD) and resumed in fp16 would get back the fused step that
    corrupts skipped steps. A checkpoint from before the fused forms would stay on the slow path.
    """
    built = [{k: g[k] for k in IMPLEMENTATION if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flags in zip(optimizer.param_groups, built, strict=True):
        group.update(flags)


#: the most of a run that warm-up may take, whatever the recipe says in epochs
MAX_WARMUP_SHARE = 0.2
#: weight averaging needs its window (1 / (1 - decay) steps) to be at most this share of the run
MAX_EMA_WINDOW_SHARE = 0.1
#: below this many steps a run keeps no weight average at all
MIN_EMA_STEPS = 200


def fit_to_run(warmup_epochs: float, ema_decay: float | None, total_steps: int,
               steps_per_epoch: int) -> tuple[float, float | None, list[str]]:  # fmt: skip
    """A recipe's warm-up and weight averaging fitted to a run of ``total_steps``.

    Recipes are written for long runs: "modern" warms up over 5 epochs and averages with decay
    0.9998, a window of 5,000 steps. In a short run that leaves the rate low throughout, and an
    average that is mostly the initial weights. So warm-up takes at most
    :data:`MAX_WARMUP_SHARE` of the steps. The decay is lowered until the window is
    :data:`MAX_EMA_WINDOW_SHARE` of the run, and averaging is off below :data:`MIN_EMA_STEPS`.
    Returns (warmup_epochs, ema_decay, what changed, for the log).
    """
    notes = []
    cap = MAX_WARMUP_SHARE * total_steps / max(steps_per_epoch, 1)
    if warmup_epochs > cap:
        notes.append(f"warm-up {warmup_epochs:g} epochs -> {cap:.3g} ({MAX_WARMUP_SHARE:.0%} of the {total_steps} steps)")
        warmup_epochs = cap
    if ema_decay and 1 / (1 - ema_decay) > MAX_EMA_WINDOW_SHARE * total_steps:
        if total_steps < MIN_EMA_STEPS:
            notes.append(f"weight averaging (EMA {ema_decay:g}) off: {total_steps} steps is too short a run for it")
            ema_decay = None
        else:
            fitted = 1 - 1 / (MAX_EMA_WINDOW_SHARE * total_steps)
            notes.append(f"EMA decay {ema_decay:g} -> {fitted:.4g} (its window a tenth of the {total_steps} steps)")
            ema_decay = fitted
    return warmup_epochs, ema_decay, notes


def lr_at(step: int, *, base_lr: float, schedule: str, steps_per_epoch: int, epochs: int, warmup_epochs: float,
          decay_rate: float = 0.94, decay_epochs: float = 2.0, min_lr_ratio: float = 0.0) -> float:  # fmt: skip
    """Learning rate at optimizer step ``step`` (a pure function, so resuming needs no scheduler state).

    "exponential": the paper's lr * 0.94 ** floor(epoch / 2); "cosine": half-cosine to
    ``min_lr_ratio * lr``. Both after a linear warm-up of ``warmup_epochs``.
    """
    epoch = step / max(steps_per_epoch, 1)
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return base_lr * (step + 1) / max(warmup_epochs * steps_per_epoch, 1)
    if schedule == "exponential":
        return base_lr * decay_rate ** math.floor(epoch / decay_epochs)
    if schedule == "cosine":
        span = max(epochs - warmup_epochs, 1e-8)
        t = min(max(epoch - warmup_epochs, 0.0) / span, 1.0)
        return base_lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
    if schedule == "constant":
        return base_lr
    raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


def scaler_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
    """``scaler.step(optimizer)`` then ``scaler.update()``. Returns a 0-dim tensor on the device, 1
    if the step was applied and 0 if the scaler skipped it for inf/NaN gradients (it then halves its
    scale, which is how this tells, without a host sync); None with the scaler off (every step
    applies)."""
    scale = getattr(scaler, "_get_scale_async", None)
    if not scaler.is_enabled() or scale is None or scale() is None:
        scaler.step(optimizer)
        scaler.update()
        return None
    before = scale().clone()
    scaler.step(optimizer)
    scaler.update()
    return (scale() >= before).float()


class EMA:
    """Exponential moving average of the weights (and BN statistics), evaluated instead of the raw
    weights as the paper does ("a running average of the parameters").

    An update is one ``torch._foreach_lerp_`` over the floating-point tensors and one
    ``torch._foreach_copy_`` over the rest (BN's batch counters), not a kernel per tensor: about
    1,300 tensors in Inception-ResNet-v2 (its state dict: 1,306), every step.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self._updates: int | torch.Tensor = 0  # an int64 device tensor once steps can be skipped
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @property
    def updates(self) -> int:
        """Averaging steps applied so far (TensorFlow's ``num_updates``); reading it syncs with the device."""
        return int(self._updates)

    @torch.no_grad()
    def update(self, model: nn.Module, applied: torch.Tensor | None = None) -> None:
        """Average ``model``'s tensors in. ``applied`` (from :func:`scaler_step`, a 0-dim tensor on
        the device) is 0 when the fp16 grad scaler skipped the step: the averages then stay as they
        were and the step does not count towards the warm-up, decided on the device -- no host sync."""
        # TensorFlow's num_updates warm-up: early averages are not dominated by the random init
        weight: float | torch.Tensor
        if applied is None and not isinstance(self._updates, torch.Tensor):
            self._updates += 1
            weight = 1 - min(self.decay, (1 + self._updates) / (10 + self._updates))
        else:  # the count and the weight stay on the device: 0 on a skipped step
            step = applied if applied is not None else torch.ones((), device=self._updates.device)
            if not isinstance(self._updates, torch.Tensor):
                self._updates = torch.tensor(self._updates, dtype=torch.int64, device=step.device)
            self._updates = self._updates + step.to(torch.int64)
            n = self._updates.float()
            weight = step.float() * (1 - torch.clamp((1 + n) / (10 + n), max=self.decay))
        averaged: dict[tuple, tuple[list, list]] = {}
        copied: tuple[list, list] = ([], [])
        for k, v in model.state_dict().items():
            pair = averaged.setdefault((v.device, v.dtype), ([], [])) if v.dtype.is_floating_point else copied
            pair[0].append(self.shadow[k])
            pair[1].append(v.detach())
        for dst, src in averaged.values():
            if isinstance(weight, float):
                torch._foreach_lerp_(dst, src, weight)
            else:  # lerp with a tensor weight (not a synced scalar): dst += weight * (src - dst)
                delta = torch._foreach_sub(src, dst)
                torch._foreach_mul_(delta, weight.to(dst[0].device, dst[0].dtype))
                torch._foreach_add_(dst, delta)
        if copied[0]:
            torch._foreach_copy_(copied[0], copied[1])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self._updates = state["decay"], int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
