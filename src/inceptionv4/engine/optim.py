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
    """

    def __init__(self, params, lr: float = 0.045, decay: float = 0.9, momentum: float = 0.9, eps: float = 1.0,
                 weight_decay: float = 0.0) -> None:  # fmt: skip
        if lr <= 0 or not 0 <= decay < 1 or eps <= 0:
            raise ValueError(f"bad TFRMSprop settings: lr={lr}, decay={decay}, eps={eps}")
        super().__init__(
            params, {"lr": lr, "decay": decay, "momentum": momentum, "eps": eps, "weight_decay": weight_decay}
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])  # TF's L2 regulariser: in the loss
                state = self.state[p]
                if not state:
                    state["ms"] = torch.ones_like(p)
                    state["mom"] = torch.zeros_like(p)
                ms, mom = state["ms"], state["mom"]
                ms.mul_(group["decay"]).addcmul_(g, g, value=1 - group["decay"])
                mom.mul_(group["momentum"]).addcdiv_(g, ms.add(group["eps"]).sqrt_(), value=group["lr"])
                p.sub_(mom)
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv and linear weights only (as TF-slim's regularisers), not on BN or biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


OPTIMIZERS = ("rmsprop_tf", "sgd", "adamw")
SCHEDULES = ("exponential", "cosine", "constant")


def build_optimizer(
    name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    if name == "rmsprop_tf":
        return TFRMSprop(groups, lr=lr, decay=0.9, momentum=momentum, eps=1.0)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


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


class EMA:
    """Exponential moving average of the weights (and BN statistics), evaluated instead of the raw
    weights as the paper does ("a running average of the parameters")."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        # TensorFlow's num_updates warm-up: early averages are not dominated by the random init
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.detach(), 1 - decay)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
