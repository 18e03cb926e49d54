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

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from ..data import Preprocessing
from ..data.transforms import _INTERP
from .distributed import World, gather_objects

CROPS = (1, 10, 12, 144)
GOOGLENET_SIDES = (256, 288, 320, 352)  # for 224-pixel crops


def scales_for(pre: Preprocessing, crops: int) -> list[int]:
    """The shorter-side lengths a protocol resizes to."""
    if crops == 144:
        return [round(pre.input_size * s / 224) for s in GOOGLENET_SIDES]
    return [pre.resize_size]


def _five_boxes(height: int, width: int, s: int) -> list[tuple[int, int]]:
    """(top, left) of torchvision's five crops of an s x s window: 4 corners, then the centre."""
    centre = (round((height - s) / 2), round((width - s) / 2))  # Python rounds half to even, as torchvision does
    return [(0, 0), (0, width - s), (height - s, 0), (height - s, width - s), centre]


@dataclass
class ProtocolPieces:
    """One image's protocol views before they are cut: the resampled pictures (one per scale, and
    each square resized whole) and where each view lies in them.

    A loader worker makes these; :func:`cut_views` cuts the crops and mirrors wherever the model
    runs. For 144 crops of a 500x375 photo that is 16 pictures (about 6 MB) instead of 144 views
    (39 MB), and the worker's share drops to decoding and resampling.
    """

    pictures: list[torch.Tensor]  # uint8 (3, H, W) each
    plan: torch.Tensor  # (V, 4) int64: picture, top, left, mirrored -- one row per view, in protocol order
    size: int  # S: the views are S x S

    def pin_memory(self) -> ProtocolPieces:  # a DataLoader with pin_memory=True calls this
        return ProtocolPieces([p.pin_memory() for p in self.pictures], self.plan, self.size)


def protocol_pieces(img: Image.Image | torch.Tensor, pre: Preprocessing, crops: int = 1) -> ProtocolPieces:
    """The pictures and cutting plan of one image for a ``crops`` protocol (see :class:`ProtocolPieces`).

    ``img`` is a PIL image (resampled by PIL: the reference pixels), or a (3, H, W) uint8 tensor on
    any device, resampled there by torchvision's tensor resize (antialiased ``interpolate``, rounded
    back to uint8 after each resize as PIL's are) -- how ``--decode device`` makes the views.
    """
    if crops not in CROPS:
        raise ValueError(f"crops must be one of {CROPS}, got {crops}")
    s, interp = pre.input_size, _INTERP[pre.interpolation]
    pictures: list[Image.Image | torch.Tensor] = []
    plan: list[tuple[int, int, int, int]] = []
    for side in scales_for(pre, crops):
        resized = TF.resize(img, side, interpolation=interp, antialias=True)
        h, w = TF.get_size(resized)
        if crops == 1:  # one view: the crop itself travels
            pictures.append(TF.center_crop(resized, [s, s]))
            plan.append((0, 0, 0, 0))
            continue
        pictures.append(resized)
        scale = len(pictures) - 1
        if crops == 10:
            five = _five_boxes(h, w, s)
            plan += [(scale, t, l, 0) for t, l in five] + [(scale, t, l, 1) for t, l in five]
            continue
        q = min(w, h)
        offsets = [0, (max(w, h) - q) // 2, max(w, h) - q] if crops == 144 else [(max(w, h) - q) // 2]
        for o in offsets:
            top, left = (0, o) if w >= h else (o, 0)
            square = TF.crop(resized, top, left, q, q)
            pictures.append(TF.resize(square, [s, s], interpolation=interp, antialias=True))
            for t, l in _five_boxes(q, q, s):
                plan += [(scale, top + t, left + l, 0), (scale, top + t, left + l, 1)]
            plan += [(len(pictures) - 1, 0, 0, 0), (len(pictures) - 1, 0, 0, 1)]
    tensors = [p if isinstance(p, torch.Tensor) else TF.pil_to_tensor(p) for p in pictures]
    return ProtocolPieces(tensors, torch.tensor(plan, dtype=torch.long), s)


def cut_views(pieces: ProtocolPieces, device: torch.device | str | None = None) -> torch.Tensor:
    """(V, 3, S, S) uint8 views cut from ``pieces`` on ``device`` (default: where the pictures are):
    the pictures travel once, and the crops and mirrors are copies made there."""
    s = pieces.size
    pictures = [p.to(device, non_blocking=True) if device is not None else p for p in pieces.pictures]
    out = torch.empty(len(pieces.plan), 3, s, s, dtype=torch.uint8, device=pictures[0].device)
    for k, (p, t, l, mirrored) in enumerate(pieces.plan.tolist()):
        view = pictures[p][:, t : t + s, l : l + s]
        out[k] = view.flip(-1) if mirrored else view
    return out


def protocol_pixels(img: Image.Image | torch.Tensor, pre: Preprocessing, crops: int = 1) -> torch.Tensor:
    """(V, 3, S, S) uint8 views of one image for a ``crops`` protocol (V = crops), not yet normalised
    (a quarter of the bytes of float views); :func:`normalize_views` normalises them where the model runs."""
    return cut_views(protocol_pieces(img, pre, crops))


def normalize_views(pixels: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """uint8 views -> float32, normalised with ``pre``'s mean and std, on the views' device.

    The operations, in their order, of torchvision's ``ToDtype(scale=True)`` + ``Normalize``: a view
    normalised on a GPU here equals the one the CPU transforms make.
    """
    mean = torch.tensor(pre.mean, device=pixels.device).view(-1, 1, 1)
    std = torch.tensor(pre.std, device=pixels.device).view(-1, 1, 1)
    return pixels.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)


def crop_views(img: Image.Image, pre: Preprocessing, crops: int = 1) -> torch.Tensor:
    """(V, 3, S, S) normalised float32 views of one image for a ``crops`` protocol (V = crops)."""
    return normalize_views(protocol_pixels(img, pre, crops), pre)


AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def device_of(model: torch.nn.Module) -> torch.device:
    """Where a model's parameters (or, failing those, buffers) are."""
    first = next(model.parameters(), None)
    if first is None:
        first = next(model.buffers(), None)
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def predict_proba(
    models: list[torch.nn.Module],
    views: torch.Tensor,
    crops_per_image: int,
    chunk: int = 64,
    *,
    pre: Preprocessing | None = None,
    amp: str = "none",
    channels_last: bool = False,
) -> torch.Tensor:
    """(N*V, 3, S, S) views -> (N, classes) probabilities on the CPU, averaged over crops and models.

    Each model runs where its parameters are, ``chunk`` views per pass. uint8 views (from
    :func:`protocol_pixels`) travel as bytes and are normalised there with ``pre``; float views are
    taken as normalised. ``amp`` ("bf16" or "fp16") runs the passes under autocast; the softmax is
    taken in float32 either way.
    """
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {tuple(AMP_DTYPES)}, got {amp!r}")
    if views.dtype == torch.uint8 and pre is None:
        raise ValueError("uint8 views need the Preprocessing (pre=...) that normalises them")
    total = None
    for model in models:
        device = device_of(model)
        parts = []
        for i in range(0, len(views), chunk):
            x = views[i : i + chunk].to(device, non_blocking=True)
            if x.dtype == torch.uint8:
                x = normalize_views(x, pre)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=AMP_DTYPES[amp], enabled=amp != "none"):
                logits = model(x)
            parts.append(F.softmax(logits.float(), 1))
        probs = torch.cat(parts).cpu()  # one copy back (and one wait) per model, not one per pass
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
    """Model output index of each dataset class: by name (ImageNet folders by WordNet id), else by
    position: classes named 0, 1, ... (a list file's integer labels) are output indices, and
    unnamed classes as many as the outputs are in the outputs' order."""
    keys = class_keys(model)
    index = {k: i for i, k in enumerate(keys)}
    if all(c in index for c in dataset_classes):
        return [index[c] for c in dataset_classes]
    numbered = dataset_classes == [str(i) for i in range(len(dataset_classes))]
    if len(dataset_classes) == len(keys) or (numbered and len(dataset_classes) <= len(keys)):
        return list(range(len(dataset_classes)))  # folder order, or integer labels, is the class order
    missing = [c for c in dataset_classes if c not in index][:5]
    raise ValueError(
        f"the dataset's {len(dataset_classes)} classes do not match the model's {len(keys)} outputs "
        f"(e.g. {missing} are not among them)"
    )


def inference_forms(
    models: list[torch.nn.Module], *, optimize: bool = False, fuse: bool = False, input_size: int = 299
) -> list[torch.nn.Module]:
    """The models in eval mode, or their optimize_for_inference / fuse_for_inference forms (the
    caller's models are left as they are). Fusing traces at ``input_size``."""
    if optimize and fuse:
        raise ValueError("optimize and fuse choose between two inference forms: pass one of them")
    for m in models:
        m.eval()
    if optimize:
        from ..models import optimize_for_inference

        return [optimize_for_inference(m) for m in models]
    if fuse:
        from ..models import fuse_for_inference

        return [fuse_for_inference(m, torch.zeros(1, 3, input_size, input_size)) for m in models]
    return list(models)


class ProtocolViews(torch.utils.data.Dataset):
    """A dataset's images as one protocol's :class:`ProtocolPieces`, made where a DataLoader's
    workers run: ``(pieces, label, index, name)``, or ``(None, index, reason)`` for an unreadable
    file (batched by :func:`collate_items`)."""

    def __init__(self, dataset, pre: Preprocessing, crops: int) -> None:
        if crops not in CROPS:
            raise ValueError(f"crops must be one of {CROPS}, got {crops}")
        self.dataset, self.pre, self.crops = dataset, pre, crops

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        from ..data.decode import DecodeError

        try:
            img, label = self.dataset.load(index)
        except DecodeError as err:
            return None, index, str(err)
        return protocol_pieces(img, self.pre, self.crops), label, index, self.dataset.name_of(index)


def collate_items(batch: list) -> dict[str, list]:
    """:class:`ProtocolViews` or :class:`EncodedFiles` items -> lists (the items differ in size):
    ``data`` (pieces or payloads), ``labels``, ``indices``, ``names``, and the skipped files'
    ``skipped`` reasons and ``skipped_indices``."""
    good = [b for b in batch if b[0] is not None]
    bad = [b for b in batch if b[0] is None]
    return {
        "data": [b[0] for b in good],
        "labels": [b[1] for b in good],
        "indices": [b[2] for b in good],
        "names": [b[3] for b in good],
        "skipped": [b[2] for b in bad],
        "skipped_indices": [b[1] for b in bad],
    }


class EncodedFiles(torch.utils.data.Dataset):
    """What ``--decode device`` leaves to a loader worker: read the file and check its JPEG header
    (:func:`~inceptionv4.data.device_augment.read_encoded`). Items are ``(payload, label, index,
    name)``, or ``(None, index, reason)`` for a file that cannot be read (batched by
    :func:`collate_items`)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        from ..data.decode import DecodeError
        from ..data.device_augment import read_encoded

        try:
            payload, _ = read_encoded(self.dataset, index)
        except DecodeError as err:
            return None, index, str(err)
        return payload, self.dataset.samples[index][1], index, self.dataset.name_of(index)


#: Where JPEGs are decoded and resampled: "workers" (PIL, the reference pixels: loader processes, or
#: the server's connection threads) or "device" (torchvision on the models' device, nvJPEG on a GPU).
DECODES = ("workers", "device")


def check_decode(decode: str) -> str:
    """``decode`` if it is one of :data:`DECODES`, else a ValueError that lists them."""
    if decode not in DECODES:
        raise ValueError(f"decode must be 'workers' or 'device', got {decode!r}")
    return decode


class DeviceViews:
    """The device's share of ``--decode device`` evaluation, on a :func:`collate_items` batch of
    :class:`EncodedFiles` items:
    decode the JPEGs at once (nvJPEG on CUDA), resample and cut each image's protocol views there
    (:func:`protocol_pieces` on tensors), normalise.

    Returns ``{"images": (N*V, 3, S, S) float32 on device, or None, "labels": (N,) int64,
    "indices", "skipped", "skipped_indices"}`` -- the batch form
    :func:`~inceptionv4.engine.evaluate` reads; a file the device cannot decode after all joins the
    skipped ones. The
    views differ from PIL's by at most a couple of 8-bit levels (torchvision's tensor resize; the
    tests bound it), so the published protocols stay on ``--decode workers``, the default.
    """

    def __init__(self, pre: Preprocessing, crops: int, device: torch.device | str) -> None:
        if crops not in CROPS:
            raise ValueError(f"crops must be one of {CROPS}, got {crops}")
        self.pre, self.crops, self.device = pre, crops, torch.device(device)

    def __call__(self, batch: dict) -> dict:
        views, failed = self.views_of(batch["data"], batch["names"])
        keep = [i for i in range(len(batch["data"])) if i not in failed]
        return {
            "images": views,
            "labels": torch.tensor([batch["labels"][i] for i in keep], dtype=torch.long),
            "indices": [batch["indices"][i] for i in keep],
            "skipped": batch["skipped"] + list(failed.values()),
            "skipped_indices": batch["skipped_indices"] + [batch["indices"][i] for i in failed],
        }

    def views_of(self, payloads: list[torch.Tensor], names: list[str]) -> tuple[torch.Tensor | None, dict[int, str]]:
        """The normalised views of the payloads the device decodes, one image after the other (None
        if none), and for each position it cannot decode after all, why (named by ``names``)."""
        from ..data.device_augment import decode_payloads

        decoded = decode_payloads(payloads, names, self.device)
        failed = {i: img for i, img in enumerate(decoded) if isinstance(img, str)}
        views = [
            cut_views(protocol_pieces(img, self.pre, self.crops)) for img in decoded if isinstance(img, torch.Tensor)
        ]
        return (normalize_views(torch.cat(views), self.pre) if views else None), failed


def cut_batch(pieces: list[ProtocolPieces], device: torch.device) -> torch.Tensor | None:
    """The views of several images' pieces, cut on ``device``, one image after the other."""
    return torch.cat([cut_views(p, device) for p in pieces]) if pieces else None


def evaluate_protocol(
    models: list[torch.nn.Module],
    dataset,
    *,
    crops: int = 1,
    batch_size: int | None = None,
    pre: Preprocessing | None = None,
    progress: bool = False,
    workers: int = 0,
    amp: str = "none",
    channels_last: bool = False,
    chunk: int | None = None,
    decode: str = "workers",
    world: World | None = None,
) -> dict:
    """Top-1/top-5, per-class accuracy and confusion of ``models`` (an ensemble if several) on a
    dataset of :mod:`inceptionv4.data`, with the ``crops`` protocol. ``images`` lists each image's
    file, label, predicted class and its probability, for error analysis. Unreadable files are
    skipped and listed.

    The models run where they are (move them to a GPU first to evaluate there), ``chunk`` views
    per pass (default 64 on a CPU, 256 on a GPU); ``batch_size`` images are gathered at a time
    (default: the fewest whose views fill whole passes -- 256 images at 1 crop, 16 at 144 on a
    GPU; a GPU given passes of 16 images, the old default, would stay mostly idle). ``workers`` loader processes decode and resample
    the images in parallel (0: in this process); the pictures travel as uint8, and the crops,
    mirrors and normalisation are made on the models' device (:class:`ProtocolPieces`). The
    result does not depend on ``workers``, ``chunk`` or ``batch_size`` (images gathered per batch).

    ``decode="device"`` leaves the workers only reading files: the JPEGs are decoded on the
    models' device (nvJPEG on a GPU) and resampled there (:class:`DeviceViews`) -- for a GPU that
    evaluates faster than the workers decode. Its pixels differ from PIL's by a level or two.

    Under torchrun, pass ``world`` (:func:`~inceptionv4.engine.distributed.init_distributed`):
    each process evaluates every ``world.size``-th image on its own device, and every process
    returns the whole dataset's report, identical to a single process's.
    """
    if not models:
        raise ValueError("need at least one model")
    if (batch_size is not None and batch_size < 1) or workers < 0 or (chunk is not None and chunk < 1):
        raise ValueError(f"batch_size and chunk must be >= 1 and workers >= 0, got {batch_size}, {chunk}, {workers}")
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {tuple(AMP_DTYPES)}, got {amp!r}")
    check_decode(decode)
    if crops not in CROPS:
        raise ValueError(f"crops must be one of {CROPS}, got {crops}")
    pre = pre or Preprocessing.of(models[0])
    mapping = label_map(dataset.classes, models[0])
    for m in models[1:]:
        if label_map(dataset.classes, m) != mapping:
            raise ValueError("the models of an ensemble must share their classes")
    for m in models:
        m.eval()
    world = world or World()
    devices = sorted({device_of(m) for m in models}, key=str)  # the views are cut on the first
    on_gpu = any(d.type == "cuda" for d in devices)
    chunk = chunk or (256 if on_gpu else 64)
    batch_size = batch_size or chunk // math.gcd(chunk, crops)  # views that fill whole passes
    shard = range(world.rank, len(dataset), world.size)  # this process's images
    loading = {"batch_size": batch_size, "num_workers": workers, "sampler": shard, "pin_memory": on_gpu}
    if decode == "device":
        loader = torch.utils.data.DataLoader(EncodedFiles(dataset), collate_fn=collate_items, **loading)
        batches = map(DeviceViews(pre, crops, devices[0]), loader)
    else:
        loader = torch.utils.data.DataLoader(ProtocolViews(dataset, pre, crops), collate_fn=collate_items, **loading)
        batches = (dict(b, images=cut_batch(b["data"], devices[0])) for b in loader)
    back = {model_idx: ds_idx for ds_idx, model_idx in enumerate(mapping)}
    keys = class_keys(models[0])
    n_cls = len(dataset.classes)
    images: list[tuple[int, dict]] = []  # (dataset index, entry): the processes' shares are merged in order
    confusion = torch.zeros(n_cls, n_cls + 1, dtype=torch.long)  # last column: a class outside the dataset
    top5 = 0
    skipped: list[tuple[int, str]] = []
    bar = None
    if progress and world.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(shard), desc=f"eval ({crops} crop{'s' if crops > 1 else ''})", unit="img")
    for batch in batches:
        skipped += zip(batch["skipped_indices"], batch["skipped"], strict=True)
        if batch["images"] is not None:  # (B*V, 3, S, S): uint8 pixels, or normalised floats
            probs = predict_proba(models, batch["images"], crops, chunk, pre=pre, amp=amp, channels_last=channels_last)
            dataset_labels = [int(y) for y in batch["labels"]]
            labels = torch.tensor([mapping[y] for y in dataset_labels])
            k = min(5, probs.shape[1])
            top5 += (probs.topk(k, 1).indices == labels[:, None]).any(1).sum().item()
            best, predicted = probs.max(1)
            for i, y, p, prob in zip(batch["indices"], dataset_labels, predicted.tolist(), best.tolist(),
                                     strict=True):  # fmt: skip
                confusion[y, back.get(p, n_cls)] += 1
                entry = {"file": dataset.name_of(i), "label": dataset.classes[y], "predicted": keys[p], "prob": prob}
                images.append((i, entry))
        if bar is not None:
            bar.update(len(batch["skipped"]) + len(batch["labels"]))
    if bar is not None:
        bar.close()
    if world.distributed:  # every process gets every share: the same report everywhere
        shares = gather_objects((confusion, top5, images, skipped), world)
        confusion = sum((c for c, _, _, _ in shares), torch.zeros_like(confusion))
        top5 = sum(t for _, t, _, _ in shares)
        images = sorted((x for _, _, i, _ in shares for x in i), key=lambda x: x[0])
        skipped = sorted((x for _, _, _, k in shares for x in k), key=lambda x: x[0])
    skipped = [reason for _, reason in skipped]
    n = int(confusion.sum())
    if n == 0:  # a 0% top-1 over nothing would read as a result
        shown = "; ".join(skipped[:3]) + (f"; ... {len(skipped) - 3} more" if len(skipped) > 3 else "")
        raise ValueError(f"no image of the {len(dataset)} in the dataset could be read: {shown or 'none found'}")
    per_class = confusion.diag().double() / confusion.sum(1).clamp(min=1)
    return {
        "crops": crops,
        "scales": scales_for(pre, crops),
        "models": len(models),
        "device": ", ".join(map(str, devices)),
        "processes": world.size,
        "amp": amp,
        "decode": decode,
        "n": n,
        "top1": 100.0 * confusion.diag().sum().item() / max(n, 1),
        "top5": 100.0 * top5 / max(n, 1),
        "per_class_top1": {c: 100.0 * a for c, a in zip(dataset.classes, per_class.tolist(), strict=True)},
        "confusion": confusion.tolist(),
        "classes": list(dataset.classes),
        "images": [entry for _, entry in images],
        "skipped": skipped,
    }
