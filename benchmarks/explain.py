"""What explaining costs, beside a plain prediction; and where the maps fall on digits placed at random.

    python benchmarks/explain.py [--model inception_v4] [--images 8] [--rounds 3] [--canvas] [--json out.json]

**Cost.** ``--images`` 500x375 JPEGs, random weights of ``--model`` at its 299 px. In each round,
side by side: ``predict()`` on the session ``--backend auto`` opens (the engine, its precision),
``predict()`` on a torch fp32 session, and :class:`~inceptionv4.infer.explain.Explainer` over the
same files with each method (decode, view, a forward pass for the probabilities, one with
gradients to the layer, the map placed at the image's size), then the overlay PNGs
(``write_overlays``: all of the above plus drawing). Prints the best round of each as ms per image
and its ratio to the plain prediction.

**Where the maps fall** (``--canvas``, 3-4 minutes on 2 cores): Inception-ResNet-v1 trained for 110
steps on ``data.DigitCanvas`` (128 px canvases, a 48 px digit somewhere), as
tests/test_infer_explain.py does, then on 160 held-out canvases, for each method and stage: the
share of the correctly classified whose map peaks inside the digit's box, and whose map has most
of its mass there.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import inceptionv4 as iv
from inceptionv4.devices import vector_units
from inceptionv4.engines.open import open_session
from inceptionv4.engines.options import METHODS
from inceptionv4.infer.explain import Explainer, explain, write_overlays
from inceptionv4.infer.predict import predict


def _jpegs(folder: Path, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        smooth = rng.normal(0, 1, (24, 32, 3)).cumsum(0).cumsum(1)  # a photo-like gradient field, not noise
        pixels = ((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)
        path = folder / f"photo{i}.jpg"
        Image.fromarray(pixels).resize((500, 375), Image.Resampling.BICUBIC).save(path, quality=90)
        files.append(str(path))
    return files


def cost(model: str, images: int, rounds: int) -> list[dict]:
    torch.manual_seed(0)
    net = iv.create_model(model, num_classes=1000).eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = folder / "w.safetensors"
        iv.save_weights(net, weights)
        files = _jpegs(folder, images)
        auto, eager = open_session(weights, precision="auto"), open_session(weights, backend="torch")
        explainers = {m: Explainer.of(auto, method=m) for m in METHODS}
        paths = {
            f"predict ({auto.backend} {auto.precision})": lambda: list(predict(auto, files)),
            "predict (torch fp32)": lambda: list(predict(eager, files)),
            **{f"explain {m} (torch fp32)": (lambda e=e: e(files)) for m, e in explainers.items()},
            f"explain {METHODS[0]} + overlay PNGs": lambda: list(write_overlays(
                explainers[METHODS[0]], ((f, f, "top1", None) for f in files), folder / "png")),
        }  # fmt: skip
        for run in paths.values():  # warm-up: engines built, first-call costs paid
            run()
        best = {name: float("inf") for name in paths}
        for r in range(rounds):
            for name in paths if r % 2 == 0 else reversed(paths):
                start = time.perf_counter()
                paths[name]()
                best[name] = min(best[name], time.perf_counter() - start)
    base = best[next(iter(paths))]
    return [{"path": name, "ms_per_image": 1000 * s / images, "vs_plain_predict": s / base} for name, s in best.items()]


def canvas() -> list[dict]:
    from inceptionv4.data import DigitCanvas

    def views(dataset, indices):
        pixels = torch.stack([torch.from_numpy(np.array(dataset.load(i)[0])).permute(2, 0, 1) for i in indices])
        return (pixels.float() / 255 - 0.5) / 0.5

    train, held = DigitCanvas("train"), DigitCanvas("val", samples=160)
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    net = iv.create_model("inception_resnet_v1", num_classes=10).train()
    opt = torch.optim.AdamW(net.parameters(), 2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=110, pct_start=0.15)
    for _ in range(110):
        picks = rng.integers(0, len(train), 32).tolist()
        loss = F.cross_entropy(net(views(train, picks)), torch.tensor([train.samples[i][1] for i in picks]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    net.eval()
    x = views(held, range(len(held)))
    with torch.no_grad():
        maps = net.forward_intermediates(x[:1], intermediates_only=True)
    cells = {f.module: "x".join(map(str, m.shape[-2:])) for f, m in zip(net.feature_info, maps, strict=True)}
    rows = []
    for layer in ("stage_c", "stage_b", "stage_a"):
        for method in METHODS:
            maps = explain(net, x, method=method, layer=layer)
            right = [i for i, e in enumerate(maps) if e.index == held.samples[i][1]]
            peak = mass = 0
            for i in right:
                (left, top, r, b), h = held.box_of(i), maps[i].heatmap
                y, xx = np.unravel_index(h.argmax(), h.shape)
                peak += left <= xx < r and top <= y < b
                mass += h[top:b, left:r].sum() > 0.5 * h.sum()
            rows.append({"layer": f"{layer} ({cells[layer]})", "method": method, "right": len(right), "of": len(held),
                         "peak_in_box": peak / len(right), "mass_in_box": mass / len(right)})  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="inception_v4")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--canvas", action="store_true", help="also train on digit canvases and score the maps")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    print(f"{date.today()}; {vector_units()}; torch {torch.__version__}; {args.model} at 299 px, {args.images} "
          f"500x375 JPEGs, best of {args.rounds} rounds\n")  # fmt: skip
    rows = cost(args.model, args.images, args.rounds)
    print("| path | ms per image | vs plain predict |\n|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['ms_per_image']:.0f} | {r['vs_plain_predict']:.2f}x |")
    figures = {"cpu": vector_units(), "cost": rows}
    if args.canvas:
        figures["canvas"] = canvas()
        print("\n| layer (cells at 128 px) | method | right | peak in box | most mass in box |\n|---|---|---|---|---|")
        for r in figures["canvas"]:
            print(f"| {r['layer']} | {r['method']} | {r['right']}/{r['of']} | {100 * r['peak_in_box']:.1f}% | "
                  f"{100 * r['mass_in_box']:.1f}% |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
