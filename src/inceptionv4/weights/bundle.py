"""The native weights format: one ``.safetensors`` file that knows what it is.

Its metadata names the architecture and how to rebuild it, the classes (names, or a shipped
label set), the preprocessing, and where the weights came from, so that
``load_weights(path)`` alone gives back a ready model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from ..models import InceptionNet, Preprocessing, build_model, list_models
from .io import atomic_write, check_not_input, file_sha256

FORMAT = "inceptionv4.weights"
FORMAT_VERSION = "1"


def save_weights(
    model: InceptionNet,
    path: str | Path,
    *,
    class_names: list[str] | None = None,
    label_set: str | None = None,
    source: str | None = None,
    **meta: object,
) -> Path:
    """Write ``model`` as a self-describing safetensors bundle (atomically: temp file + rename).

    ``class_names`` (one per output) or ``label_set`` (e.g. "imagenet-1k") name the classes;
    ``source`` says where the weights came from (default: the model's ``weights_source``, e.g.
    the hub id it was loaded from); any other keyword is stored as JSON.
    """
    from safetensors.torch import save_file

    if not isinstance(model, InceptionNet) or not model.model_name:
        raise TypeError(f"expected a model built by inceptionv4.create_model, got {type(model).__name__}")
    if class_names is not None and len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {model.num_classes} classes")
    if class_names is None and label_set is None:
        class_names, label_set = model.class_names, model.label_set
    if label_set is not None:
        from .labels import class_names as names_of

        size = len(names_of(label_set))  # an unknown label set is a ValueError here too
        if size != model.num_classes:
            raise ValueError(f"label set {label_set!r} names {size} classes, but the model has {model.num_classes}: "
                             "give class_names for your classes, or a model with as many outputs")  # fmt: skip
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": model.model_name,
        "num_classes": str(model.num_classes),
        "global_pool": model.head.pool_type if model.head is not None else "avg",
        "features_only": json.dumps(list(model.out_indices) if model.features_only else None),
        "build_kwargs": json.dumps(model.build_kwargs),
        "preprocessing": json.dumps(model.pretrained_cfg.preprocessing.to_dict()),
        "class_names": json.dumps(class_names) if class_names is not None else "",
        "label_set": label_set or "",
        "source": model.weights_source if source is None else source,
        "meta": json.dumps(meta, default=str),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_write(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
        _sort_header_metadata(tmp)
    return path


def _sort_header_metadata(path: str) -> None:
    """Rewrite the safetensors header of ``path`` in place with its metadata keys sorted.

    safetensors writes the metadata in hash-map order, which changes from process to process, so
    the same weights gave files of different bytes and ``sha256sum`` could not check a resumed
    run. The header is JSON of a fixed length followed by the tensors; sorted, it is re-padded to
    the same length, so no tensor moves."""
    with open(path, "r+b") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
        if "__metadata__" in header:
            header = {"__metadata__": dict(sorted(header["__metadata__"].items())),
                      **{k: v for k, v in header.items() if k != "__metadata__"}}  # fmt: skip
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > length:
            raise RuntimeError(f"{path}: sorted safetensors header grew ({len(text)} > {length} bytes)")
        f.seek(8)
        f.write(text + b" " * (length - len(text)))


def read_bundle_metadata(path: str | Path) -> dict[str, object]:
    """The decoded metadata of a bundle (architecture, classes, preprocessing, source, ...)."""
    meta = _safetensors_meta(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an inceptionv4 weights bundle (no '{FORMAT}' metadata)")
    return _decode(meta, path)


def describe_bundle(path: str | Path) -> dict[str, object]:
    """What a bundle holds, for ``inceptionv4 info FILE``: its metadata (network, classes,
    preprocessing, source, build options) plus the file's size and sha256 (to tell copies apart)."""
    meta = read_bundle_metadata(path)
    return {"path": str(path), "bytes": Path(path).stat().st_size, "sha256": file_sha256(path), **meta}


def _safetensors_meta(path: str | Path) -> dict[str, str]:
    from safetensors import SafetensorError, safe_open

    from .io import int8_artefact_note, sniff_format, check_regular

    if not Path(path).exists():
        raise FileNotFoundError(f"no such weights file: {path}")
    check_regular(path)
    if Path(path).is_file() and (artefact := int8_artefact_note(Path(path))):
        raise ValueError(artefact)
    if Path(path).is_file() and sniff_format(Path(path))[0] == "torch":
        raise ValueError(f"{path} is a PyTorch checkpoint, not a safetensors bundle (predict and train read it as "
                         "it is; `inceptionv4 convert` makes a bundle of it)")  # fmt: skip
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None


class BundleError(ValueError):
    """A bundle whose metadata is missing, malformed or contradicts itself; the message names the
    file and the field."""


def _decode(meta: dict[str, str], path: object = "bundle") -> dict[str, object]:
    """A bundle's metadata, decoded and checked field by field before anything is built from it."""

    def bad(field: str, why: str) -> BundleError:
        return BundleError(f"{path}: metadata field {field!r} {why}")

    def parsed(field: str) -> object:
        text = meta.get(field)
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise bad(field, f"is not valid JSON ({text[:40]!r})") from None

    if meta.get("format_version") != FORMAT_VERSION:
        raise bad("format_version", f"is {meta.get('format_version')!r}; this version reads {FORMAT_VERSION!r}")
    out: dict[str, object] = dict(meta)
    for field in ("build_kwargs", "preprocessing", "meta", "features_only", "class_names"):
        out[field] = parsed(field)
    if meta.get("architecture") not in list_models():
        raise bad("architecture", f"names {meta.get('architecture')!r}, not one of {', '.join(list_models())}")
    text = meta.get("num_classes", "")
    if not (text.isascii() and text.isdigit() and len(text) <= 7):
        raise bad("num_classes", "is missing" if "num_classes" not in meta else f"is {text[:20]!r}, not a count")
    out["num_classes"] = n = int(text)
    if not isinstance(out["build_kwargs"] or {}, dict):
        raise bad("build_kwargs", "is not a JSON object")
    from ..models.layers import ClassifierHead

    if meta.get("global_pool", "avg") not in ClassifierHead.POOLS:
        raise bad("global_pool", f"is {meta['global_pool'][:20]!r}, not one of {ClassifierHead.POOLS}")
    features = out["features_only"]
    if features is not None and not (isinstance(features, list) and all(isinstance(i, int) for i in features)):
        raise bad("features_only", "is not a list of stage indices")
    names = out["class_names"]
    if names is not None and not (isinstance(names, list) and all(isinstance(c, str) for c in names)):
        raise bad("class_names", "is not a list of names")
    if names is not None and len(names) != n:
        raise bad("class_names", f"has {len(names)} names for {n} classes")
    if meta.get("label_set"):
        from .labels import class_names as names_of

        try:
            size = len(names_of(meta["label_set"]))
        except ValueError as err:
            raise bad("label_set", str(err)) from None
        if size != n:
            raise bad("label_set", f"{meta['label_set']!r} names {size} classes for {n}")
    pre = out["preprocessing"]
    if pre is not None:
        try:
            Preprocessing.from_dict(pre)
        except ValueError as err:
            raise bad("preprocessing", str(err)) from None
    return out


def load_weights(
    path: str | Path,
    model: InceptionNet | None = None,
    *,
    source: str | None = None,
    architecture: str | None = None,
    strict: bool = True,
    backbone_only: bool = False,
    keep_background: bool = False,
) -> InceptionNet:
    """Load weights from ``path`` into ``model``, or build the model the bundle describes.

    Args:
        path: a bundle written by :func:`save_weights`, or a checkpoint of a supported source
            (``.safetensors``, ``.pt/.pth/.bin`` read with ``weights_only=True``, Keras ``.h5``,
            a TF-slim checkpoint prefix).
        model: load into this model instead of building one.
        source: the source of a foreign checkpoint ("timm", "cadene", "facenet", "keras",
            "tf-slim"); detected from the names when None.
        architecture: the network of a foreign checkpoint when no ``model`` is given (when None,
            the one network its names and shapes fit, else an error); for a bundle, which names
            its own, a different name is an error rather than ignored.
        strict: every weight must be present and used.
        backbone_only: skip the classifier (fine-tuning with a fresh head of another size).
        keep_background: keep class 0 of 1001-class TensorFlow checkpoints.
    """
    from .readers import read_source_file

    tensors, meta = read_source_file(path, source)
    if meta.get("format") == FORMAT:
        arch, sd, kwargs, info = _bundle_half(tensors, meta, path, architecture)
    else:
        arch, sd, kwargs, info = _foreign_half(tensors, path, model.model_name if model is not None else architecture,
                                               source, keep_background)  # fmt: skip
    if model is None:
        try:
            model = build_model(arch, **kwargs)
            if info.get("features_only") is not None:
                model.as_features_only(tuple(info["features_only"]))
        except (TypeError, ValueError) as err:
            if meta.get("format") != FORMAT:
                raise
            raise BundleError(f"{path}: metadata fields build_kwargs / features_only do not build {arch} ({err})") from None
    elif not isinstance(model, InceptionNet) or model.model_name != arch:
        raise ValueError(
            f"{path} holds {arch} weights, but the model is "
            f"{model.model_name if isinstance(model, InceptionNet) else type(model).__name__}"
        )
    _load_into(model, sd, path, strict=strict, backbone_only=backbone_only)
    pre = info.get("preprocessing")
    if pre:  # the resolution and normalisation these weights were trained with
        model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg, preprocessing=Preprocessing.from_dict(pre))
    if not backbone_only:
        model.class_names = info.get("class_names")
        model.label_set = info.get("label_set") or None
    model.weights_source = str(info.get("source") or path)
    return model


def _bundle_half(tensors: dict, meta: dict, path: object, architecture: str | None) -> tuple[str, dict, dict, dict]:
    """(network, state dict, build options, metadata) of a bundle: its metadata, decoded and
    checked, names the network, which ``architecture`` (if given) must agree with."""
    info = _decode(meta, path)
    arch = str(info["architecture"])
    if architecture is not None and architecture != arch:  # e.g. `--model inception_v4` on an IR-v2 bundle
        raise ValueError(f"{path} holds {arch} weights, not {architecture}")
    kwargs = dict(info["build_kwargs"] or {})
    kwargs.update(num_classes=info["num_classes"], global_pool=info.get("global_pool") or "avg")
    return arch, tensors, kwargs, info


def _foreign_half(tensors: dict, path: object, arch: str | None, source: str | None,
                  keep_background: bool) -> tuple[str, dict, dict, dict]:  # fmt: skip
    """(network, state dict in our names, build options, metadata) of a foreign checkpoint: its
    source detected from its names unless given, and its network, when ``arch`` is None, the one
    whose names and shapes it fits (else an error that says which to give)."""
    from ..models.released import FACENET_PREPROCESSING
    from .convert import convert_state_dict, fitting_conversions, head_kwargs
    from .readers import detect_source

    if arch is not None and arch not in list_models():
        raise ValueError(f"unknown model {arch!r}; known models: {', '.join(list_models())}")
    src = source or detect_source(tensors, path)
    sd = None
    if arch is None:  # no metadata and no name given: its names and shapes tell
        converted = fitting_conversions(tensors, source=src, keep_background=keep_background)
        fits = list(converted)
        if not fits and src == "inceptionv4":  # a damaged or edited state dict: name what differs
            fits = _nearest_architecture(tensors)
        if len(fits) != 1:
            kind = "a state dict in our names" if src == "inceptionv4" else f"a {src} checkpoint"
            what = f"fits {' and '.join(fits)}" if fits else "fits none of the networks"
            raise ValueError(
                f"{path} is {kind} without a network name, and {what}: say which network it is "
                f"(--model on the command line, architecture= in Python; one of {', '.join(list_models())})"
            )
        arch = fits[0]
        sd = converted.get(arch)  # converted once, while its fit was checked
    if sd is None:
        sd = tensors if src == "inceptionv4" else convert_state_dict(tensors, source=src, model=arch,
                                                                         keep_background=keep_background)  # fmt: skip
    kwargs = head_kwargs(sd)  # the classes, and facenet's embedding head
    info = {"class_names": None, "label_set": "imagenet-1k" if kwargs["num_classes"] == 1000 and src != "facenet"
            else "", "source": f"{src}: {path}"}  # fmt: skip
    if src == "facenet":  # 160 px faces, (x - 127.5) / 128: what facenet's networks were trained on
        info["preprocessing"] = FACENET_PREPROCESSING.to_dict()
    return arch, sd, kwargs, info


def _best_fit(sd: dict[str, torch.Tensor], *, shapes: bool) -> tuple[str, float]:
    """(the network whose own state dict holds most of ``sd``'s tensors, that share): by name, or
    by name and shape; the heads are left out of the shapes, as the class count may differ."""
    wanted = {k: tuple(v.shape) for k, v in sd.items() if not (shapes and k.startswith(("head.", "aux_head.")))}
    best, best_share = "", -1.0
    for name in list_models():
        with torch.device("meta"):
            ours = {k: tuple(v.shape) for k, v in build_model(name).state_dict().items()}
        share = sum(k in ours and (not shapes or ours[k] == shape) for k, shape in wanted.items()) / max(len(wanted), 1)
        if share > best_share:
            best, best_share = name, share
    return best, best_share


def _nearest_architecture(sd: dict[str, torch.Tensor]) -> list[str]:
    """The network holding most of a state dict's names (to say what differs), if one holds half."""
    best, share = _best_fit(sd, shapes=False)
    return [best] if share >= 0.5 else []


def _looks_like(sd: dict[str, torch.Tensor]) -> str | None:
    """The network with the names and shapes of at least 90% of ``sd``'s tensors outside the heads,
    or None: what to suggest when weights are loaded into the wrong network."""
    best, share = _best_fit(sd, shapes=True)
    return best if share >= 0.9 else None


def _load_into(
    model: InceptionNet, sd: dict[str, torch.Tensor], path: object, *, strict: bool, backbone_only: bool
) -> None:
    fc = sd.get("head.fc.weight")
    theirs = int(fc.shape[0]) if fc is not None else 0
    if backbone_only:
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    elif theirs != model.num_classes and model.head is not None:
        raise ValueError(
            f"{path} has {theirs} classes but the model has {model.num_classes}; "
            "pass backbone_only=True to load everything but the classifier"
        )
    ours = model.state_dict()
    if model.features_only:  # a backbone takes what it has of a full network
        sd = {k: v for k, v in sd.items() if k in ours}
    # a fresh classifier (backbone_only) and an auxiliary head the checkpoint lacks start from scratch
    fresh = ("head.", "aux_head.") if backbone_only else ("aux_head.",)
    wanted = {k for k in ours if not (k.startswith(fresh) and k not in sd)}
    missing = sorted(wanted - set(sd))
    unexpected = sorted(set(sd) - set(ours))
    shapes = [
        f"{k}: {tuple(v.shape)} vs {tuple(ours[k].shape)}"
        for k, v in sd.items()
        if k in ours and v.shape != ours[k].shape
    ]
    if shapes or (strict and (missing or unexpected)):
        problems = [f"{len(missing)} missing (e.g. {missing[:3]})"] if missing else []
        problems += [f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"] if unexpected else []
        problems += [f"{len(shapes)} of another shape (e.g. {shapes[:3]})"] if shapes else []
        other = _looks_like(sd)
        said = f"these weights look like {other}: give --model {other}, or no --model. " if other not in (None, model.model_name) else ""
        raise ValueError(f"{path} does not fit {model.model_name}: {said}" + "; ".join(problems))
    check_values(sd, path, {k: v.dtype for k, v in ours.items()})
    with torch.no_grad():
        model.load_state_dict(sd, strict=False)


def check_values(sd: dict[str, torch.Tensor], path: object, dtypes: dict[str, torch.dtype] | None = None) -> None:
    """ValueError naming the first tensor a network must not run with: NaN or infinite values, a
    negative BatchNorm variance, an empty tensor, or integers or booleans where ``dtypes`` (the
    network's own) has floats. A classifier full of NaN answered "0 nan%" with exit 0 (issue 34)."""
    for name, t in sd.items():
        want = (dtypes or {}).get(name)
        if want is not None and want.is_floating_point and not t.is_floating_point():
            raise ValueError(f"{path}: tensor {name} holds {str(t.dtype).removeprefix('torch.')} values where the "
                             "network has floats: damaged or not these weights")  # fmt: skip
        if t.numel() == 0 and name != "num_batches_tracked":
            raise ValueError(f"{path}: tensor {name} is empty (shape {tuple(t.shape)})")
        if not t.is_floating_point():
            continue
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise ValueError(f"{path}: tensor {name} holds {bad:,} NaN or infinite value(s) of {t.numel():,}: "
                             "damaged weights, refused")  # fmt: skip
        if name.endswith("running_var") and bool((t < 0).any()):
            raise ValueError(f"{path}: tensor {name} holds negative variances: damaged weights, refused")


def convert_file(
    src: str | Path, dst: str | Path, *, source: str | None, model: str | None = None, keep_background: bool = False
) -> Path:
    """Convert a released checkpoint of any supported source into a bundle (``inceptionv4 convert``).

    ``model`` names the network; when None, the one network the checkpoint's names and shapes
    fit. A file that is not there is a FileNotFoundError that says where each source publishes its
    checkpoints."""
    from .labels import class_names

    check_not_input(dst, src)
    try:
        net = load_weights(src, architecture=model, source=source, keep_background=keep_background)
    except FileNotFoundError as err:
        from ..models.released import where_to_fetch
        from .convert import SOURCES

        hints = "; ".join(f"{s}: {where_to_fetch(s)}" for s in ((source,) if source in SOURCES else SOURCES))
        raise FileNotFoundError(f"{err.args[0] if err.args else err}. Released checkpoints: {hints}") from None
    names = None
    if net.num_classes == 1000 and source != "facenet":
        label_set = "imagenet-1k"
    elif net.num_classes == 1001:
        label_set, names = None, ["background", *class_names("imagenet-1k")]
    else:
        label_set = None
    return save_weights(
        net, dst, class_names=names, label_set=label_set, source=f"{source}: {Path(src).name}" if source else f"{Path(src).name} (its source told from its tensor names)"
    )
