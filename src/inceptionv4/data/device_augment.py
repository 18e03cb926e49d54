"""Inception training augmentation split between the loader workers and the training device.

The usual pipeline decodes and augments every image in a CPU worker: a 500x375 JPEG costs a
core several milliseconds, so a GPU training at thousands of images a second needs more cores
than a node has. Here the workers do only what is cheap -- read the file, check its header,
draw the augmentation -- and the device does the rest on the whole batch: one batched JPEG
decode (nvJPEG on CUDA), then crop, resize, flip, colour jitter and normalisation.

The randomness is drawn from (seed, epoch, index) as in :class:`~inceptionv4.data.Augmented`, so
a resumed or multi-process run sees the same crops. Files the device decoder cannot take as they
are -- other formats, CMYK JPEGs, JPEGs with an EXIF rotation, truncated files -- are decoded
in the worker by the robust CPU decoder and travel as pixels; a file neither can read is
skipped with a warning naming it, as in the CPU pipeline.

What differs from :func:`~inceptionv4.data.train_transform`: the resize works on the decoded
tensor (``F.interpolate`` with antialiasing, as torchvision does for tensors) instead of PIL's
resampler, so pixels differ by a few levels; colour jitter applies brightness, contrast and
saturation in that fixed order (torchvision draws the order per image).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Item, Skipped, split_items
from .datasets import ImageDataset, seed_of
from .decode import DecodeError
from .device_decode import decode_payloads, read_encoded
from .transforms import Preprocessing

log = logging.getLogger(__name__)

_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class AugmentParams:
    """One image's augmentation, drawn in the worker and applied on the device."""

    box: tuple[int, int, int, int]  # top, left, height, width in the upright decoded image
    flip: bool
    jitter: tuple[float, float, float] = (1.0, 1.0, 1.0)  # brightness, contrast, saturation factors


def sample_crop(
    height: int, width: int, gen: torch.Generator, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of an Inception random-resized crop (Szegedy et al. 2015, sec. 6).

    Area a uniform fraction in ``scale`` of the image, aspect log-uniform in ``ratio``; after ten
    misses, the largest centred crop whose aspect is inside ``ratio``.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(2, generator=gen).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            return top, left, h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, min(height, round(width / ratio[0]))
    elif aspect > ratio[1]:
        w, h = min(width, round(height * ratio[1])), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class EncodedImages(torch.utils.data.Dataset):
    """The workers' share of :class:`DeviceAugment`: read the file, check it, draw the augmentation.

    Yields an :class:`~inceptionv4.data.base.Item` (with ``params`` and ``name``) whose data is the
    file's bytes (a 1-D uint8 tensor) for a JPEG the device can decode, else the decoded (3, H, W)
    uint8 image. A file that cannot be read yields a :class:`~inceptionv4.data.base.Skipped` and one
    warning, as ``Augmented`` does.
    """

    def __init__(
        self,
        base: ImageDataset,
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        color_jitter: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.base, self.scale, self.ratio = base, scale, ratio
        self.hflip, self.color_jitter, self.seed = hflip, color_jitter, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Item | Skipped:
        name = self.base.name_of(index)
        try:
            payload, (height, width) = self._read(index)
        except DecodeError as err:
            log.warning("skipping %s", err)
            return Skipped(index, str(err))
        gen = torch.Generator().manual_seed(seed_of(self.seed, self.epoch, index))
        box = sample_crop(height, width, gen, self.scale, self.ratio)
        flip = bool(torch.rand(1, generator=gen).item() < self.hflip)
        jitter = (1.0, 1.0, 1.0)
        if self.color_jitter > 0:
            lo, hi = max(0.0, 1 - self.color_jitter), 1 + self.color_jitter
            jitter = tuple(lo + (hi - lo) * u for u in torch.rand(3, generator=gen).tolist())
        return Item(payload, self.base.samples[index][1], index, name=name, params=AugmentParams(box, flip, jitter))

    def _read(self, index: int) -> tuple[torch.Tensor, tuple[int, int]]:
        return read_encoded(self.base, index)


def collate_encoded(batch: list[Item | Skipped]) -> dict[str, object]:
    """Payloads stay a list (their sizes differ); the augmentation travels as small tensors."""
    good, bad = split_items(batch)
    skipped, skipped_indices = [b.reason for b in bad], [b.index for b in bad]
    if not good:
        return {"images": None, "labels": None, "indices": None, "skipped": skipped, "skipped_indices": skipped_indices,
                "payloads": []}  # fmt: skip
    params = [b.params for b in good]
    return {
        "images": None,  # made on the device by DeviceAugment
        "payloads": [b.data for b in good],
        "names": [b.name for b in good],
        "boxes": torch.tensor([p.box for p in params], dtype=torch.long),
        "flips": torch.tensor([p.flip for p in params], dtype=torch.bool),
        "jitter": torch.tensor([p.jitter for p in params], dtype=torch.float32),
        "labels": torch.tensor([b.label for b in good], dtype=torch.long),
        "indices": torch.tensor([b.index for b in good], dtype=torch.long),
        "skipped": skipped,
        "skipped_indices": skipped_indices,
    }


class DeviceAugment:
    """The device's share: decode the batch's JPEGs at once, then crop, resize, flip, jitter, normalise.

    Called on a batch from :func:`collate_encoded`; returns it with ``images`` (N, 3, S, S) float32
    on ``device`` and the labels beside them. On CUDA the JPEGs go through torchvision's batched
    nvJPEG decoder; on a CPU the same code decodes with libjpeg-turbo (for tests and CPU runs).
    """

    def __init__(self, pre: Preprocessing, device: torch.device | str, *, channels_last: bool = False) -> None:
        self.pre, self.device, self.channels_last = pre, torch.device(device), channels_last
        mean, std = torch.tensor(pre.mean), torch.tensor(pre.std)
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(self.device)  # x/255 normalised in one
        self._shift = (mean / std).view(1, 3, 1, 1).to(self.device)  # multiply-subtract

    def __call__(self, batch: dict) -> dict:
        if not batch.get("payloads"):
            return batch
        images = self.decode(batch["payloads"], batch["names"])
        keep = [i for i, img in enumerate(images) if isinstance(img, torch.Tensor)]
        failed = [i for i, img in enumerate(images) if isinstance(img, str)]
        out = dict(batch, payloads=[], skipped=batch["skipped"] + [images[i] for i in failed],
                   skipped_indices=batch["skipped_indices"] + [int(batch["indices"][i]) for i in failed])  # fmt: skip
        if not keep:
            return dict(out, images=None, labels=None, indices=None)
        index = torch.tensor(keep)
        x = self.augment([images[i] for i in keep], batch["boxes"][index], batch["flips"][index],
                         batch["jitter"][index])  # fmt: skip
        return dict(
            out,
            images=x,
            labels=batch["labels"][index].to(self.device, non_blocking=True),
            indices=batch["indices"][index],
        )

    def decode(self, payloads: list[torch.Tensor], names: list[str]) -> list[torch.Tensor | str]:
        """(3, H, W) uint8 images on the device; for a file that fails, why (and a warning)."""
        return decode_payloads(payloads, names, self.device)

    def augment(
        self, images: list[torch.Tensor], boxes: torch.Tensor, flips: torch.Tensor, jitter: torch.Tensor
    ) -> torch.Tensor:
        """Crop and resize each image to S x S, then flip, jitter and normalise the batch at once."""
        size = self.pre.input_size
        x = torch.empty(len(images), 3, size, size, device=self.device)  # (N, 3, S, S)
        resample = {"mode": self.pre.interpolation}
        if self.pre.interpolation != "nearest":
            resample.update(align_corners=False, antialias=True)
        for k, (img, (top, left, h, w)) in enumerate(zip(images, boxes.tolist(), strict=True)):
            crop = img[:, top : top + h, left : left + w].unsqueeze(0).float()  # (1, 3, h, w)
            x[k] = F.interpolate(crop, size=(size, size), **resample)[0]
        x.clamp_(0, 255)  # bicubic overshoots; the CPU pipeline's uint8 image is clamped too
        if flips.any():  # decided on the host copy: a boolean index on the device would sync
            flipped = flips.nonzero().squeeze(1).to(self.device)
            x[flipped] = x[flipped].flip(-1)
        if (jitter != 1).any():
            x = _color_jitter(x, jitter.to(self.device))
        x = x.mul_(self._scale).sub_(self._shift)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _color_jitter(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation with per-image factors (N, 3) on 0..255 images (N, 3, S, S)."""
    b, c, s = (factors[:, i].view(-1, 1, 1, 1) for i in range(3))
    weights = torch.tensor(_GRAY, device=x.device).view(1, 3, 1, 1)
    x = (x * b).clamp_(0, 255)
    mean = (x * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)  # (N, 1, 1, 1)
    x = (c * x + (1 - c) * mean).clamp_(0, 255)
    gray = (x * weights).sum(1, keepdim=True)  # (N, 1, S, S)
    return (s * x + (1 - s) * gray).clamp_(0, 255)


class DeviceBatches:
    """Micro-batches from a loader through :class:`DeviceAugment`, one of them prepared ahead.

    The trainer calls :meth:`prefetch` after queuing a step's forward and backward and before the
    step's one host sync, so the next batch's JPEG decode (nvJPEG's own stream and hardware
    engine on CUDA) runs while the device still computes this step, not after it. The batches and
    their order are the loader's: prefetching changes when a batch is made, never what it holds.
    """

    def __init__(self, batches: Iterable[dict], augment: Callable[[dict], dict]) -> None:
        self._batches, self._augment = iter(batches), augment
        self._ready: list[dict] = []

    def __iter__(self) -> DeviceBatches:
        return self

    def __next__(self) -> dict:
        if not self._ready and not self.prefetch():
            raise StopIteration
        return self._ready.pop(0)

    def prefetch(self) -> bool:
        """Prepare the next batch now; False when the loader has none left."""
        try:
            batch = next(self._batches)
        except StopIteration:
            return False
        self._ready.append(self._augment(batch))
        return True
