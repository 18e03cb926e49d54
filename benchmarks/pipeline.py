"""Files to predictions against the engine alone, side by side in one run.

    python benchmarks/pipeline.py [--model inception_v4] [--precisions int8 bf16] [--small 200]
                                  [--phone 24] [--clients 16] [--json out.json]

Random weights of ``--model`` with a 4-class head are saved, and (for int8) quantized with NNCF on
the small JPEGs. JPEGs are written to a temporary folder: ``--small`` ImageNet-size photos
(500x375) and ``--phone`` phone-size ones (4000x3000, about 2.5 MB). For each precision, rows:

- ``engine alone``: the session called on ready uint8 views, batch 16 (the ceiling;
  ``--engine-batch``), and, where OpenVINO's ``benchmark_app`` is installed, its figure with the
  better of its two hints on the same model and precision (the issue's reference);
- ``predict`` over the small and the phone JPEGs (the API, as ``inceptionv4 predict`` runs it,
  start-up excluded), the phone ones with the reduced decode (the default) and ``full_decode``;
- ``eval`` over the small JPEGs as a class folder;
- ``serve``: an ``inceptionv4 serve`` process and ``--clients`` concurrent clients in another
  process posting a small JPEG, then a phone photo; and one client posting a phone photo to the
  idle server (p50 latency).

Every ratio is to the engine alone at the same precision, timed right before and right after that
row (their mean), so that a shared machine's drift between rows does not enter the ratio, and it
holds on any CPU; the table header names the vector units.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import CLIENTS, ROOT, start_server  # noqa: E402 -- the serve benchmark's clients and server

import inceptionv4 as iv  # noqa: E402
from inceptionv4.data import build_dataset  # noqa: E402
from inceptionv4.infer.evaluate import evaluate_protocol  # noqa: E402
from inceptionv4.infer.predict import predict  # noqa: E402
from inceptionv4.engines.open import auto_precision, open_session
from inceptionv4.devices import vector_units  # noqa: E402


def photo(width: int, height: int, seed: int, quality: int = 90) -> bytes:
    """A JPEG like a photograph of ``width`` x ``height``: smooth colour fields with grain, so that
    decoding it is real work and its size is a camera's (about 2.5 MB at 4000x3000)."""
    rng = np.random.default_rng(seed)
    field = rng.integers(0, 256, (height // 64 + 2, width // 64 + 2, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(field).resize((width, height), Image.BICUBIC), dtype=np.int16)
    img = img + rng.normal(0, 12, img.shape).astype(np.int16)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7))
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_photos(folder: Path, count: int, width: int, height: int, seed: int) -> Path:
    """``count`` photos in ``folder/0`` (a class folder named as output 0, for eval); returns ``folder``."""
    (folder / "0").mkdir(parents=True)
    for i in range(count):
        (folder / "0" / f"{i:04d}.jpg").write_bytes(photo(width, height, seed + i))
    return folder


def rate(fn, images: int, repeat: int = 2, warm=None) -> float:
    """The best images per second of ``repeat`` runs of ``fn`` (after one run of ``warm``, default
    ``fn``, to warm the path)."""
    (warm or fn)()
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = max(best, images / (time.perf_counter() - t))
    return best


def engine_alone(session, batch: int = 16, passes: int = 4) -> float:
    s = session.pre.input_size
    views = torch.randint(0, 256, (batch * session.crops, 3, s, s), dtype=torch.uint8)
    return rate(lambda: [session(views) for _ in range(passes)], batch * passes, warm=lambda: session(views))


def benchmark_app(model: str, precision: str, size: int, batch: int = 16, seconds: int = 8) -> float | None:
    """OpenVINO's own benchmark_app on ``model`` (ONNX or IR): the better of its two hints, img/s."""
    tool = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    if not Path(tool).exists():
        return None
    best = None
    for hint in ("throughput", "latency"):
        cmd = [tool, "-m", model, "-d", "CPU", "-hint", hint, "-t", str(seconds), "-shape", f"[{batch},3,{size},{size}]"]
        if precision != "int8":
            cmd += ["-infer_precision", {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}[precision]]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
        found = re.search(r"Throughput:\s+([\d.]+)\s+FPS", out)
        if found:
            best = max(best or 0.0, float(found.group(1)))
    return best


def clients(url: str, count: int, requests: int, image: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CLIENTS, url, str(count), str(requests), str(image), "v1", "", ""],
                         capture_output=True, text=True, check=True)  # fmt: skip
    r = json.loads(out.stdout)
    times = sorted(r["times"])
    return {"img_per_s": len(times) / r["wall"], "p50_ms": 1000 * statistics.median(times) if times else None,
            "errors": r["errors"]}  # fmt: skip


def measure(precision: str, weights: str, int8: str | None, small: Path, phone: Path, args) -> list[dict]:
    source = int8 if precision == "int8" else weights
    session = open_session(source, precision="auto" if precision == "int8" else precision)
    full = open_session(source, precision="auto" if precision == "int8" else precision, full_decode=True)
    engine_rate = lambda: engine_alone(session, args.engine_batch, args.engine_passes)  # noqa: E731
    engine = engine_rate()
    rows = [{"what": f"engine alone (session on ready views, batch {args.engine_batch})", "img_per_s": engine,
             "engine": engine}]  # fmt: skip
    onnx = int8 if precision == "int8" else str(session.cache[0]["onnx"])
    bapp = benchmark_app(onnx, precision, session.pre.input_size, args.engine_batch) if args.benchmark_app else None
    n_small, n_phone = len(list(small.rglob("*.jpg"))), len(list(phone.rglob("*.jpg")))
    few = sorted(str(f) for f in small.rglob("*.jpg"))[:16]
    warm = lambda: list(predict(session, few))  # noqa: E731

    def row(what: str, measure_it) -> dict:
        before = engine_rate()
        figures = measure_it()
        figures = figures if isinstance(figures, dict) else {"img_per_s": figures}
        return {"what": what, **figures, "engine": (before + engine_rate()) / 2}

    rows += [
        row(f"predict, {n_small} JPEGs 500x375", lambda: rate(lambda: list(predict(session, str(small))), n_small, warm=warm)),
        row(f"eval, {n_small} JPEGs 500x375", lambda: rate(
            lambda: evaluate_protocol(session, build_dataset("folder", "val", root=str(small))), n_small, warm=warm)),
        row(f"predict, {n_phone} photos 4000x3000 (reduced decode)",
            lambda: rate(lambda: list(predict(session, str(phone))), n_phone)),
        row(f"predict, {n_phone} photos 4000x3000 (--full-decode)",
            lambda: rate(lambda: list(predict(full, str(phone))), n_phone, repeat=1)),
    ]  # fmt: skip
    if args.clients:
        proc, url, _ = start_server(ROOT / "src", source, "auto", 16, "--precision", "auto" if precision == "int8" else precision)
        try:
            one_small, one_phone = next(small.rglob("*.jpg")), next(phone.rglob("*.jpg"))
            clients(url, args.clients, 2 * args.clients, one_small)  # warm the path and the clients
            for image, label in ((one_small, "a 500x375 JPEG"), (one_phone, "a 4000x3000 photo")):
                rows.append(row(f"serve, {args.clients} clients posting {label}",
                                lambda image=image: clients(url, args.clients, 4 * args.clients, image)))  # fmt: skip
            rows.append(row("serve, 1 client posting a 4000x3000 photo (idle server)",
                            lambda: clients(url, 1, 8, one_phone)))  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    if bapp:
        rows.insert(1, {"what": f"benchmark_app, better hint, batch {args.engine_batch}", "img_per_s": bapp, "engine": engine})
    for r in rows:
        r["vs_engine"] = r["img_per_s"] / r["engine"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="inception_v4")
    ap.add_argument("--precisions", nargs="+", default=None,
                    help="default: int8 and what --precision auto runs here (bf16 on a native-BF16 CPU, else fp32)")
    ap.add_argument("--small", type=int, default=200, help="500x375 JPEGs")
    ap.add_argument("--phone", type=int, default=24, help="4000x3000 JPEGs")
    ap.add_argument("--clients", type=int, default=16, help="concurrent serve clients (0: no serve rows)")
    ap.add_argument("--engine-batch", type=int, default=16, help="the engine-alone reference: images a pass")
    ap.add_argument("--engine-passes", type=int, default=4, help="the engine-alone reference: passes timed")
    ap.add_argument("--no-benchmark-app", dest="benchmark_app", action="store_false")
    ap.add_argument("--json")
    args = ap.parse_args()
    precisions = args.precisions or ["int8", auto_precision("openvino")]
    torch.manual_seed(0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = write_photos(tmp / "small", args.small, 500, 375, 0)
        phone = write_photos(tmp / "phone", args.phone, 4000, 3000, 10_000)
        weights = str(tmp / "w.safetensors")
        iv.save_weights(iv.create_model(args.model, num_classes=4).eval(), weights)
        int8 = None
        if "int8" in precisions:
            from inceptionv4.engines.quantize import quantize

            int8 = str(tmp / "w.int8.xml")
            quantize(weights, small, int8, min_agreement=0.0, calibration_images=min(64, args.small))
        for precision in precisions:
            results[precision] = measure(precision, weights, int8, small, phone, args)
            print(f"{precision}: done", file=sys.stderr, flush=True)
    print(f"\n{args.model}, 4 classes, {os.cpu_count()} cores ({vector_units()}), torch {torch.__version__}, "
          f"{date.today()}\n")  # fmt: skip
    print("| precision | what | img/s | engine alone beside it, img/s | ratio | p50 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for precision, rows in results.items():
        for r in rows:
            p50 = f"{r['p50_ms']:.0f}" if r.get("p50_ms") else ""
            print(f"| {precision} | {r['what']} | {r['img_per_s']:.1f} | {r['engine']:.1f} | {r['vs_engine']:.2f}x | {p50} | "
                  f"{r.get('errors', '')} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "cpu": vector_units(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
