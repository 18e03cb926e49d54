"""``make demo``: the whole life of a model in a few minutes on two CPU cores.

Train Inception-ResNet-v1 (the full network of Figs. 10-15, at its 75-pixel minimum input) on
scikit-learn's real handwritten digits, evaluate it on held-out digits, export it to ONNX checked
against PyTorch, and predict a handful of held-out images with both.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

DEMO_SETTINGS = {
    "model": "inception_resnet_v1",
    "dataset": "digits",
    "input_size": 75,  # the network's minimum: the 8x8 digits are upsampled to it
    "epochs": 4,
    "batch_size": 32,
    "recipe": "modern",  # AdamW, warm-up + cosine, label smoothing
    "lr": 1e-3,
    "warmup_epochs": 0.3,
    "ema_decay": 0.0,
    "hflip": 0.0,  # a mirrored 2 is no 2
    "min_crop_area": 0.35,  # crops of 8% would cut digits in half
    "workers": 1,
    "overwrite": True,  # `make demo` again replaces the last demo run
}


def run_demo(out_dir: str | Path = "runs/demo", *, epochs: int | None = None, max_steps: int | None = None,
             seed: int = 0, samples: int = 8, progress: bool = True, int8_min_agreement: float = 0.99) -> dict:  # fmt: skip
    """Run the demo; returns what it measured and wrote (also printed by ``inceptionv4 demo``).
    The int8 model is kept only if it agrees with fp32 on ``int8_min_agreement`` of the held-out
    digits; else ``int8`` holds the refusal."""
    from .data import Digits
    from .train import train
    from .engines.export import export_model, run_exported
    from .data.views import crop_views
    from .infer.predict import predict
    from .weights import load_weights

    start = time.time()
    out_dir = Path(out_dir)
    settings = {**DEMO_SETTINGS, "out_dir": str(out_dir), "seed": seed, "progress": progress}
    if epochs is not None:
        settings["epochs"] = epochs
    if max_steps is not None:
        settings["max_steps"] = max_steps
    summary = train(**settings)
    model = load_weights(summary["weights"]).eval()
    onnx = export_model(model, out_dir / "model.onnx", format="onnx")

    # a handful of held-out digits, written as image files, predicted by ONNX and by PyTorch
    val = Digits("val", seed=seed)
    picks = torch.linspace(0, len(val) - 1, samples).round().long().tolist()
    sample_dir = out_dir / "samples"
    sample_dir.mkdir(parents=True, exist_ok=True)
    files, truths = [], []
    from PIL import Image

    from .data import Preprocessing
    from .data.views import protocol_pixels

    pre = Preprocessing.of(model)
    for i in picks:  # the 8x8 scans as the network sees them: resized and cropped to its input size
        img, label = val.load(i)
        path = sample_dir / f"{val.name_of(i).replace('#', '_')}_label{label}.png"
        Image.fromarray(protocol_pixels(img, pre, 1)[0].permute(1, 2, 0).numpy()).save(path)
        files.append(path)
        truths.append(val.classes[label])
    eager = list(predict(model, files, topk=1))
    from .data.decode import load_rgb

    batch = torch.cat([crop_views(load_rgb(f), pre, 1) for f in files])
    onnx_probs = torch.softmax(run_exported(onnx["path"], "onnx", batch), 1)
    rows = []
    for f, truth, e, p in zip(files, truths, eager, onnx_probs, strict=True):
        rows.append({
            "file": f.name,
            "true": truth,
            "eager": e["top"][0]["name"],
            "eager_prob": e["top"][0]["prob"],
            "onnx": model.class_names[int(p.argmax())],
            "onnx_prob": float(p.max()),
        })  # fmt: skip
    int8 = _quantize_demo(model, out_dir, seed, int8_min_agreement)
    return {
        "int8": int8,
        "time_s": time.time() - start,
        "val_top1": summary["val_top1"],
        "val_top5": summary["val_top5"],
        "val_images": len(val),
        "steps": summary["steps"],
        "out_dir": str(out_dir),
        "weights": summary["weights"],
        "onnx": onnx["path"],
        "onnx_max_abs_diff": onnx["max_abs_diff"],
        "plots": summary.get("plots", []),
        "metrics": [str(out_dir / "metrics.jsonl"), str(out_dir / "metrics.csv")],
        "samples": rows,
    }


def _quantize_demo(model, out_dir: Path, seed: int, min_agreement: float) -> dict | None:
    """Quantize the trained model to int8 (OpenVINO NNCF, else onnxruntime), calibrated on the
    training digits and judged on every held-out digit: agreement with fp32 and the speed of both.
    None (and why, in the log) when neither engine is installed."""
    import logging

    from .data import Digits
    from .devices import vector_units
    from .engines.open import open_session
    from .extras import installed

    backend = next((b for b in ("openvino", "onnxruntime") if installed(b) and (b != "openvino" or installed("nncf"))),
                   None)  # fmt: skip
    if backend is None:
        logging.getLogger(__name__).info("int8 skipped: install openvino and nncf, or onnxruntime")
        return None
    from .engines.quantize import quantize

    folders = {}
    for split in ("train", "val"):  # the digits as image files, one folder per class, as a user's data would be
        ds = Digits(split, seed=seed)
        root = folders[split] = out_dir / "digits" / split
        for i in range(len(ds)):
            img, label = ds.load(i)
            path = root / ds.classes[label] / f"{i:04d}.png"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                img.save(path)
    suffix = ".xml" if backend == "openvino" else ".onnx"
    try:
        report = quantize(model, folders["train"], out_dir / f"model.int8{suffix}", backend=backend,
                          check=folders["val"], seed=seed, min_agreement=min_agreement)  # fmt: skip
    except ValueError as refused:  # agreement below the bar: said, and nothing written
        return {"refused": str(refused), "backend": backend}
    speed = {}
    size = model.pretrained_cfg.input_size[-1]
    x = torch.randint(0, 256, (16, 3, size, size), dtype=torch.uint8)
    for name, source in (("fp32", model), ("int8", report["path"])):
        session = open_session(source, backend=backend)
        session(x)  # warm-up
        t = time.perf_counter()
        for _ in range(5):
            session(x)
        speed[name] = 5 * len(x) / (time.perf_counter() - t)
    return {**report, "fp32_img_s": speed["fp32"], "int8_img_s": speed["int8"], "cpu": vector_units()}


def format_report(r: dict) -> str:
    """The demo's closing screen."""
    lines = ["", "Held-out predictions (PyTorch eager vs the exported ONNX model):",
             f"  {'file':<28} {'true':>4} {'eager':>6} {'prob':>6} {'onnx':>5} {'prob':>6}"]  # fmt: skip
    for row in r["samples"]:
        lines.append(f"  {row['file']:<28} {row['true']:>4} {row['eager']:>6} {row['eager_prob']:>6.3f} "
                     f"{row['onnx']:>5} {row['onnx_prob']:>6.3f}")  # fmt: skip
    lines += [
        "",
        (
            f"Done in {r['time_s'] / 60:.1f} min: {r['steps']} training steps; top-1 {r['val_top1']:.1f}% "
            f"(top-5 {r['val_top5']:.1f}%) on {r['val_images']} held-out digits never seen in training."
        ),
        f"ONNX export agrees with PyTorch to {r['onnx_max_abs_diff']:.1e} (max |logit difference|).",
        *_int8_lines(r.get("int8")),
        "",
        f"Written to {r['out_dir']}/ ({_size(r['out_dir'])} in all):",
        f"  weights    {r['weights']}  ({_size(r['weights'])}; safetensors bundle: classes, preprocessing, provenance)",
        f"  onnx       {r['onnx']}  ({_size(r['onnx'])})",
        f"  config     {Path(r['out_dir']) / 'config.yaml'}  (every setting of the run)",
        f"  checkpoint {Path(r['out_dir']) / 'checkpoints'}  ({_size(Path(r['out_dir']) / 'checkpoints')}; the newest "
        "only, for --resume: --keep-checkpoints N keeps more)",
        *([f"  int8       {r['int8']['path']}  (report: {r['int8']['report']})"] if (r.get("int8") or {}).get("path")
          else []),
        f"  metrics    {', '.join(r['metrics'])}",
        f"  plots      {', '.join(r['plots'])}",
        "  samples    " + str(Path(r["out_dir"]) / "samples") + "  (held-out 8x8 scans, dark ink on white, saved at "
        "the size the network sees)",
        "",
        "Next (in this shell first: source .venv/bin/activate):",
        f"  inceptionv4 predict --weights {r['weights']} {Path(r['out_dir']) / 'samples'}",
        f"  inceptionv4 serve --weights {r['weights']}    # then open http://127.0.0.1:8080/ and drop a digit",
        "  inceptionv4 train --model inception_v4 --dataset folder --data /path/to/your/folder --recipe finetune \\",
        "      --pretrained /path/to/inception_v4.safetensors --epochs 5 --out-dir runs/mine",
        "  inceptionv4 convert --from timm --model inception_v4 model.safetensors inception_v4.safetensors",
        "  inceptionv4 eval --weights inception_v4.safetensors --data /path/to/imagenet/val --crops 144",
    ]
    return "\n".join(lines)


def _size(path: str | Path) -> str:
    """A file's or a folder's size on disk, in MB."""
    p = Path(path)
    total = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    return f"{total / 1e6:.1f} MB"


def _int8_lines(q: dict | None) -> list[str]:
    if not q:
        return ["int8: skipped (install openvino and nncf, or onnxruntime: pip install 'inceptionv4[openvino]')"]
    if "refused" in q:
        return [f"int8 ({q['backend']}) not written: {q['refused']}"]
    return [
        f"int8 ({q['backend']}, calibrated on {q['calibration_images']} training digits): top-1 agreement with "
        f"fp32 {100 * q['agreement']:.1f}% on the {q['heldout_images']} held-out digits "
        f"(top-1 fp32 {q.get('fp32_top1', float('nan')):.1f}%, int8 {q.get('int8_top1', float('nan')):.1f}%);",
        f"  speed at batch 16 on this CPU ({q['cpu']}): fp32 {q['fp32_img_s']:.0f} img/s, int8 "
        f"{q['int8_img_s']:.0f} img/s ({q['int8_img_s'] / q['fp32_img_s']:.2f}x).",
    ]
