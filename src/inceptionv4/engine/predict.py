"""Prediction on files, folders and globs: top-k names and probabilities, one bad file never
stops the others."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

import torch

from ..data import Preprocessing
from ..data.decode import IMAGE_SUFFIXES, DecodeError, load_rgb
from .protocols import CROPS, crop_views, display_names, predict_proba


def expand_inputs(inputs: list[str | Path]) -> list[tuple[str, str | None]]:
    """(file, error) for every file named, inside a folder (recursively) or matched by a glob."""
    out: list[tuple[str, str | None]] = []
    for item in map(str, inputs):
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            out += [(str(f), None) for f in files] or [(item, "folder has no images")]
        elif p.exists():
            out.append((item, None))
        elif any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            out += [(m, None) for m in matches if Path(m).is_file()] or [(item, "no file matches this pattern")]
        else:
            out.append((item, "no such file"))
    return out


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


def top_classes(probs: torch.Tensor, names: list[str], k: int) -> list[list[dict]]:
    """(N, classes) probabilities -> for each row its ``k`` best as ``{"index", "name", "prob"}``."""
    top = probs.topk(min(k, probs.shape[1]), 1)
    return [
        [{"index": i, "name": names[i], "prob": p} for p, i in zip(values, indices, strict=True)]
        for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def predict(
    models: torch.nn.Module | list[torch.nn.Module],
    inputs: list[str | Path],
    *,
    topk: int = 5,
    batch_size: int = 16,
    crops: int = 1,
    progress: bool = False,
    optimize: bool = False,
    fuse: bool = False,
) -> Iterator[dict]:
    """Yield ``{"file", "ok", "top": [{"index", "name", "prob"}]}`` or ``{"file", "ok": False, "error"}``
    for every input file, in order, batching the work.

    ``optimize`` runs each model's :func:`~inceptionv4.models.optimize_for_inference` form (same
    results, faster on CPU; the caller's models are left as they are); ``fuse`` runs
    :func:`~inceptionv4.models.fuse_for_inference` (faster again, CPU fp32, about 5 s to set up
    per model: worth it for a folder, not for one photo)."""
    if topk < 1 or batch_size < 1:  # checked before a model is prepared or a file read
        raise ValueError(f"topk and batch_size must be >= 1, got {topk} and {batch_size}")
    if crops not in CROPS:
        raise ValueError(f"crops must be one of {CROPS}, got {crops}")
    models = models if isinstance(models, list) else [models]
    names = display_names(models[0])
    pre = Preprocessing.of(models[0])
    models = inference_forms(models, optimize=optimize, fuse=fuse, input_size=pre.input_size)
    k = min(topk, len(names))
    files = expand_inputs(inputs)
    bar = None
    if progress and len(files) > batch_size:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), desc="predict", unit="img")
    pending: list[tuple[str, torch.Tensor]] = []

    def flush() -> Iterator[dict]:
        if not pending:
            return
        probs = predict_proba(models, torch.cat([v for _, v in pending]), crops)
        for (file, _), top in zip(pending, top_classes(probs, names, k), strict=True):
            yield {"file": file, "ok": True, "top": top}
        pending.clear()

    for file, error in files:
        if bar is not None:
            bar.update(1)
        if error is None:
            try:
                pending.append((file, crop_views(load_rgb(file), pre, crops)))
            except DecodeError as err:
                error = str(err).removeprefix(f"{file}: ")
        if error is not None:
            yield from flush()  # keep the output in input order
            yield {"file": file, "ok": False, "error": error}
        elif len(pending) == batch_size:
            yield from flush()
    yield from flush()
    if bar is not None:
        bar.close()
