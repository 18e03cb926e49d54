"""Training and evaluation: functions over (model, data, optimizer) that return metric dicts."""

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import RECIPES, TrainConfig
from .evaluate import evaluate
from .optim import EMA, TFRMSprop, lr_at
from .trainer import NonFiniteLossError, train

__all__ = [
    "EMA",
    "RECIPES",
    "NonFiniteLossError",
    "TFRMSprop",
    "TrainConfig",
    "evaluate",
    "latest_checkpoint",
    "load_checkpoint",
    "lr_at",
    "save_checkpoint",
    "train",
]
