"""The training input pipeline: how many images a second each part of it gives, side by side.

    python benchmarks/input_pipeline.py                      # CPU: both pipelines' shares
    python benchmarks/input_pipeline.py --device cuda        # the device share on the GPU (nvJPEG)

JPEGs like ImageNet's training images (about 500x375 pixels, 110 KB, quality 90) are written to a temporary folder
of class folders and read back as the trainer reads them. Rows:

- ``workers: PIL decode + augmentation`` -- the default ``train --decode workers`` pipeline, one
  worker process's rate (one core, one thread);
- ``device path: worker share`` -- what ``--decode device`` leaves to a worker (read the file,
  check its header, draw the crop), one core;
- ``device path: device share`` -- the batched decode and augmentation (:class:`DeviceAugment`)
  at ``--batch`` images, on ``--device``; on a GPU also how far its pixels are from the same
  crops decoded on the CPU (nvJPEG's and libjpeg-turbo's inverse DCTs round differently).

The last column is how many worker cores it takes to feed ``--feed`` img/s (the training step
this pipeline feeds; issue 7's H100 target is 2,400 img/s for Inception-v4).

A second table does the same for evaluation (``inceptionv4 eval --crops 1|12|144``): a worker's
share -- decode and resample, :func:`protocol_pieces` -- against cutting every view in the worker
as well (:func:`protocol_pixels`, the earlier path), and the device's share (cut the crops and
mirrors, normalise), and with ``eval --decode device`` (the device decodes the JPEGs and resamples
too, :class:`DeviceViews`; the worker then only reads the file, as the training row above).
``worker cores`` is how many it takes to feed ``--feed-views`` views/s (issue 7's H100 inference
target is 12,000 img/s).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from inceptionv4.data import (
    Augmented,
    DeviceAugment,
    EncodedImages,
    ImageFolder,
    Preprocessing,
    collate_encoded,
    train_transform,
)
from inceptionv4.data.decode import decode_rgb
from inceptionv4.data.views import (
    DeviceViews,
    collate_items,
    cut_views,
    normalize_views,
    protocol_pieces,
    protocol_pixels,
)


def jpegs(n: int, rng: np.random.Generator) -> list[bytes]:
    """JPEGs like ImageNet's training images: about 500x375 pixels and 110 KB (colour fields with grain)."""
    out = []
    for _ in range(n):
        w, h = int(rng.integers(400, 600)), int(rng.integers(300, 450))
        base = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC), dtype=np.int16)
        img = np.clip(img + rng.integers(-28, 29, img.shape), 0, 255).astype(np.uint8)  # detail: ImageNet's ~110 KB
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def write_folder(data: list[bytes], root: Path) -> ImageFolder:
    for i, b in enumerate(data):
        d = root / f"class_{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:05d}.jpg").write_bytes(b)
    return ImageFolder(root)


def _rate(fn, n: int, repeats: int = 3) -> float:
    """Images a second, the best of ``repeats`` passes over ``n`` images (after one warm-up)."""
    fn()
    best = min(_timed(fn) for _ in range(repeats))
    return n / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(ds: ImageFolder, size: int, batch: int, device: torch.device, sync=lambda: None) -> dict[str, float]:
    """img/s of the three shares (the worker rows on one CPU thread, as a loader worker runs), and
    how far the device's pixels are from the same crops decoded on the CPU, in 8-bit levels."""
    pre = Preprocessing(input_size=size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        full = Augmented(ds, train_transform(pre), seed=0)
        share = EncodedImages(ds, seed=0)
        n = min(len(ds), 4 * batch)
        out = {
            "workers_full_img_s_per_core": _rate(lambda: [full[i] for i in range(n)], n),
            "device_path_worker_img_s_per_core": _rate(lambda: [share[i] for i in range(n)], n),
        }
    finally:
        torch.set_num_threads(threads)
    batches = [collate_encoded([share[i] for i in range(k, k + batch)]) for k in range(0, len(ds) - batch + 1, batch)]
    augment = DeviceAugment(pre, device, channels_last=True)

    def run():
        for b in batches:
            augment(dict(b))
        sync()

    out["device_path_device_img_s"] = _rate(run, batch * len(batches), repeats=2)
    # the same batch decoded by libjpeg-turbo on the CPU: how far nvJPEG's pixels are (0 on a CPU)
    on_device = augment(dict(batches[0]))["images"].float().cpu()
    on_cpu = DeviceAugment(pre, "cpu", channels_last=True)(dict(batches[0]))["images"]
    diff = (on_device - on_cpu).abs() * 127.5  # in 8-bit levels (pixels are scaled to [-1, 1])
    out["device_vs_cpu_decode_max_levels"] = diff.max().item()
    out["device_vs_cpu_decode_mean_levels"] = diff.mean().item()
    return out


def measure_eval(ds: ImageFolder, size: int, device: torch.device, sync=lambda: None,
                 protocols: tuple[int, ...] = (1, 12, 144)) -> dict[str, float]:  # fmt: skip
    """Images a second of evaluation's worker share (one thread, as a loader worker runs) per
    protocol, both ways, and views a second of the device's share (cut + normalise)."""
    pre = Preprocessing(input_size=size)
    files = [p.read_bytes() for p, _ in ds.samples]
    out: dict[str, float] = {}
    for crops in protocols:
        out.update(_eval_rates(files[: 8 if crops == 144 else 32], pre, crops, device, sync))
    return out


def _eval_rates(files: list[bytes], pre: Preprocessing, crops: int, device: torch.device, sync) -> dict[str, float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ways = {"pieces": protocol_pieces, "all_views": protocol_pixels}
    best = dict.fromkeys(ways, float("inf"))
    try:
        for _ in range(6):  # the two ways interleaved: the shared machine's drift hits both alike
            for way, fn in ways.items():
                best[way] = min(best[way], _timed(lambda fn=fn: [fn(decode_rgb(f), pre, crops) for f in files]))
    finally:
        torch.set_num_threads(threads)
    pieces_rate, all_views_rate = len(files) / best["pieces"], len(files) / best["all_views"]
    pieces = [protocol_pieces(decode_rgb(f), pre, crops) for f in files]

    def device_share():
        for piece in pieces:
            normalize_views(cut_views(piece, device), pre)
        sync()

    # eval --decode device: the device decodes the batch's JPEGs and resamples them as well
    batch = collate_items([(torch.frombuffer(bytearray(f), dtype=torch.uint8), 0, i, f"{i}.jpg")
                           for i, f in enumerate(files)])  # fmt: skip
    decode_views = DeviceViews(pre, crops, device)

    def device_decode_share():
        decode_views(batch)
        sync()

    return {
        f"eval{crops}_pieces_img_s_per_core": pieces_rate,
        f"eval{crops}_all_views_img_s_per_core": all_views_rate,
        f"eval{crops}_device_views_s": _rate(device_share, len(files) * crops, repeats=2),
        f"eval{crops}_device_decode_views_s": _rate(device_decode_share, len(files) * crops, repeats=2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=299)
    ap.add_argument("--feed", type=float, default=2400.0, help="img/s of the training step to feed")
    ap.add_argument("--feed-views", type=float, default=12000.0, help="views/s of the inference pass to feed")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        ds = write_folder(jpegs(args.images, np.random.default_rng(0)), Path(tmp))
        mean_kb = sum(p.stat().st_size for p, _ in ds.samples) / len(ds) / 1024
        figures = measure(ds, args.size, args.batch, dev, sync)
        figures.update(measure_eval(ds, args.size, dev, sync))
    meta = {"device": str(dev), "images": args.images, "mean_jpeg_kb": round(mean_kb, 1), "size": args.size,
            "batch": args.batch, "torch_threads_device_share": torch.get_num_threads()}  # fmt: skip
    print(json.dumps(meta))
    print(f"| share | img/s | worker cores to feed {args.feed:.0f} img/s |")
    print("|---|---|---|")
    for label, key in (("workers: PIL decode + augmentation (one core)", "workers_full_img_s_per_core"),
                       ("device path: worker share (one core)", "device_path_worker_img_s_per_core")):  # fmt: skip
        print(f"| {label} | {figures[key]:.0f} | {args.feed / figures[key]:.1f} |")
    print(
        f"| device path: device share on {dev} (batch {args.batch}) | {figures['device_path_device_img_s']:.0f} | - |"
    )
    if dev.type != "cpu":
        print(f"same crops decoded on {dev} and by libjpeg-turbo: |diff| max "
              f"{figures['device_vs_cpu_decode_max_levels']:.1f}, mean "
              f"{figures['device_vs_cpu_decode_mean_levels']:.2f} levels of 255")  # fmt: skip
    print()
    print(f"| eval protocol | worker: decode + resample (img/s, one core) | worker: every view as well (img/s) | "
          f"ratio | worker cores to feed {args.feed_views:.0f} views/s | device share on {dev}: cut + normalise "
          f"(views/s) | with --decode device: decode + resample too (views/s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for crops in (1, 12, 144):
        a, b = figures[f"eval{crops}_pieces_img_s_per_core"], figures[f"eval{crops}_all_views_img_s_per_core"]
        print(f"| {crops} crop{'s' if crops > 1 else ''} | {a:.1f} | {b:.1f} | {a / b:.2f}x | "
              f"{args.feed_views / (a * crops):.1f} | {figures[f'eval{crops}_device_views_s']:.0f} | "
              f"{figures[f'eval{crops}_device_decode_views_s']:.0f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "figures": figures}, indent=2))


if __name__ == "__main__":
    main()
