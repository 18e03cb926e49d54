"""Calibrated int8: post-training quantization of our ONNX export, checked on held-out images.

OpenVINO's artefact is quantized by NNCF (OpenVINO's own quantizer); onnxruntime's is a static
QDQ model with per-channel weights. Both calibrate on the same images, and both are judged on
images the calibration did not see: top-1 agreement with fp32, the largest change of any class
probability, and top-1 / top-5 of each when the folder is labelled (class folders named as the
network's classes).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..data.decode import DecodeError, images_under, load_rgb
from ..data.views import decode_side, normalize_views, protocol_pixels
from ..extras import require
from ..models import Preprocessing
from ..scoring import map_labels
from ..weights.io import check_writable, state_sha256
from .artefacts import ARTEFACT_FORMAT, ARTEFACT_SUFFIX, artefact_digest
from .onnx import exported_onnx, onnx_runner, openvino_core
from .session import Labels


def quantize(
    weights: str | os.PathLike | torch.nn.Module,
    calibrate: str | os.PathLike,
    out: str | os.PathLike,
    *,
    backend: str = "openvino",
    model: str | None = None,
    min_agreement: float = 0.99,
    calibration_images: int = 300,
    heldout: float = 0.25,
    seed: int = 0,
    check: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    full_decode: bool = False,
) -> dict:
    """Write an int8 artefact of ``weights`` to ``out`` and return its report.

    Args:
        weights: a weights file (or a network in memory) as :func:`~inceptionv4.api.load_network` takes.
        calibrate: a folder of images (searched recursively; class folders give labels).
        out: the artefact: ``.xml`` for OpenVINO (its ``.bin`` is written beside), ``.onnx`` for
            onnxruntime. ``<out stem>.report.json`` holds the report, which the artefact carries too.
        backend: "openvino" (NNCF) or "onnxruntime" (static QDQ, per-channel weights).
        min_agreement: the least top-1 agreement with fp32 on the held-out images; below it
            nothing is written and a ValueError gives the figures.
        calibration_images: at most this many images calibrate; the rest up to ``heldout`` of
            the folder are held out (at least one of each).
        seed: which images go where.
        full_decode: decode every JPEG at full size; by default a large one is decoded reduced to
            the size the 1-crop view needs, as predict and serve decode it.
        check: a second folder to judge on instead: then every image of ``calibrate`` (up to
            ``calibration_images``) calibrates, and every image of ``check`` is held out.

    The report: ``agreement``, ``max_prob_drift``, ``calibration_images``, ``heldout_images``,
    ``skipped`` (unreadable files, with reasons) and, for a labelled folder, ``fp32_top1/top5``
    and ``int8_top1/top5`` (percent).
    """
    out = _check_request(backend, out, calibrate, check, min_agreement, heldout, calibration_images)
    from ..api import load_network

    net = load_network(weights, model).eval()
    labels, pre = Labels.of_model(net), Preprocessing.of(net)
    calib, held_views, held_truth, skipped = _split(Path(calibrate), check, pre, full_decode, heldout,
                                                    calibration_images, seed)  # fmt: skip
    fp32_path, _ = exported_onnx(net, cache_dir)
    tmpdir = Path(tempfile.mkdtemp(prefix=".quantize-", dir=out.parent))
    try:
        tmp = tmpdir / out.name
        (_nncf_quantize if backend == "openvino" else _ort_quantize)(fp32_path, calib, tmp)
        held = torch.stack(held_views)
        fp32 = _probs(onnx_runner(fp32_path, backend, "fp32", cache_dir), held)
        int8 = _probs(onnx_runner(tmp, backend, "int8", cache_dir), held)
        report = {
            "architecture": net.model_name,
            # the fp32 weights it was made from: what train, export and convert take instead of it
            "weights": None if isinstance(weights, torch.nn.Module) else str(Path(weights).resolve()),
            "backend": backend,
            "calibration_images": len(calib),
            "heldout_images": len(held_views),
            "agreement": float((fp32.argmax(1) == int8.argmax(1)).double().mean()),
            "max_prob_drift": float((fp32 - int8).abs().max()),
            "skipped": skipped,
            **_accuracy(fp32, int8, held_truth, labels),
        }
        if report["agreement"] < min_agreement:
            raise ValueError(
                f"int8 agrees with fp32 on {100 * report['agreement']:.1f}% of {len(held_views)} held-out images "
                f"(largest probability change {report['max_prob_drift']:.3f}), below --min-agreement "
                f"{100 * min_agreement:.1f}%; nothing written. Calibrate on more images like the ones it will see"
            )
        _write_metadata(tmp, backend, _metadata(net, labels, pre, report))
        report_path = out.with_name(out.stem + ".report.json")
        (tmpdir / report_path.name).write_text(json.dumps(report, indent=2))
        for f in sorted(tmpdir.iterdir(), key=lambda p: p.suffix == out.suffix):  # the .xml (or .onnx) last
            os.replace(f, out.parent / f.name)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    report["path"], report["report"] = str(out), str(report_path)
    return report


def _metadata(net: torch.nn.Module, labels: Labels, pre: Preprocessing, report: dict) -> dict:
    """What the artefact carries: what it is, its classes and preprocessing, the fp32 weights'
    hash, and its report (without the list of skipped files)."""
    return {
        "format": ARTEFACT_FORMAT,
        "architecture": report["architecture"],
        "num_classes": len(labels.keys),
        "label_set": labels.label_set,
        "class_names": labels.class_names,
        "preprocessing": pre.to_dict(),
        "weights_sha256": state_sha256(net.state_dict()),
        "report": {k: v for k, v in report.items() if k != "skipped"},
    }


def _check_request(backend: str, out, calibrate, check, min_agreement: float, heldout: float,
                   calibration_images: int) -> Path:  # fmt: skip
    """The artefact's path, once every argument has been checked and the engine found installed."""
    if backend not in ARTEFACT_SUFFIX:
        raise ValueError(f"quantize writes an openvino or onnxruntime artefact, not {backend!r}")
    out = Path(out)
    if out.suffix.lower() != ARTEFACT_SUFFIX[backend]:
        raise ValueError(f"a {backend} artefact is a {ARTEFACT_SUFFIX[backend]} file: got {out.name}")
    if not 0 <= min_agreement <= 1 or not 0 < heldout < 1 or calibration_images < 1:
        raise ValueError(f"min_agreement must be in [0, 1], heldout in (0, 1) and calibration_images >= 1, "
                         f"got {min_agreement}, {heldout}, {calibration_images}")  # fmt: skip
    require(backend)
    if backend == "openvino":
        require("nncf")
    for name, f in (("--calibrate", calibrate), ("--check", check)):
        if f is not None and not Path(f).is_dir():
            raise ValueError(f"{name} must be a folder of images: {f} is not a folder")
    check_writable(out)
    return out


def _split(folder: Path, check, pre: Preprocessing, full_decode: bool, heldout: float, most: int, seed: int):
    """(calibration batches, held-out views, their class folders, skipped files): a random
    ``heldout`` share of ``folder`` is held out, or all of ``check`` when given."""
    views, truth, skipped = _read_folder(folder, pre, full_decode)
    order = list(range(len(views)))
    random.Random(seed).shuffle(order)
    if check is None:
        _enough(folder, views, skipped, 2, "some to calibrate on, others to check on")
        n_held = max(1, round(len(order) * heldout))
        calib_idx, held_idx = order[n_held:][:most], order[:n_held]
        held_views, held_truth = [views[i] for i in held_idx], [truth[i] for i in held_idx]
    else:
        _enough(folder, views, skipped, 1, "to calibrate on")
        held_views, held_truth, more = _read_folder(Path(check), pre, full_decode)
        _enough(Path(check), held_views, more, 1, "to check on")
        calib_idx, skipped = order[:most], skipped + more
    return [views[i][None].numpy() for i in calib_idx], held_views, held_truth, skipped


def _enough(folder: Path, views: list, skipped: list[str], least: int, why: str) -> None:
    if len(views) < least:
        shown = "; ".join(skipped[:3]) or "no image files found"
        raise ValueError(f"{folder}: {len(views)} readable image(s); quantize needs at least {least} ({why}): {shown}")


def _read_folder(folder: Path, pre, full_decode: bool = False) -> tuple[list[torch.Tensor], list[str | None], list[str]]:
    """Every readable image under ``folder`` as one normalised 1-crop view, its class folder's name
    (None for an image at the top), and why each other file was passed over."""
    views, truth, skipped = [], [], []
    for name, error in images_under(folder):
        f = Path(name)
        if error is not None:
            skipped.append(f"{name}: {error}")
            continue
        try:
            img = load_rgb(f, reduce_to=None if full_decode else decode_side(pre, 1))
        except DecodeError as err:
            skipped.append(str(err))
            continue
        views.append(normalize_views(protocol_pixels(img, pre, 1), pre)[0])
        truth.append(f.parent.name if f.parent != folder else None)
    return views, truth, skipped


def _probs(run, views: torch.Tensor, batch: int = 16) -> torch.Tensor:
    return torch.cat([torch.softmax(run(views[i : i + batch]).float(), 1) for i in range(0, len(views), batch)])


def _accuracy(fp32, int8, truth: list[str | None], labels: Labels) -> dict:
    """fp32 and int8 top-1 / top-5 (percent) when every held-out image's class folder names an
    output (as eval maps them); else nothing."""
    if not truth or any(t is None for t in truth):
        return {}
    classes = sorted(set(truth))
    try:
        mapping = dict(zip(classes, map_labels(classes, labels.keys), strict=True))
    except ValueError:
        return {}
    y = torch.tensor([mapping[t] for t in truth])
    k = min(5, fp32.shape[1])
    out = {}
    for name, p in (("fp32", fp32), ("int8", int8)):
        out[f"{name}_top1"] = 100.0 * float((p.argmax(1) == y).double().mean())
        out[f"{name}_top5"] = 100.0 * float((p.topk(k, 1).indices == y[:, None]).any(1).double().mean())
    return out


def _nncf_quantize(onnx_path: Path, calib: list[np.ndarray], out: Path) -> None:
    import logging

    # NNCF loads torch's extension builder, which warns "No CUDA runtime is found" on every CPU run of a
    # CUDA build of torch: noise that says nothing about quantizing
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf
    import openvino as ov

    logging.getLogger("nncf").setLevel(logging.WARNING)
    ov_model = openvino_core().read_model(str(onnx_path))
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bar: stdout is for results (--json)
        quantized = nncf.quantize(ov_model, nncf.Dataset(calib), subset_size=len(calib),
                                  preset=nncf.QuantizationPreset.PERFORMANCE)  # fmt: skip
    ov.save_model(quantized, str(out), compress_to_fp16=False)


def _ort_quantize(onnx_path: Path, calib: list[np.ndarray], out: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calib)

        def get_next(self) -> dict | None:
            x = next(self.items, None)
            return None if x is None else {"images": x}

    quantize_static(str(onnx_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip


def _write_metadata(path: Path, backend: str, meta: dict) -> None:
    """Store ``meta`` in the artefact at ``path``, with the digest of what it computes with
    (:func:`~inceptionv4.engines.artefacts.artefact_digest`), which opening it checks."""
    if backend == "onnxruntime":
        import onnx

        proto = onnx.load(str(path))
        entry = proto.metadata_props.add()
        entry.key = ARTEFACT_FORMAT
        entry.value = json.dumps({**meta, "digest": artefact_digest(path, proto)})
        onnx.save(proto, str(path))
        return
    import openvino as ov

    model = openvino_core().read_model(str(path))
    tmp = path.with_name("with-meta-" + path.name)
    digest = artefact_digest(path)
    for _ in range(2):  # OpenVINO writes the same weights again; if it ever did not, the second pass records its own
        model.set_rt_info(json.dumps({**meta, "digest": digest}), [ARTEFACT_FORMAT])
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        if artefact_digest(tmp) == digest:
            break
        digest = artefact_digest(tmp)
    else:
        raise RuntimeError(f"OpenVINO wrote {path.name}'s weights differently on each save; nothing written")
    os.replace(tmp, path)
    os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))