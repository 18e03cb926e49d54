"""A Triton Inference Server model repository for one network: ONNX (onnxruntime backend) and,
where OpenVINO is installed, its IR (openvino backend), with dynamic batching and class names.

Layout written under ``out_dir``::

    <name>/config.pbtxt          backend onnxruntime, max_batch_size, dims without the batch,
                                 dynamic_batching, output label_filename
    <name>/labels.txt            one class name per line, in output order
    <name>/1/model.onnx          our ONNX export (BatchNorm folded, dynamic batch, checked against eager)
    <name>_openvino/...          the same for Triton's openvino backend (1/model.xml + model.bin)
    README.md                    the preprocessing a client must apply, and how to call it
    client.py                    ``preprocess(path)`` and ``classify(url, paths)`` (tritonclient)

The model takes normalised float32 NCHW images ("images") and returns logits ("logits"): the
preprocessing is the client's, written beside the model as code and as prose.
"""

from __future__ import annotations

import shutil
from pathlib import Path


from ..data import Preprocessing
from ..models import InceptionNet

INPUT, OUTPUT = "images", "logits"

_CONFIG = """\
# Written by inceptionv4 for {architecture} ({classes} classes). Inputs are normalised float32
# NCHW images: see ../README.md for the preprocessing (resize, crop, mean/std).
name: "{name}"
backend: "{backend}"
max_batch_size: {max_batch_size}
input [
  {{
    name: "{input}"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, {size}, {size} ]
  }}
]
output [
  {{
    name: "{output}"
    data_type: TYPE_FP32
    dims: [ {classes} ]
    label_filename: "labels.txt"
  }}
]
dynamic_batching {{
  preferred_batch_size: [ {preferred} ]
  max_queue_delay_microseconds: {delay_us}
}}
version_policy: {{ latest: {{ num_versions: 1 }} }}
"""


def preferred_sizes(max_batch_size: int) -> list[int]:
    """The dynamic batcher's preferred sizes: the powers of two from 4 up to ``max_batch_size``."""
    sizes = [n for n in (4, 8, 16, 32, 64, 128, 256) if n <= max_batch_size]
    return sizes if sizes and sizes[-1] == max_batch_size else [*sizes, max_batch_size]


def export_triton(model: InceptionNet, out_dir: str | Path, *, name: str | None = None, max_batch_size: int = 32,
                  max_queue_delay_us: int = 5000, openvino: bool | None = None) -> dict:  # fmt: skip
    """Write a Triton model repository for ``model`` under ``out_dir`` (created; an existing
    model of the same name is replaced) and return what was written.

    ``openvino``: also write the IR variant (default: when OpenVINO is installed; True without
    it is an ImportError). The ONNX model is checked against eager PyTorch before anything is
    kept (:func:`~inceptionv4.engines.export.export_model`).
    """
    from ..engines.export import export_model
    from ..engines.session import Labels
    from ..extras import installed

    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    if openvino and not installed("openvino"):
        raise ImportError("the openvino variant needs openvino installed: pip install 'inceptionv4[openvino]'")
    openvino = installed("openvino") if openvino is None else openvino
    model = model.eval()
    pre = Preprocessing.of(model)
    architecture = model.model_name
    name = name or architecture
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"a Triton model name is letters, digits, '_' and '-', got {name!r}")
    labels = Labels.of_model(model).names
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields = {"architecture": architecture, "classes": len(labels), "max_batch_size": max_batch_size,
              "input": INPUT, "output": OUTPUT, "size": pre.input_size, "delay_us": max_queue_delay_us,
              "preferred": ", ".join(map(str, preferred_sizes(max_batch_size)))}  # fmt: skip
    written: dict = {"repository": str(out), "models": {}}
    staging = out / f".{name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        onnx_dir = staging / name
        (onnx_dir / "1").mkdir(parents=True)
        check = export_model(model, onnx_dir / "1" / "model.onnx", format="onnx", fold_bn=True)
        variants = {name: ("onnxruntime", onnx_dir)}
        if openvino:
            import openvino as ov

            ir_dir = staging / f"{name}_openvino"
            (ir_dir / "1").mkdir(parents=True)
            ov.save_model(ov.convert_model(onnx_dir / "1" / "model.onnx"), ir_dir / "1" / "model.xml")
            variants[f"{name}_openvino"] = ("openvino", ir_dir)
        for variant, (backend, folder) in variants.items():
            (folder / "config.pbtxt").write_text(_CONFIG.format(name=variant, backend=backend, **fields))
            (folder / "labels.txt").write_text("".join(f"{_label(n)}\n" for n in labels))
        for variant, (backend, folder) in variants.items():  # all checked: now replace what was there
            final = out / variant
            shutil.rmtree(final, ignore_errors=True)
            folder.rename(final)
            written["models"][variant] = {"backend": backend, "path": str(final)}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (out / "README.md").write_text(_readme(name, architecture, pre, labels, max_batch_size, openvino))
    (out / "client.py").write_text(_client(name, pre))
    written.update(max_abs_diff=check["max_abs_diff"], input_size=pre.input_size, classes=len(labels))
    return written


def _label(name: str) -> str:
    return " ".join(str(name).split())  # one line per class, whatever the name holds


def _readme(name: str, architecture: str, pre: Preprocessing, labels: list[str], max_batch: int, ov: bool) -> str:
    variants = f"`{name}` (onnxruntime)" + (f" and `{name}_openvino` (OpenVINO)" if ov else "")
    return f"""# Triton model repository: {architecture}

Written by `inceptionv4 export --format triton`. Models: {variants}. Serve it with

    tritonserver --model-repository=$PWD

## What the model takes and gives

- Input `{INPUT}`: float32, NCHW, `[batch, 3, {pre.input_size}, {pre.input_size}]`, batch 1 to {max_batch}
  (Triton's dynamic batcher joins concurrent requests).
- Output `{OUTPUT}`: float32 `[batch, {len(labels)}]`, the logits; softmax gives the probabilities.
  `labels.txt` names the classes, so Triton's classification extension
  (`class_count` in a request) returns `score:index:name`.
- The ONNX model computes the PyTorch network's function (checked to 1e-4 when written).
  On a CPU with bf16 units, OpenVINO runs in bf16 by default: logits about 1e-3 apart.

## The preprocessing a client must apply

1. Decode to RGB (apply the EXIF orientation first).
2. Resize the shorter side to {pre.resize_size} px ({pre.input_size} / crop_pct {pre.crop_pct}), {pre.interpolation}.
3. Centre-crop {pre.input_size} x {pre.input_size}.
4. Scale to [0, 1], subtract the mean {list(pre.mean)} and divide by the std {list(pre.std)}, per channel.
5. Channels first: `[3, {pre.input_size}, {pre.input_size}]`.

`client.py` does exactly this with Pillow and NumPy, and calls the server:

```python
from client import classify
print(classify("localhost:8000", ["photo.jpg"], top=5))   # pip install 'tritonclient[http]' pillow numpy
```
"""


def _client(name: str, pre: Preprocessing) -> str:
    return f'''"""A client for the {name} model of this repository (written by inceptionv4).

    pip install 'tritonclient[http]' pillow numpy
"""

import numpy as np
from PIL import Image, ImageOps

MODEL = {name!r}
SIZE, RESIZE, INTERPOLATION = {pre.input_size}, {pre.resize_size}, Image.Resampling.{pre.interpolation.upper()}
MEAN = np.array({list(pre.mean)}, dtype=np.float32).reshape(3, 1, 1)
STD = np.array({list(pre.std)}, dtype=np.float32).reshape(3, 1, 1)


def preprocess(path) -> np.ndarray:
    """One image file as the model's input: float32 [3, SIZE, SIZE], normalised."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
    w, h = img.size
    short = min(w, h)
    size = (RESIZE, int(RESIZE * h / w)) if w == short else (int(RESIZE * w / h), RESIZE)
    img = img.resize(size, INTERPOLATION)
    left, top = int(round((size[0] - SIZE) / 2.0)), int(round((size[1] - SIZE) / 2.0))
    img = img.crop((left, top, left + SIZE, top + SIZE))
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return ((x - MEAN) / STD).astype(np.float32)


def classify(url: str, paths: list, top: int = 5, model: str = MODEL) -> list:
    """The top classes of each image, from a Triton server at ``url`` (host:port, HTTP)."""
    import tritonclient.http as http

    client = http.InferenceServerClient(url)
    batch = np.stack([preprocess(p) for p in paths])
    inputs = [http.InferInput({INPUT!r}, list(batch.shape), "FP32")]
    inputs[0].set_data_from_numpy(batch)
    outputs = [http.InferRequestedOutput({OUTPUT!r}, class_count=top)]
    answer = client.infer(model, inputs, outputs=outputs).as_numpy({OUTPUT!r})
    return [[row.decode() if isinstance(row, bytes) else str(row) for row in image] for image in answer]
'''


def read_config(path: str | Path):
    """A config.pbtxt parsed with Triton's own schema (tritonclient's ``model_config_pb2``)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())


__all__ = ["INPUT", "OUTPUT", "export_triton", "preferred_sizes", "read_config"]
