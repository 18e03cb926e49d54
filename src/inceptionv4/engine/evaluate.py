"""Evaluation: top-1/top-5, loss, per-class accuracy and the confusion matrix, across processes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import World, all_reduce_sum


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    *,
    num_classes: int,
    world: World | None = None,
    amp: str = "none",
    channels_last: bool = False,
) -> dict:
    """Run ``model`` over ``loader`` (batches from :func:`inceptionv4.data.collate`); metrics as a dict."""
    world = world or World()
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    loss_sum = top5_sum = 0.0
    skipped: list[str] = []
    for batch in loader:
        skipped += batch["skipped"]
        if batch["images"] is None:
            continue
        x = batch["images"].to(world.device, non_blocking=True)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        y = batch["labels"].to(world.device)
        with torch.autocast(world.device.type, dtype=_amp_dtype(amp), enabled=amp != "none"):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, num_classes)
        top5_sum += (logits.topk(k, 1).indices == y[:, None]).any(1).sum().item()
        pred = logits.argmax(1)
        confusion.index_put_((y.cpu(), pred.cpu()), torch.ones(len(y), dtype=torch.float64), accumulate=True)
    model.train(was_training)
    flat = all_reduce_sum([loss_sum, top5_sum, *confusion.flatten().tolist()], world)
    loss_sum, top5_sum = flat[0], flat[1]
    confusion = torch.tensor(flat[2:], dtype=torch.float64).view(num_classes, num_classes)
    n = confusion.sum().item()
    per_class = (confusion.diag() / confusion.sum(1).clamp(min=1)).tolist()
    return {
        "top1": 100.0 * confusion.diag().sum().item() / max(n, 1),
        "top5": 100.0 * top5_sum / max(n, 1),
        "loss": loss_sum / max(n, 1),
        "n": int(n),
        "per_class_top1": [100.0 * a for a in per_class],
        "confusion": confusion.long().tolist(),
        "skipped": skipped,
    }


def _amp_dtype(amp: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp, torch.float32)
