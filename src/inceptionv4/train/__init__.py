"""Training: :func:`train` (the whole run as one function), its :class:`TrainConfig`, the
optimisers and schedules, checkpoints and the run folder.

The names below load on first use (PEP 562): ``train`` pulls in the data pipeline and with it
torchvision (and through it torch._dynamo, slow to import), which ``inceptionv4 --help``, ``list``,
``info``, ``convert`` and ``export`` do not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "latest_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "RECIPES": "config",
    "TrainConfig": "config",
    "EMA": "optim",
    "TFRMSprop": "optim",
    "lr_at": "optim",
    "NonFiniteLossError": "trainer",
    "UnreadableDataError": "trainer",
    "train": "trainer",
}

__all__ = [
    "EMA",
    "RECIPES",
    "NonFiniteLossError",
    "TFRMSprop",
    "TrainConfig",
    "UnreadableDataError",
    "latest_checkpoint",
    "load_checkpoint",
    "lr_at",
    "save_checkpoint",
    "train",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from .config import RECIPES, TrainConfig
    from .optim import EMA, TFRMSprop, lr_at
    from .trainer import NonFiniteLossError, UnreadableDataError, train
