"""The paper's evaluation protocols (1, 10, 12, 144 crops), ensembles, and label mapping.

- 1: resize the shorter side to ``size / crop_pct``, centre crop.
- 10: at that scale, the 4 corners and the centre, and their mirrors.
- 144 (GoogLeNet's protocol, Sec. "Results"): 4 scales of the shorter side x 3 squares
  (left/centre/right or top/centre/bottom) x 6 crops (4 corners, centre, the whole square
  resized) x 2 mirrors. GoogLeNet's shorter sides 256/288/320/352 for 224-pixel crops are scaled
  to the crop size: 342/384/427/470 at 299.
- 12: the 144-crop protocol at one scale (``size / crop_pct``) and the centre square only:
  6 crops x 2 mirrors. (The paper does not define its 12 crops; this is our reading.)

Softmax probabilities are averaged over crops, then over the models of an ensemble.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..data import Preprocessing
from ..data.transforms import _INTERP

CROPS = (1, 10, 12, 144)
GOOGLENET_SIDES = (256, 288, 320, 352)  # for 224-pixel crops


def scales_for(pre: Preprocessing, crops: int) -> list[int]:
    """The shorter-side lengths a protocol resizes to."""
    if crops == 144:
        return [round(pre.input_size * s / 224) for s in GOOGLENET_SIDES]
    return [pre.resize_size]


def crop_views(img: Image.Image, pre: Preprocessing, crops: int = 1) -> torch.Tensor:
    """(V, 3, S, S) normalised views of one image for a ``crops`` protocol (V = crops)."""
    if crops not in CROPS:
        raise ValueError(f"crops must be one of {CROPS}, got {crops}")
    s, interp = pre.input_size, _INTERP[pre.interpolation]
    finish = v2.Compose(
        [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(pre.mean), list(pre.std))]
    )
    views: list[Image.Image] = []
    for side in scales_for(pre, crops):
        resized = TF.resize(img, side, interpolation=interp, antialias=True)
        if crops == 1:
            views.append(TF.center_crop(resized, [s, s]))
            continue
        if crops == 10:
            five = list(TF.five_crop(resized, [s, s]))
            views += five + [TF.hflip(v) for v in five]
            continue
        w, h = resized.size
        q = min(w, h)
        offsets = [0, (max(w, h) - q) // 2, max(w, h) - q] if crops == 144 else [(max(w, h) - q) // 2]
        for o in offsets:
            square = resized.crop((o, 0, o + q, q) if w >= h else (0, o, q, o + q))
            six = [*TF.five_crop(square, [s, s]), TF.resize(square, [s, s], interpolation=interp, antialias=True)]
            for v in six:
                views += [v, TF.hflip(v)]
    return torch.stack([finish(v) for v in views])


@torch.no_grad()
def predict_proba(
    models: list[torch.nn.Module], views: torch.Tensor, crops_per_image: int, chunk: int = 64
) -> torch.Tensor:
    """(N*V, 3, S, S) views -> (N, classes) probabilities, averaged over crops and models."""
    total = None
    for model in models:
        device = next(model.parameters()).device
        probs = torch.cat(
            [F.softmax(model(views[i : i + chunk].to(device)).float(), 1).cpu() for i in range(0, len(views), chunk)]
        )
        probs = probs.view(-1, crops_per_image, probs.shape[-1]).mean(1)
        total = probs if total is None else total + probs
    return total / len(models)


def class_keys(model: torch.nn.Module) -> list[str]:
    """How a model names its outputs: WordNet ids for ImageNet, else its class names, else indices."""
    if getattr(model, "label_set", None) == "imagenet-1k":
        from ..weights import imagenet1k

        return [c.wnid for c in imagenet1k()]
    names = getattr(model, "class_names", None)
    return list(names) if names else [str(i) for i in range(model.num_classes)]


def display_names(model: torch.nn.Module) -> list[str]:
    if getattr(model, "label_set", None) == "imagenet-1k":
        from ..weights import class_names

        return class_names("imagenet-1k")
    return class_keys(model)


def label_map(dataset_classes: list[str], model: torch.nn.Module) -> list[int]:
    """Model output index of each dataset class: by name (ImageNet folders by WordNet id)."""
    keys = class_keys(model)
    index = {k: i for i, k in enumerate(keys)}
    if all(c in index for c in dataset_classes):
        return [index[c] for c in dataset_classes]
    if len(dataset_classes) == len(keys):
        return list(range(len(keys)))  # unnamed classes: folder order is the class order
    missing = [c for c in dataset_classes if c not in index][:5]
    raise ValueError(
        f"the dataset's {len(dataset_classes)} classes do not match the model's {len(keys)} outputs "
        f"(e.g. {missing} are not among them)"
    )


def evaluate_protocol(
    models: list[torch.nn.Module],
    dataset,
    *,
    crops: int = 1,
    batch_size: int = 16,
    pre: Preprocessing | None = None,
    progress: bool = False,
) -> dict:
    """Top-1/top-5, per-class accuracy and confusion of ``models`` (an ensemble if several) on a
    dataset of :mod:`inceptionv4.data`, with the ``crops`` protocol. Unreadable files are skipped
    and listed."""
    from ..data.decode import DecodeError

    if not models:
        raise ValueError("need at least one model")
    pre = pre or Preprocessing.of(models[0])
    mapping = label_map(dataset.classes, models[0])
    for m in models[1:]:
        if label_map(dataset.classes, m) != mapping:
            raise ValueError("the models of an ensemble must share their classes")
    for m in models:
        m.eval()
    back = {model_idx: ds_idx for ds_idx, model_idx in enumerate(mapping)}
    n_cls = len(dataset.classes)
    confusion = torch.zeros(n_cls, n_cls + 1, dtype=torch.long)  # last column: a class outside the dataset
    top5 = 0
    skipped: list[str] = []
    order = range(len(dataset))
    if progress:
        from tqdm.auto import tqdm

        order = tqdm(order, desc=f"eval ({crops} crop{'s' if crops > 1 else ''})", unit="img")
    pending: list[tuple[torch.Tensor, int]] = []

    def flush() -> None:
        nonlocal top5
        if not pending:
            return
        probs = predict_proba(models, torch.cat([v for v, _ in pending]), crops)
        labels = torch.tensor([mapping[y] for _, y in pending])
        k = min(5, probs.shape[1])
        top5 += (probs.topk(k, 1).indices == labels[:, None]).any(1).sum().item()
        for (_, y), p in zip(pending, probs.argmax(1).tolist(), strict=True):
            confusion[y, back.get(p, n_cls)] += 1
        pending.clear()

    for i in order:
        try:
            img, y = dataset.load(i)
        except DecodeError as err:
            skipped.append(str(err))
            continue
        pending.append((crop_views(img, pre, crops), y))
        if len(pending) == batch_size:
            flush()
    flush()
    n = int(confusion.sum())
    if n == 0:  # a 0% top-1 over nothing would read as a result
        shown = "; ".join(skipped[:3]) + (f"; ... {len(skipped) - 3} more" if len(skipped) > 3 else "")
        raise ValueError(f"no image of the {len(dataset)} in the dataset could be read: {shown or 'none found'}")
    per_class = confusion.diag().double() / confusion.sum(1).clamp(min=1)
    return {
        "crops": crops,
        "scales": scales_for(pre, crops),
        "models": len(models),
        "n": n,
        "top1": 100.0 * confusion.diag().sum().item() / max(n, 1),
        "top5": 100.0 * top5 / max(n, 1),
        "per_class_top1": {c: 100.0 * a for c, a in zip(dataset.classes, per_class.tolist(), strict=True)},
        "confusion": confusion.tolist(),
        "classes": list(dataset.classes),
        "skipped": skipped,
    }
