"""The GPU table: ours and timm, inference and training, both released models, and the input
pipeline, measured side by side in one run (target: under 5 minutes on one H100).

    python benchmarks/gpu.py --json gpu.json            # on a CUDA machine
    python benchmarks/gpu.py --device cpu --quick        # a smoke run of the script itself

bf16 autocast and channels_last throughout; timm compiled with torch.compile's default mode.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time
from datetime import date

import numpy as np
import torch
from PIL import Image

import inceptionv4 as iv
from inceptionv4.engine.bench import measure
from inceptionv4.models.fold import fold_batchnorm


def throughput(model, mode: str, batch: int, size: int, dev: torch.device, warmup: int, iters: int,
               compile: bool = False) -> float:  # fmt: skip
    """img/s of ``inceptionv4 bench``'s measurement: bf16 autocast, channels_last."""
    return measure(model, batch_size=batch, input_size=size, device=str(dev), precision="bf16", channels_last=True,
                   compile=compile, mode=mode, warmup=warmup, iters=iters)["img_per_s"]  # fmt: skip


def jpegs(n: int, rng: np.random.Generator) -> list[bytes]:
    """JPEGs of ImageNet's typical size (about 500x375, quality 90)."""
    out = []
    for _ in range(n):
        w, h = int(rng.integers(400, 600)), int(rng.integers(300, 450))
        base = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def pipeline_cpu(data: list[bytes], size: int) -> float:
    """img/s of PIL decode + Inception augmentation in this process (one CPU worker)."""
    from inceptionv4.data import Preprocessing, train_transform

    t = train_transform(Preprocessing(input_size=size))
    start = time.perf_counter()
    for b in data:
        t(Image.open(io.BytesIO(b)).convert("RGB"))
    return len(data) / (time.perf_counter() - start)


def pipeline_gpu(data: list[bytes], size: int, dev: torch.device) -> float:
    """img/s of batched nvJPEG decode + random-resized crop + flip + normalise on the GPU."""
    from torchvision.io import decode_jpeg
    from torchvision.transforms import v2

    crop = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])
    encoded = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in data]

    def run():
        images = decode_jpeg(encoded, device=dev)
        return torch.stack([crop(img) for img in images]).float().div_(127.5).sub_(1.0)

    run()  # warm-up: nvJPEG handles, kernels
    torch.cuda.synchronize(dev)
    start = time.perf_counter()
    for _ in range(3):
        run()
    torch.cuda.synchronize(dev)
    return 3 * len(data) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check that the script runs")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    import timm

    size, bs_inf, bs_train, warmup, iters = (75, 4, 2, 1, 2) if args.quick else (299, 256, 128, 5, 20)
    rows = []
    for name in ("inception_v4", "inception_resnet_v2"):
        ours, theirs = iv.create_model(name), timm.create_model(name)
        r = {"model": name}
        inf = {"mode": "inference", "batch": bs_inf, "size": size, "dev": dev, "warmup": warmup, "iters": iters}
        r["timm_eager_inf"] = throughput(theirs, **inf)
        r["ours_eager_inf"] = throughput(ours, **inf)
        r["ours_folded_inf"] = throughput(fold_batchnorm(ours), **inf)
        if dev.type == "cuda":
            t0 = time.perf_counter()
            r["timm_compiled_inf"] = throughput(timm.create_model(name), **inf, compile=True)
            r["timm_compile_s"] = time.perf_counter() - t0  # compilation plus the timed calls
            t0 = time.perf_counter()
            r["ours_compiled_inf"] = throughput(fold_batchnorm(ours), **inf, compile=True)
            r["ours_compile_s"] = time.perf_counter() - t0
        train = {**inf, "mode": "train", "batch": bs_train}
        r["timm_eager_train"] = throughput(timm.create_model(name), **train)
        r["ours_eager_train"] = throughput(iv.create_model(name), **train)
        rows.append(r)
        del ours, theirs
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    data = jpegs(16 if args.quick else 512, np.random.default_rng(0))
    pipe = {"cpu_one_worker_img_s": pipeline_cpu(data[: 16 if args.quick else 128], size)}
    if dev.type == "cuda":
        pipe["gpu_nvjpeg_img_s"] = pipeline_gpu(data, size, dev)
    meta = {"date": str(date.today()), "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
            "torch": torch.__version__, "timm": timm.__version__, "size": size, "batch_inference": bs_inf,
            "batch_train": bs_train, "precision": "bf16 autocast, channels_last"}  # fmt: skip
    print(json.dumps(meta))
    print("| model | timm eager | timm compiled | ours eager | ours folded | ours compiled | train timm | train ours |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:

        def f(k, r=r):
            return f"{r[k]:.0f}" if k in r else "-"

        print(f"| {r['model']} | {f('timm_eager_inf')} | {f('timm_compiled_inf')} | {f('ours_eager_inf')} | "
              f"{f('ours_folded_inf')} | {f('ours_compiled_inf')} | {f('timm_eager_train')} | {f('ours_eager_train')} |")  # fmt: skip
    print("input pipeline (img/s):", json.dumps(pipe))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows, "pipeline": pipe}, fh, indent=2)


if __name__ == "__main__":
    main()
