"""Batch inference across machines on Ray Data: embeddings or top-k classes of many images, with
the session on Ray actors (one load each, on a GPU or CPUs) and the decoding on CPU tasks.

Two ways in:

- :class:`Predictor` is a callable class for a Ray pipeline of your own
  (``ds.map_batches(Predictor, fn_constructor_kwargs={"weights": ...}, concurrency=N)``). It loads
  the session once per actor and takes numpy batches of encoded images (the ``bytes`` and
  ``path`` columns of ``ray.data.read_binary_files(..., include_paths=True)`` by default), or of
  views already decoded by :func:`load_views`.
- :func:`ray_rows` runs the whole pipeline over what ``embed`` and ``predict`` take (files,
  folders, globs, or a dataset such as WebDataset shards) and yields the rows
  :func:`~inceptionv4.infer.predict.session_rows` yields, so the same Parquet writer (and its
  resume) serves a single process and a cluster: ``inceptionv4 embed --ray ADDRESS``.

Ray reruns the work of an actor or task that dies (actors are restarted, their batches retried),
and each batch reaches the driver once, so a run loses and repeats nothing. The rows cross to the
driver, which writes them: a few KB an image (an embedding), small beside the images.
"""

from __future__ import annotations

import os
from collections.abc import Container, Iterator

import numpy as np
import torch

from ..data.decode import DecodeError
from ..data.loaders import upload_views
from ..data.transforms import Preprocessing
from ..data.views import protocol_pixels
from ..engines.open import open_session
from ..engines.options import SessionOptions
from ..extras import require
from .predict import Input, InputFiles, expand_inputs


def load_views(batch: dict[str, np.ndarray], *, dataset, pre: Preprocessing, crops: int,
               reduce_to: int | None) -> dict[str, np.ndarray]:  # fmt: skip
    """A Ray map_batches function (CPU tasks): rows ``{"key", "index"}`` of ``dataset`` (the
    :class:`~inceptionv4.data.datasets.ImageDataset` contract) -> ``{"key", "pixels": (N, V, 3, S, S)
    uint8, "error"}``: each image's protocol views, or zeros and why it could not be read ("" when
    it could)."""
    pixels, errors = _views_of([int(i) for i in batch["index"]], pre, crops, dataset.name_of,
                               lambda i: protocol_pixels(dataset.load(i, reduce_to=reduce_to)[0], pre, crops))  # fmt: skip
    return {"key": batch["key"], "pixels": pixels, "error": errors}


def _views_of(items: list, pre: Preprocessing, crops: int, name_of, views) -> tuple[np.ndarray, np.ndarray]:
    """((N, V, 3, S, S) uint8 ``views(item)`` of each item, or zeros; why each that raised
    DecodeError could not be read, without its name ``name_of(item)``, "" for the others)."""
    pixels = np.zeros((len(items), crops, 3, pre.input_size, pre.input_size), np.uint8)
    errors = np.full(len(items), "", dtype=object)
    for row, item in enumerate(items):
        try:
            pixels[row] = views(item).numpy()
        except DecodeError as err:
            errors[row] = str(err).removeprefix(f"{name_of(item)}: ")
    return pixels, errors


class Predictor:
    """What a Ray actor runs: a session opened once (``weights`` and ``settings``, as
    :func:`~inceptionv4.engines.open.open_session` takes them; ``output`` "embeddings" or
    "probabilities"), called on numpy batches.

    A batch holds either encoded images (column ``image_column``, named by ``key_column``; decoded
    here through the session's protocol) or the columns :func:`load_views` makes (``key``,
    ``pixels``, ``error``). The result has ``key``, ``error`` ("" for an image read) and
    ``embedding`` (N, D) float32, and/or ``top_index`` (N, k) int32 and ``top_prob`` (N, k)
    float32: the ``topk`` best classes (default 5 for probabilities; beside embeddings only when
    given, by :class:`~inceptionv4.infer.embed.TopClasses`). Rows of unreadable images hold zeros
    there."""

    def __init__(self, weights, *, output: str = "embeddings", topk: int | None = None, image_column: str = "bytes",
                 key_column: str = "path", **settings) -> None:  # fmt: skip
        from .embed import TopClasses

        if topk is not None and topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self.session = open_session(weights, output=output, **settings)
        self.image_column, self.key_column = image_column, key_column
        self.ranks = TopClasses(weights, topk, settings.get("model")) if topk and output == "embeddings" else None
        self.topk = self.ranks.k if self.ranks else min(topk or 5, len(self.session.labels.names))
        side = self.session.pre.input_size
        self.width = self.session(torch.zeros(self.session.crops, 3, side, side, dtype=torch.uint8)).shape[1]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "pixels" in batch:
            keys, pixels, errors = batch["key"], batch["pixels"], batch["error"]
        else:
            keys, pixels, errors = self._decode(batch)
        ok = np.array([not e for e in errors], dtype=bool)
        out = {"key": np.asarray(keys, dtype=object), "error": np.asarray(errors, dtype=object)}
        outputs = None
        if ok.any():
            views = torch.from_numpy(np.ascontiguousarray(pixels[ok]))
            outputs = self.session(views.flatten(0, 1))
        probs = outputs
        if self.session.output == "embeddings":
            out["embedding"] = np.zeros((len(keys), self.width), np.float32)
            if outputs is not None:
                out["embedding"][ok] = outputs.numpy()
                probs = self.ranks.probabilities(outputs) if self.ranks else None
            if self.ranks is None:
                return out
        out["top_index"] = np.zeros((len(keys), self.topk), np.int32)
        out["top_prob"] = np.zeros((len(keys), self.topk), np.float32)
        if probs is not None:
            top = probs.topk(self.topk, 1)
            out["top_index"][ok], out["top_prob"][ok] = top.indices.numpy(), top.values.numpy()
        return out

    def _decode(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s, keys = self.session, batch[self.key_column]
        pairs = list(zip(batch[self.image_column], (str(k) for k in keys), strict=True))
        pixels, errors = _views_of(pairs, s.pre, s.crops, lambda pair: pair[1], lambda pair: upload_views(
            bytes(pair[0]), pair[1], s.pre, s.crops, reduce_to=s.reduce_to))  # fmt: skip
        return keys, pixels, errors


def connect(address: str) -> bool:
    """Join the Ray cluster at ``address`` ("auto": the one this machine belongs to, as
    ``RAY_ADDRESS`` or ``ray start`` set it; "local": a new one on this machine's cores; or
    ``host:port`` / ``ray://host:port``), unless this process already has. True when this call
    started the connection (the caller shuts it down)."""
    require("ray", "--ray")
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return True


def ray_rows(weights, inputs: Input | list[Input] | None = None, options: SessionOptions | None = None, *,
             dataset=None, topk: int | None = None, actors: int = 1, cpus_per_actor: float = 1, batch_size: int | None = None,
             skip: Container[str] = (), progress: bool = False) -> Iterator[dict]:  # fmt: skip
    """The rows :func:`~inceptionv4.infer.predict.session_rows` yields (``{"file", "ok": True,
    "embedding"}`` or ``{"file", "ok": True, "top"}``, or ``{"file", "ok": False, "error"}``), for
    every image of ``inputs`` (files, folders, globs) or of ``dataset`` (an ImageDataset: shards,
    a Hugging Face split) but those named in ``skip``, computed on the Ray cluster this process is
    connected to (:func:`connect`). ``options.output`` says which (``topk``: as
    :class:`Predictor` takes it); rows come in the order Ray finishes them, not the inputs'.

    ``actors`` actors each open the session (``weights``, ``options``): one GPU each when the
    device is CUDA (or "auto" and the cluster has GPUs), else ``cpus_per_actor`` CPUs. CPU tasks
    read and decode the images, ``batch_size`` at a time (default 16; 256 for GPU actors); on CPU
    actors Ray fuses that work into the actors, so no pixels cross the object store. Paths are
    opened by their absolute names: every node must see the files where this one does.
    ``progress``: Ray Data's progress bars."""
    require("ray", "--ray")
    import ray

    if not ray.is_initialized():
        raise ValueError("not connected to a Ray cluster: call connect(address) first")
    if actors < 1 or cpus_per_actor <= 0 or (batch_size is not None and batch_size < 1):
        raise ValueError(f"actors and batch_size must be >= 1 and cpus_per_actor > 0; got {actors}, {batch_size}, "
                         f"{cpus_per_actor}")  # fmt: skip
    options = options or SessionOptions()
    if (inputs is None) == (dataset is None):
        raise ValueError("give inputs (files, folders, globs) or a dataset, not both")
    output = options.output
    keys = None
    if dataset is None:  # keyed by the names given, read by absolute path (a task's working folder is not ours)
        files = expand_inputs(inputs)
        keys = [name for name, _, _ in files]
        dataset = InputFiles([(os.path.abspath(n) if e is None and i is None else n, e, i) for n, e, i in files])
    keys = keys or [dataset.name_of(i) for i in range(len(dataset))]
    items = [{"key": key, "index": i} for i, key in enumerate(keys) if key not in skip]
    if not items:
        return
    # the protocol (views, sizes, classes) from the weights on this process's CPU: the actors run the engine
    probe = open_session(weights, SessionOptions(backend="torch", device="cpu", crops=options.crops,
                                                 full_decode=options.full_decode, model=options.model, output=output))
    names = probe.labels.names
    ray.data.DataContext.get_current().enable_progress_bars = progress
    gpu = options.device.startswith("cuda") or (options.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    batch_size = batch_size or (256 if gpu else 16)
    settings = {f: getattr(options, f) for f in SessionOptions.__dataclass_fields__ if f != "output"}
    blocks = max(min(actors, len(items)), min(-(-len(items) // batch_size), 1000))  # a block or more per actor
    actors = min(actors, blocks)  # no actor that would wait for work
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map_batches(load_views, batch_size=batch_size, num_cpus=1, fn_kwargs={
        "dataset": dataset, "pre": probe.pre, "crops": probe.crops, "reduce_to": probe.reduce_to})  # fmt: skip
    del probe
    resources = {"num_gpus": 1} if gpu else {"num_cpus": cpus_per_actor}
    ds = ds.map_batches(Predictor, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors), **resources,
                        fn_constructor_kwargs={"weights": _portable(weights), "output": output, "topk": topk,
                                               **settings})  # fmt: skip
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        for row in range(len(batch["key"])):
            key, error = str(batch["key"][row]), str(batch["error"][row])
            if error:
                yield {"file": key, "ok": False, "error": error}
                continue
            result = {"file": key, "ok": True}
            if "embedding" in batch:
                result["embedding"] = batch["embedding"][row]
            if "top_index" in batch:
                result["top"] = [{"index": int(i), "name": names[int(i)], "prob": float(p)}
                                 for i, p in zip(batch["top_index"][row], batch["top_prob"][row], strict=True)]  # fmt: skip
            yield result


def _portable(weights):
    """Weights as the actors open them: a path made absolute (an actor's working folder is not
    this process's); hub ids, networks and lists as they are."""
    if isinstance(weights, (list, tuple)):
        return [_portable(w) for w in weights]
    if isinstance(weights, (str, os.PathLike)) and os.path.exists(weights):
        return os.path.abspath(weights)
    return weights


__all__ = ["Predictor", "connect", "load_views", "ray_rows"]
