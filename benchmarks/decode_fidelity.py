"""What decoding large JPEGs reduced (the default) changes, against the full decode (--full-decode).

    python benchmarks/decode_fidelity.py [--weights runs/demo/model.safetensors] [--images 120]
                                         [--photos 12] [--json out.json]

Two measurements, each on JPEGs of 4000x3000 pixels (a phone's photo):

- **Views.** Photo-like JPEGs (smooth colour fields with grain) made into Inception-v4's 299-pixel
  1-crop and 144-crop views, from the full decode and from the reduced one: the difference in
  8-bit levels, mean and largest, and the time to decode and make the 1-crop view.
- **A trained network.** The demo's network (``make demo``: Inception-ResNet-v1 trained on the
  held-out-split digits) on ``--images`` held-out digits, each printed large on a 4000x3000 canvas
  with grain and saved as a JPEG: top-1 agreement between the two decodes and the largest change
  of any class probability, with each decode's top-1 against the true digits.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import photo  # noqa: E402

from inceptionv4.data import Digits, Preprocessing  # noqa: E402
from inceptionv4.data.decode import decode_rgb, draft_scale  # noqa: E402
from inceptionv4.data.views import decode_side, protocol_pixels  # noqa: E402
from inceptionv4.infer.predict import predict  # noqa: E402
from inceptionv4.engines.open import open_session
from inceptionv4.devices import vector_units  # noqa: E402


def digit_photo(pixels: np.ndarray, seed: int, size: tuple[int, int] = (4000, 3000)) -> bytes:
    """An 8x8 digit (dark ink on white) printed 2,400 pixels tall on a 4000x3000 canvas, with grain."""
    rng = np.random.default_rng(seed)
    digit = Image.fromarray(255 - pixels, mode="L").resize((2400, 2400), Image.BICUBIC)
    canvas = Image.new("L", size, 255)
    canvas.paste(digit, ((size[0] - 2400) // 2, (size[1] - 2400) // 2))
    px = np.asarray(canvas.convert("RGB"), dtype=np.int16) + rng.normal(0, 6, (size[1], size[0], 3)).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(px, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def views(photos: int, crops: int) -> dict:
    pre = Preprocessing(input_size=299, crop_pct=0.875)
    side = decode_side(pre, crops)
    means, maxes, t_full, t_reduced = [], [], 0.0, 0.0
    for i in range(photos):
        data = photo(4000, 3000, 500 + i)
        t = time.perf_counter()
        full = protocol_pixels(decode_rgb(data), pre, crops).int()
        t_full += time.perf_counter() - t
        t = time.perf_counter()
        reduced = protocol_pixels(decode_rgb(data, reduce_to=side), pre, crops).int()
        t_reduced += time.perf_counter() - t
        diff = (full - reduced).abs().float()
        means.append(diff.mean().item())
        maxes.append(diff.max().item())
    return {"crops": crops, "side": side, "scale": draft_scale(4000, 3000, side), "mean_levels": float(np.mean(means)),
            "max_levels": max(maxes), "full_ms": 1000 * t_full / photos, "reduced_ms": 1000 * t_reduced / photos}  # fmt: skip


def trained(weights: str, images: int, seed: int = 0) -> dict:
    val = Digits("val", seed=seed)
    picks = np.linspace(0, len(val) - 1, images).round().astype(int)
    with tempfile.TemporaryDirectory() as tmp:
        files, truth = [], []
        for k, i in enumerate(picks):
            pixels, label = val.samples[i]
            files.append(Path(tmp, f"{k:04d}.jpg"))
            files[-1].write_bytes(digit_photo(pixels, k))
            truth.append(label)
        runs = {}
        for name, full in (("full", True), ("reduced", False)):
            session = open_session(weights, backend="torch", precision="fp32", full_decode=full)
            runs[name] = [r["top"] for r in predict(session, [str(f) for f in files], topk=10)]
    probs = {n: np.array([[d["prob"] for d in sorted(top, key=lambda d: d["index"])] for top in r]) for n, r in runs.items()}
    top1 = {n: p.argmax(1) for n, p in probs.items()}
    y = np.array(truth)
    return {"images": images, "agreement": float((top1["full"] == top1["reduced"]).mean()),
            "max_prob_change": float(np.abs(probs["full"] - probs["reduced"]).max()),
            "full_top1": 100 * float((top1["full"] == y).mean()), "reduced_top1": 100 * float((top1["reduced"] == y).mean())}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="runs/demo/model.safetensors", help="a trained network (make demo's)")
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = [views(args.photos, c) for c in (1, 144)]
    net = trained(args.weights, args.images) if Path(args.weights).is_file() else None
    print(f"\n4000x3000 JPEGs, {os.cpu_count()} cores ({vector_units()}), {date.today()}\n")
    print("| views | decoded at | mean levels | largest | decode + view ms, full | reduced | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['crops']} crop(s), side {r['side']} | 1/{r['scale']} | {r['mean_levels']:.2f} | {r['max_levels']:.0f} | "
              f"{r['full_ms']:.0f} | {r['reduced_ms']:.0f} | {r['full_ms'] / r['reduced_ms']:.1f}x |")  # fmt: skip
    if net:
        print(f"\ntrained network ({args.weights}), {net['images']} digits as 4000x3000 photos: top-1 agreement "
              f"{net['agreement']:.3f}, largest probability change {net['max_prob_change']:.4f}, top-1 "
              f"{net['full_top1']:.1f}% (full) / {net['reduced_top1']:.1f}% (reduced)")  # fmt: skip
    else:
        print(f"\nno trained network at {args.weights} (make demo writes one): that row was not measured")
    if args.json:
        Path(args.json).write_text(json.dumps({"views": rows, "trained": net, "cpu": vector_units()}, indent=2))


if __name__ == "__main__":
    main()
