"""Why a network chose a class: class-activation maps (HiResCAM and Grad-CAM, computed by Captum).

:func:`explain` takes a network, weights or an opened session and images, and returns, for each
image, a heatmap at the image's own size and the class it explains. The maps are computed in torch
and float32 from the weights a session was opened from, whatever engine and precision the session
runs: an int8 artefact is explained with the fp32 weights its report names
(:func:`~inceptionv4.engines.artefacts.artefact_weights`). Explaining is a separate pass with
gradients; a plain prediction never pays for it.

The map is taken at a stage of the trunk, named as ``feature_info`` names its taps: the last one
(``stage_c``, or ``post`` for Inception-ResNet-v2) by default, whose 8x8 map at 299 px is the one
the classifier pools; an earlier stage (``stage_b``: 17x17) gives a finer, noisier map.
"""

from __future__ import annotations

import copy
import itertools
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import extras
from ..data.decode import DecodeError
from ..data.views import crop_views
from ..engines.session import Labels, Session
from ..models import InceptionNet, Preprocessing
from ..engines.options import METHODS, ExplainOptions
from .predict import Input, InputFiles, expand_inputs

#: what ``target`` takes besides a class index or name: the class the network ranks first
TOP1 = "top1"


@dataclass(frozen=True)
class Explanation:
    """One image's class-activation map.

    ``heatmap`` is (H, W) float32 in [0, 1] at the image's size (for a tensor input: the view's
    size), 1 where the class's evidence is strongest; 0 outside ``box``, the part of the image the
    network saw (the protocol's centre crop, (left, top, right, bottom) in the image's pixels).
    ``index``/``name``/``prob`` are the class explained and the probability the network gives it;
    ``top1`` is the class it ranks first (the same as ``index`` for ``target="top1"``)."""

    file: str
    heatmap: np.ndarray
    index: int
    name: str
    prob: float
    top1: dict
    box: tuple[int, int, int, int]
    method: str
    layer: str

    def summary(self) -> dict:
        """The explanation as JSON-ready values, without the heatmap."""
        return {"file": self.file, "index": self.index, "name": self.name, "prob": self.prob, "top1": self.top1,
                "box": list(self.box), "method": self.method, "layer": self.layer}  # fmt: skip


Target = int | str


class Explainer:
    """Class-activation maps of one network (or an ensemble's, averaged), in float32 on ``device``.

    It holds its own copy of the networks: Captum hooks the target layer while a map is computed,
    and a copy keeps those hooks (and the gradients) away from a session that serves predictions
    in another thread. One map is computed at a time (a lock), so concurrent callers queue.
    """

    def __init__(self, networks: Sequence[InceptionNet], *, method: str = "hirescam", layer: str | None = None,
                 device: torch.device | str = "cpu", channels_last: bool = False,
                 input_size: int | None = None) -> None:  # fmt: skip
        extras.require("captum", "explaining a prediction (class-activation maps)")
        ExplainOptions(method, layer)  # checked
        if not networks:
            raise ValueError("give a network to explain")
        first = networks[0]
        if first.head is None:
            raise ValueError("this network has no classifier (features_only): there is no class to explain")
        self.layers, self.strides = [], []  # per network: an ensemble may mix networks (IR-v2's last is "post")
        for n in networks:
            taps = [info.module for info in n.feature_info]
            chosen = layer or taps[-1]
            if chosen not in taps:
                raise ValueError(f"layer must be one of {n.model_name}'s stages ({', '.join(taps)}); got {chosen!r}")
            self.layers.append(chosen)
            self.strides.append(n.feature_info[taps.index(chosen)].reduction)
        self.device = torch.device(device)
        self.channels_last = channels_last
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.networks = [copy.deepcopy(n).float().eval().to(self.device, memory_format=fmt) for n in networks]
        self.labels = Labels.of_model(first)
        self.pre = Preprocessing.of(first, input_size)
        self.method, self.layer = method, self.layers[0]
        self._lock = threading.Lock()

    @classmethod
    def of(cls, source, *, weights=None, model: str | None = None, **options) -> Explainer:
        """An explainer for a session (its fp32 weights: :func:`fp32_networks`), a network in
        memory, weights as :func:`~inceptionv4.api.load_network` takes, or a list (an ensemble).
        ``options`` are :class:`Explainer`'s (method, layer, device, channels_last, input_size)."""
        if isinstance(source, Session):
            if options.get("device") is None:
                options["device"] = source.device if source.backend == "torch" else "cpu"
            if options.get("input_size") is None:
                options["input_size"] = source.pre.input_size
            return cls(fp32_networks(source, weights), **options)
        from ..api import load_network

        if weights is not None:
            raise ValueError("weights= names the fp32 weights of a session's int8 artefacts; give a session")
        sources = list(source) if isinstance(source, (list, tuple)) else [source]
        return cls([load_network(s, model) for s in sources], **{k: v for k, v in options.items() if v is not None})

    def class_of(self, target: Target, probs: torch.Tensor) -> int:
        """The class index ``target`` means for an image with these probabilities."""
        if isinstance(target, str) and target == TOP1:
            return int(probs.argmax())
        if isinstance(target, bool) or not isinstance(target, (int, str, np.integer)):
            raise TypeError(f"target must be 'top1', a class index or a class name; got {type(target).__name__}")
        if isinstance(target, str):
            for names in (self.labels.keys, self.labels.names):
                if target in names:
                    return names.index(target)
            shown = ", ".join(self.labels.names[:5]) + (", ..." if len(self.labels.names) > 5 else "")
            raise ValueError(f"target {target!r} is not one of the network's classes ({shown})")
        if not 0 <= int(target) < len(self.labels.keys):
            raise ValueError(f"target class {int(target)} is outside 0-{len(self.labels.keys) - 1}")
        return int(target)

    def maps(self, views: torch.Tensor,
             targets: Target | Sequence[Target] = TOP1) -> tuple[torch.Tensor, torch.Tensor, list[int]]:  # fmt: skip
        """Maps of normalised float views (N, 3, H, W): ((N, H, W) maps in [0, 1] on the CPU,
        (N, classes) probabilities, the class each map explains). ``targets``: one for all, or one
        per view. An ensemble's maps are summed at the views' size, then scaled."""
        if views.dim() != 4 or not views.is_floating_point():
            raise ValueError(f"views must be float (N, 3, H, W), normalised; got {views.dtype} {tuple(views.shape)}")
        per_view = list(targets) if isinstance(targets, (list, tuple)) else [targets] * len(views)
        if len(per_view) != len(views):
            raise ValueError(f"give one target per image: {len(per_view)} for {len(views)}")
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = views.to(self.device, dtype=torch.float32).contiguous(memory_format=fmt)
        with self._lock:
            with torch.no_grad():
                probs = sum(F.softmax(n(x).float(), 1) for n in self.networks).cpu() / len(self.networks)
            classes = [self.class_of(t, p) for t, p in zip(per_view, probs, strict=True)]
            index = torch.tensor(classes, device=self.device)
            size = tuple(views.shape[-2:])
            up = sum(upsample_map(self._layer_map(n, layer, x, index), stride, size)
                     for n, layer, stride in zip(self.networks, self.layers, self.strides, strict=True))  # fmt: skip
        return _unit(up.cpu()), probs, classes

    def _layer_map(self, network: InceptionNet, name: str, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(N, h, w) map at the layer's resolution, >= 0: what each method computes from Captum's attributions."""
        from captum.attr import LayerGradCam, LayerGradientXActivation

        layer = network.get_submodule(name)
        if self.method == "gradcam":
            a = LayerGradCam(network, layer).attribute(x, target=index, relu_attributions=True)[:, 0]
        else:  # HiResCAM: the gradient times the activation, summed over channels, then rectified
            a = LayerGradientXActivation(network, layer).attribute(x, target=index).sum(1).clamp_min(0)
        return a.detach().float()

    def __call__(self, images: Input | list[Input], targets: Target | Sequence[Target] = TOP1, *,
                 batch_size: int = 8) -> list[Explanation]:  # fmt: skip
        """An :class:`Explanation` for each image (files, folders, globs or PIL images, as
        :func:`~inceptionv4.infer.predict.predict` takes), at its own size, through the 1-crop
        view :func:`~inceptionv4.infer.predict.predict` classifies. A file that cannot be read
        is a :class:`~inceptionv4.data.decode.DecodeError` naming it."""
        files = InputFiles(expand_inputs(images))
        per_image = list(targets) if isinstance(targets, (list, tuple)) else [targets] * len(files)
        if len(per_image) != len(files):
            raise ValueError(f"give one target per image: {len(per_image)} for {len(files)}")
        out: list[Explanation] = []
        for start in range(0, len(files), batch_size):
            chunk = range(start, min(start + batch_size, len(files)))
            pictures = [files.load(i)[0] for i in chunk]
            out += self.explain_images(pictures, [files.name_of(i) for i in chunk], [per_image[i] for i in chunk])
        return out

    def explain_images(self, pictures: list[Image.Image], names: list[str],
                       targets: Sequence[Target]) -> list[Explanation]:  # fmt: skip
        """Explanations of decoded RGB images (one target each), their maps at each image's size."""
        views = torch.cat([crop_views(p, self.pre) for p in pictures])
        heat, probs, classes = self.maps(views, list(targets))
        out = []
        for picture, name, h, p, c in zip(pictures, names, heat, probs, classes, strict=True):
            box = crop_box(picture.size, self.pre)
            out.append(self.explanation(name, place_map(h, box, picture.size), p, c, box))
        return out

    def explanation(self, file: str, heatmap: np.ndarray, probs: torch.Tensor, index: int,
                    box: tuple[int, int, int, int]) -> Explanation:  # fmt: skip
        """The :class:`Explanation` of class ``index`` for an image with these probabilities."""
        names, best = self.labels.names, int(probs.argmax())
        return Explanation(file=file, heatmap=heatmap, index=index, name=names[index], prob=float(probs[index]),
                           top1={"index": best, "name": names[best], "prob": float(probs[best])}, box=box,
                           method=self.method, layer=self.layer)  # fmt: skip


def upsample_map(maps: torch.Tensor, stride: int, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) maps of a layer whose cells lie ``stride`` input pixels apart -> (N, H, W) at the
    input's ``size``, each cell's value placed at the centre of the input it sees.

    Those centres are not spread over the whole input, as a plain resize assumes: valid
    convolutions and pools leave a margin, so the cells span ``(n - 1) * stride`` pixels centred
    on the input (at 299 px, Inception-v4's 8x8 map spans pixels 37-261, where a resize would
    stretch it over 18-280 and push every peak outwards). Between centres the map is bilinear;
    beyond the outer ones it keeps their value."""

    def coords(n: int, length: int) -> torch.Tensor:
        first = (length - 1 - (n - 1) * stride) / 2
        u = (torch.arange(length, dtype=torch.float32, device=maps.device) - first) / stride
        return u / (n - 1) * 2 - 1 if n > 1 else torch.zeros(length, device=maps.device)

    gy, gx = coords(maps.shape[-2], size[0]), coords(maps.shape[-1], size[1])
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)  # (H, W, 2): x, y in [-1, 1]
    grid = grid[None].expand(len(maps), *grid.shape)
    return F.grid_sample(maps[:, None], grid, mode="bilinear", padding_mode="border", align_corners=True)[:, 0]


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1] by its own maximum (an all-zero map stays zero)."""
    peak = maps.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return (maps.clamp_min(0) / peak).clamp_(0, 1)


def crop_box(size: tuple[int, int], pre: Preprocessing) -> tuple[int, int, int, int]:
    """(left, top, right, bottom), in the pixels of an image of ``size`` (width, height), of the
    1-crop view the network sees: the shorter side resized to ``pre.resize_size``, then the centre
    ``pre.input_size`` square (torchvision's sizes and rounding)."""
    width, height = size
    side, s = pre.resize_size, pre.input_size
    short, long = min(width, height), max(width, height)
    resized_long = int(side * long / short)
    w, h = (side, resized_long) if width <= height else (resized_long, side)
    scale = short / side
    top, left = round((h - s) / 2), round((w - s) / 2)  # torchvision's centre crop (it pads a smaller image)
    x0, y0, side_px = round(left * scale), round(top * scale), round(s * scale)
    return x0, y0, x0 + side_px, y0 + side_px


def place_map(heat: torch.Tensor, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """An (S, S) map of the view, resized onto ``box`` of an image of ``size`` (width, height):
    (height, width) float32, 0 where the view did not reach."""
    width, height = size
    left, top, right, bottom = box
    resized = F.interpolate(heat[None, None], size=(bottom - top, right - left), mode="bilinear",
                            align_corners=False)[0, 0].clamp_(0, 1)  # fmt: skip
    out = np.zeros((height, width), np.float32)
    # a view larger than the image (torchvision pads it) reaches past the image's edges
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(bottom, height), min(right, width)
    out[y0:y1, x0:x1] = resized[y0 - top : y1 - top, x0 - left : x1 - left].numpy()
    peak = out.max()
    return out / peak if peak > 0 else out  # resampling lowers the peak a little: 1 is still the strongest


def fp32_networks(session: Session, weights=None) -> list[InceptionNet]:
    """The float32 networks a session computes with, for gradients: its torch modules as they
    were given, the weights it was opened from (the engines), or for an int8 artefact the fp32
    weights its report names (``weights`` instead, if given; checked against the artefact's hash).
    A ValueError says what to pass when they cannot be found."""
    from ..api import load_network
    from ..engines.artefacts import artefact_weights, is_artefact

    sources = list(session.sources)
    if weights is not None:
        given = list(weights) if isinstance(weights, (list, tuple)) else [weights]
        if len(given) != len(sources):
            raise ValueError(f"give fp32 weights for each of the session's {len(sources)} models; got {len(given)}")
        pairs = list(zip(sources, given, strict=True))
    else:
        pairs = [(s, None) for s in sources]
    networks = []
    for source, given in pairs:
        if isinstance(source, torch.nn.Module):
            networks.append(load_network(given if given is not None else source))
        elif is_artefact(source):
            networks.append(artefact_weights(source, given))
        else:
            networks.append(load_network(given if given is not None else source, session.architecture))
    return networks


def explain(
    model_or_weights,
    images: Input | list[Input] | torch.Tensor,
    *,
    target: Target | Sequence[Target] = TOP1,
    method: str = "hirescam",
    layer: str | None = None,
    weights=None,
    device: torch.device | str | None = None,
    channels_last: bool = False,
    input_size: int | None = None,
    batch_size: int = 8,
) -> list[Explanation]:
    """For each image, a heatmap at the image's size and the class it explains.

    Args:
        model_or_weights: a network, weights (a file, a hub id: what ``--weights`` takes), a list
            of them (an ensemble: maps and probabilities averaged), or an opened
            :class:`~inceptionv4.engines.session.Session` (any engine; an int8 artefact is explained
            with the fp32 weights its report names).
        images: files, folders, globs or PIL images (each seen through predict's 1-crop view), or a
            (N, 3, H, W) float tensor of views already normalised (any size the network takes).
        target: ``"top1"`` (the class the network ranks first), a class index or name, or one
            per image.
        method: ``"hirescam"`` (each activation times its gradient) or ``"gradcam"`` (each channel
            weighted by its mean gradient): :data:`~inceptionv4.engines.options.METHODS`.
        layer: the stage the map is taken at, as ``feature_info`` names it (default: the last).
        weights: for a session opened from int8 artefacts, the fp32 weights instead of those the
            report names.
        device: where the maps are computed (default: the session's for torch, else the CPU).
        channels_last: run the copy of the network in channels_last.
        input_size: the side of the view (default: the session's or the network's).

    A file that cannot be read raises :class:`~inceptionv4.data.decode.DecodeError` naming it.
    """
    explainer = Explainer.of(model_or_weights, weights=weights, method=method, layer=layer, device=device,
                             channels_last=channels_last, input_size=input_size)  # fmt: skip
    if isinstance(images, torch.Tensor):
        heat, probs, classes = explainer.maps(images, target)
        box = (0, 0, images.shape[-1], images.shape[-2])
        return [explainer.explanation(f"<view {i}>", h.numpy(), p, c, box)
                for i, (h, p, c) in enumerate(zip(heat, probs, classes, strict=True))]  # fmt: skip
    return explainer(images, target, batch_size=batch_size)


def overlay_title(e: Explanation, caption: str | None = None) -> str:
    """The title an overlay carries: the class explained, its probability, the file, a caption."""
    from pathlib import PurePath

    name = PurePath(e.file).name if not e.file.startswith("<") else e.file
    return f"{e.name} {100 * e.prob:.1f}%  ({name})" + (f"  {caption}" if caption else "")


def _png_name(file: str, taken: set[str], rank: int | None = None) -> str:
    """A PNG file name for an input's overlay, unique in its folder (a rank first, if given)."""
    from pathlib import PurePath

    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in PurePath(file).stem)[:80] or "image"
    stem = f"{rank:04d}-{stem}" if rank is not None else stem
    name, n = f"{stem}.png", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.png"
    taken.add(name)
    return name


def write_overlays(explainer: Explainer, pictures: Iterable[tuple[str, Image.Image | str, Target, str | None]],
                   out_dir: str | os.PathLike, *, ranked: bool = False, batch_size: int = 8) -> Iterator[dict]:  # fmt: skip
    """Explain each ``(name, picture, target, caption)`` and write its overlay PNG into ``out_dir``
    (:func:`~inceptionv4.plots.save_overlay`: heatmap over the image, class and probability in the
    title): yield, in order, the explanation's :meth:`~Explanation.summary` with ``"overlay"`` (its
    path), or ``{"file", "error"}`` for a picture that cannot be read. ``picture`` is a decoded
    image or a file to read; ``batch_size`` are explained at a time; with ``ranked`` the PNGs are
    numbered in the order given."""
    from ..data.decode import load_rgb
    from ..plots import save_overlay

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    todo = iter(enumerate(pictures, 1))
    while chunk := list(itertools.islice(todo, batch_size)):
        records: dict[int, dict] = {}
        ready = []  # (rank, name, image, target, caption) of those that decode
        for rank, (name, picture, target, caption) in chunk:
            try:
                image = load_rgb(picture) if isinstance(picture, (str, os.PathLike)) else picture
                ready.append((rank, name, image, target, caption))
            except DecodeError as err:
                records[rank] = {"file": name, "error": str(err).removeprefix(f"{name}: ")}
        if ready:
            ranks, names, images, targets, captions = zip(*ready, strict=True)
            for rank, name, image, caption, e in zip(ranks, names, images, captions,
                                                     explainer.explain_images(list(images), list(names), targets),
                                                     strict=True):  # fmt: skip
                path = save_overlay(image, e.heatmap, e.box, overlay_title(e, caption),
                                    out / _png_name(name, taken, rank if ranked else None))  # fmt: skip
                records[rank] = {**e.summary(), "overlay": str(path)}
        yield from (records[rank] for rank, _ in chunk)


def explain_errors(explainer: Explainer, dataset, report: dict, out_dir: str | os.PathLike, *,
                   limit: int = 100) -> list[dict]:  # fmt: skip
    """Overlays of the images an :func:`~inceptionv4.infer.evaluate.evaluate_protocol` report
    got wrong, worst first: the most confident mistakes, each explaining the class predicted, its
    title naming the true one; ``limit`` at most. ``dataset`` is the one evaluated (each image is
    read again with its ``load``). Returns :func:`write_overlays`' records."""
    from ..scoring import map_labels

    keys = explainer.labels.keys
    mapping = dict(zip(report["classes"], map_labels(report["classes"], keys), strict=True))
    wrong = [e for e in report["images"] if keys[mapping[e["label"]]] != e["predicted"]]
    wrong.sort(key=lambda e: -e["prob"])

    def pictures():
        for entry in wrong[:limit]:
            try:
                image = dataset.load(entry["index"])[0]
            except DecodeError:  # changed since it was scored
                image = entry["file"]
            yield entry["file"], image, keys.index(entry["predicted"]), f"true: {entry['label']}"

    return list(write_overlays(explainer, pictures(), out_dir, ranked=True))


__all__ = ["METHODS", "DecodeError", "ExplainOptions", "Explainer", "Explanation", "crop_box", "explain",
           "explain_errors", "fp32_networks", "place_map", "upsample_map", "write_overlays"]
