"""Converters: pure functions (no state, no I/O) from a source's state dict to ours.

Each source has an explicit table from its block prefixes to ours, plus a rename of the branch
attributes inside each block; leaf names (``conv.weight``, ``bn.running_mean`` ...) are shared.
The result is checked key by key and shape by shape against the model it is meant for.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from ..models import build_model, list_models
from ..models.layers import ConvBNReLU, ResidualInception

BlockTable = dict[str, tuple[str, dict[str, str]]]

# -- Inception-v4 (timm and Cadene share these names) ---------------------------------------------
_INCEPTION_A = {"branch0": "branch_1x1", "branch1": "branch_3x3", "branch2": "branch_3x3dbl", "branch3": "branch_pool"}
_INCEPTION_B = {"branch0": "branch_1x1", "branch1": "branch_7x7", "branch2": "branch_7x7dbl", "branch3": "branch_pool"}
_INCEPTION_C = {
    "branch0": "branch_1x1",
    "branch1_0": "branch_3x3_reduce",
    "branch1_1a": "branch_3x3_1x3",
    "branch1_1b": "branch_3x3_3x1",
    "branch2_0": "branch_3x3dbl_reduce",
    "branch2_1": "branch_3x3dbl_3x1",
    "branch2_2": "branch_3x3dbl_1x3",
    "branch2_3a": "branch_3x3dbl_split_1x3",
    "branch2_3b": "branch_3x3dbl_split_3x1",
    "branch3": "branch_pool",
}
_V4_FEATURES: list[tuple[str, dict[str, str]]] = [
    ("stem.conv1a", {}),
    ("stem.conv2a", {}),
    ("stem.conv2b", {}),
    ("stem.mixed_3a", {"conv": "branch_conv"}),
    ("stem.mixed_4a", {"branch0": "branch_3x3", "branch1": "branch_7x7"}),
    ("stem.mixed_5a", {"conv": "branch_conv"}),
    *[(f"stage_a.{i}", _INCEPTION_A) for i in range(4)],
    ("reduction_a", {"branch0": "branch_3x3", "branch1": "branch_3x3dbl"}),
    *[(f"stage_b.{i}", _INCEPTION_B) for i in range(7)],
    ("reduction_b", {"branch0": "branch_3x3", "branch1": "branch_7x7x3"}),
    *[(f"stage_c.{i}", _INCEPTION_C) for i in range(3)],
]
TIMM_INCEPTION_V4: BlockTable = {
    **{f"features.{i}": entry for i, entry in enumerate(_V4_FEATURES)},
    "last_linear": ("head.fc", {}),
}

# -- released Inception-ResNet-v2 (timm; Cadene names the classifier last_linear) -----------------
_BLOCK35 = {"branch0": "branch_1x1", "branch1": "branch_3x3", "branch2": "branch_3x3dbl", "conv2d": "expand"}
_BLOCK17 = {"branch0": "branch_1x1", "branch1": "branch_7x7", "conv2d": "expand"}
_BLOCK8 = {"branch0": "branch_1x1", "branch1": "branch_3x3", "conv2d": "expand"}
TIMM_INCEPTION_RESNET_V2: BlockTable = {
    "conv2d_1a": ("stem.conv1a", {}),
    "conv2d_2a": ("stem.conv2a", {}),
    "conv2d_2b": ("stem.conv2b", {}),
    "conv2d_3b": ("stem.conv3b", {}),
    "conv2d_4a": ("stem.conv4a", {}),
    "mixed_5b": ("stem.mixed_5b", _INCEPTION_A | {"branch1": "branch_5x5"}),
    **{f"repeat.{i}": (f"stage_a.{i}", _BLOCK35) for i in range(10)},
    "mixed_6a": ("reduction_a", {"branch0": "branch_3x3", "branch1": "branch_3x3dbl"}),
    **{f"repeat_1.{i}": (f"stage_b.{i}", _BLOCK17) for i in range(20)},
    "mixed_7a": ("reduction_b", {"branch0": "branch_3x3a", "branch1": "branch_3x3b", "branch2": "branch_3x3dbl"}),
    **{f"repeat_2.{i}": (f"stage_c.{i}", _BLOCK8) for i in range(9)},
    "block8": ("stage_c.9", _BLOCK8),
    "conv2d_7b": ("post", {}),
    "classif": ("head.fc", {}),
    "last_linear": ("head.fc", {}),
}


# -- facenet-pytorch InceptionResnetV1 ----------------------------------------------------------
FACENET_INCEPTION_RESNET_V1: BlockTable = {
    **{f"conv2d_{k}": (f"stem.conv{k}", {}) for k in ("1a", "2a", "2b", "3b", "4a", "4b")},
    **{f"repeat_1.{i}": (f"stage_a.{i}", _BLOCK35) for i in range(5)},
    "mixed_6a": ("reduction_a", {"branch0": "branch_3x3", "branch1": "branch_3x3dbl"}),
    **{f"repeat_2.{i}": (f"stage_b.{i}", _BLOCK17) for i in range(10)},
    "mixed_7a": ("reduction_b", {"branch0": "branch_3x3a", "branch1": "branch_3x3b", "branch2": "branch_3x3dbl"}),
    **{f"repeat_3.{i}": (f"stage_c.{i}", _BLOCK8) for i in range(5)},
    "block8": ("stage_c.5", _BLOCK8),
    "last_linear": ("head.proj", {}),
    "last_bn": ("head.bn", {}),
    "logits": ("head.fc", {}),
}

TABLES: dict[str, dict[str, BlockTable]] = {
    "timm": {"inception_v4": TIMM_INCEPTION_V4, "inception_resnet_v2": TIMM_INCEPTION_RESNET_V2},
    # Cadene's pretrainedmodels is where timm's ports came from: the same names.
    "cadene": {"inception_v4": TIMM_INCEPTION_V4, "inception_resnet_v2": TIMM_INCEPTION_RESNET_V2},
    "facenet": {"inception_resnet_v1": FACENET_INCEPTION_RESNET_V1},
}
ORDERED_SOURCES = {"keras": ("inception_resnet_v2",), "tf-slim": ("inception_v4", "inception_resnet_v2")}
SOURCES = (*TABLES, *ORDERED_SOURCES)


def rename_key(key: str, table: BlockTable) -> str | None:
    """Our name for a source key, or None if no block of the table owns it."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in table:
            ours, branches = table[prefix]
            rest = parts[cut:]
            if branches:
                if rest[0] not in branches:
                    return None
                rest = [branches[rest[0]], *rest[1:]]
            return ".".join([ours, *rest])
    return None


def _as_state_dict(obj: object) -> Mapping[str, object]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping) and len(obj) <= 4:
                return obj[wrapper]
        return obj
    raise TypeError(f"expected a state dict (a mapping of names to tensors) or a module, got {type(obj).__name__}")


def _tensor(value: object) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))


# -- sources whose names carry no structure we can rename: walk the network in execution order ---
def conv_units(model: nn.Module, input_size: int = 75) -> list[tuple[str, nn.Module]]:
    """Our conv layers in the order the forward pass runs them: (name, ConvBNReLU or expansion conv).

    Keras and TF-slim create their layers in the same order as the paper's code runs them, so this
    order (and not the order attributes were registered in) is what their weights line up with.
    """
    names = {m: n for n, m in model.named_modules()}
    order: list[tuple[str, nn.Module]] = []
    hooks = []
    for module in names:
        if isinstance(module, ConvBNReLU):
            hooks.append(module.register_forward_pre_hook(lambda m, _x: order.append((names[m], m))))
        elif isinstance(module, ResidualInception):
            hooks.append(module.expand.register_forward_pre_hook(lambda m, _x: order.append((names[m], m))))
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model.eval()(torch.zeros(1, model.in_chans, input_size, input_size, device=device))
    finally:
        for h in hooks:
            h.remove()
    return order


def _hwio(kernel: np.ndarray) -> torch.Tensor:
    """TensorFlow's (H, W, in, out) kernel as PyTorch's (out, in, H, W)."""
    return _tensor(np.transpose(np.asarray(kernel), (3, 2, 0, 1)))


def _bn(prefix: str, out: dict, beta, mean, var, gamma=None) -> None:
    out[f"{prefix}.bn.weight"] = _tensor(gamma) if gamma is not None else torch.ones(len(beta))
    out[f"{prefix}.bn.bias"] = _tensor(beta)
    out[f"{prefix}.bn.running_mean"] = _tensor(mean)
    out[f"{prefix}.bn.running_var"] = _tensor(var)
    out[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0)


def keras_order(units: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """Our convs in the order a Keras functional model lists its layers.

    Keras orders ``model.layers`` by depth (distance to the output), ties by traversal order. Inside
    a block every branch ends at the same concatenation, so a block's convs come deepest first:
    by how many convs still follow in their branch, then in branch order; the residual expansion
    comes after the branches, and blocks follow one another.
    """
    pattern = re.compile(r"^(stem\.\w+|stage_\w\.\d+|reduction_\w|post)(?:\.(\w+?))?(?:\.(\d+))?(?:\.\w+)?$")
    parsed = []
    for i, (name, module) in enumerate(units):
        m = pattern.match(name)
        if m is None:  # pragma: no cover - a new layout must extend the pattern
            raise AssertionError(f"cannot place {name} in a block")
        block, branch, idx = m.group(1), m.group(2) or "", int(m.group(3) or 0)
        parsed.append((block, branch, idx, i, name, module))
    block_rank = {b: n for n, b in enumerate(dict.fromkeys(p[0] for p in parsed))}

    def key(p):
        block, branch, idx, i, _, module = p
        expand = not isinstance(module, ConvBNReLU)
        convs_after = 0 if expand else sum(1 for q in parsed if q[:2] == (block, branch) and q[2] > idx)
        return (block_rank[block], expand, -convs_after, i)

    return [(p[4], p[5]) for p in sorted(parsed, key=key)]


def convert_keras(arrays: Mapping[str, object], model: str) -> dict[str, torch.Tensor]:
    """Keras Applications' InceptionResNetV2, as ``layer/var`` arrays in the file's layer order
    (see :func:`~inceptionv4.weights.readers.read_keras_h5`).

    Matched by layer order and shape alone, never by layer names: auto-generated names differ
    between Keras versions, and Keras 3 files rename even the named layers by their class.
    """
    layers: dict[str, dict[str, object]] = {}
    for key, value in arrays.items():
        layer, _, var = key.rpartition("/")
        layers.setdefault(layer, {})[var] = value
    convs = [n for n, v in layers.items() if "kernel" in v and np.ndim(v["kernel"]) == 4]
    bns = [n for n, v in layers.items() if "moving_mean" in v]
    dense = [n for n, v in layers.items() if "kernel" in v and np.ndim(v["kernel"]) == 2]
    with torch.device("meta"):
        net = build_model(model, num_classes=1)
    units = keras_order(conv_units(net))
    with_bn = [(n, m) for n, m in units if isinstance(m, ConvBNReLU)]
    if (len(convs), len(bns)) != (len(units), len(with_bn)) or len(dense) > 1:
        raise ValueError(
            f"expected {len(units)} convolutions and {len(with_bn)} batch norms of a Keras {model}, "
            f"found {len(convs)} convolutions, {len(bns)} batch norms and {len(dense)} dense layers"
        )
    out: dict[str, torch.Tensor] = {}
    for (name, module), layer in zip(units, convs, strict=True):
        weight = "conv.weight" if isinstance(module, ConvBNReLU) else "weight"
        out[f"{name}.{weight}"] = _hwio(layers[layer]["kernel"])
        if "bias" in layers[layer]:
            out[f"{name}.bias"] = _tensor(layers[layer]["bias"])
    for (name, _), layer in zip(with_bn, bns, strict=True):
        b = layers[layer]
        _bn(name, out, b["beta"], b["moving_mean"], b["moving_variance"], b.get("gamma"))
    if dense:
        out["head.fc.weight"] = _tensor(np.asarray(layers[dense[0]]["kernel"]).T)
        out["head.fc.bias"] = _tensor(layers[dense[0]]["bias"])
    return out


# TF-slim scope names, in the order the slim code creates them (inception_v4.py, inception_resnet_v2.py).
def _slim_v4_scopes() -> list[str]:
    a = ["Branch_0/Conv2d_0a_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_3x3", "Branch_2/Conv2d_0a_1x1",
         "Branch_2/Conv2d_0b_3x3", "Branch_2/Conv2d_0c_3x3", "Branch_3/Conv2d_0b_1x1"]  # fmt: skip
    b = ["Branch_0/Conv2d_0a_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_1x7", "Branch_1/Conv2d_0c_7x1",
         "Branch_2/Conv2d_0a_1x1", "Branch_2/Conv2d_0b_7x1", "Branch_2/Conv2d_0c_1x7", "Branch_2/Conv2d_0d_7x1",
         "Branch_2/Conv2d_0e_1x7", "Branch_3/Conv2d_0b_1x1"]  # fmt: skip
    c = ["Branch_0/Conv2d_0a_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_1x3", "Branch_1/Conv2d_0c_3x1",
         "Branch_2/Conv2d_0a_1x1", "Branch_2/Conv2d_0b_3x1", "Branch_2/Conv2d_0c_1x3", "Branch_2/Conv2d_0d_1x3",
         "Branch_2/Conv2d_0e_3x1", "Branch_3/Conv2d_0b_1x1"]  # fmt: skip
    scopes = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Mixed_3a/Branch_1/Conv2d_0a_3x3"]
    scopes += [f"Mixed_4a/{s}" for s in ("Branch_0/Conv2d_0a_1x1", "Branch_0/Conv2d_1a_3x3", "Branch_1/Conv2d_0a_1x1",
                                         "Branch_1/Conv2d_0b_1x7", "Branch_1/Conv2d_0c_7x1", "Branch_1/Conv2d_1a_3x3")]  # fmt: skip
    scopes += ["Mixed_5a/Branch_0/Conv2d_1a_3x3"]
    scopes += [f"Mixed_5{x}/{s}" for x in "bcde" for s in a]
    scopes += [f"Mixed_6a/{s}" for s in ("Branch_0/Conv2d_1a_3x3", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_3x3",
                                         "Branch_1/Conv2d_1a_3x3")]  # fmt: skip
    scopes += [f"Mixed_6{x}/{s}" for x in "bcdefgh" for s in b]
    scopes += [f"Mixed_7a/{s}" for s in ("Branch_0/Conv2d_0a_1x1", "Branch_0/Conv2d_1a_3x3", "Branch_1/Conv2d_0a_1x1",
                                         "Branch_1/Conv2d_0b_1x7", "Branch_1/Conv2d_0c_7x1", "Branch_1/Conv2d_1a_3x3")]  # fmt: skip
    scopes += [f"Mixed_7{x}/{s}" for x in "bcd" for s in c]
    return [f"InceptionV4/{s}" for s in scopes]


def _slim_irv2_scopes() -> list[str]:
    def block(name: str, branches: list[str]) -> list[str]:
        return [f"{name}/{s}" for s in branches] + [f"{name}/Conv2d_1x1"]

    b35 = ["Branch_0/Conv2d_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_3x3", "Branch_2/Conv2d_0a_1x1",
           "Branch_2/Conv2d_0b_3x3", "Branch_2/Conv2d_0c_3x3"]  # fmt: skip
    b17 = ["Branch_0/Conv2d_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_1x7", "Branch_1/Conv2d_0c_7x1"]
    b8 = ["Branch_0/Conv2d_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_1x3", "Branch_1/Conv2d_0c_3x1"]
    scopes = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
    scopes += [f"Mixed_5b/{s}" for s in ("Branch_0/Conv2d_1x1", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_5x5",
                                         "Branch_2/Conv2d_0a_1x1", "Branch_2/Conv2d_0b_3x3", "Branch_2/Conv2d_0c_3x3",
                                         "Branch_3/Conv2d_0b_1x1")]  # fmt: skip
    for i in range(1, 11):
        scopes += block(f"Repeat/block35_{i}", b35)
    scopes += [f"Mixed_6a/{s}" for s in ("Branch_0/Conv2d_1a_3x3", "Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_3x3",
                                         "Branch_1/Conv2d_1a_3x3")]  # fmt: skip
    for i in range(1, 21):
        scopes += block(f"Repeat_1/block17_{i}", b17)
    scopes += [f"Mixed_7a/{s}" for s in ("Branch_0/Conv2d_0a_1x1", "Branch_0/Conv2d_1a_3x3", "Branch_1/Conv2d_0a_1x1",
                                         "Branch_1/Conv2d_1a_3x3", "Branch_2/Conv2d_0a_1x1", "Branch_2/Conv2d_0b_3x3",
                                         "Branch_2/Conv2d_1a_3x3")]  # fmt: skip
    for i in range(1, 10):
        scopes += block(f"Repeat_2/block8_{i}", b8)
    scopes += block("Block8", b8) + ["Conv2d_7b_1x1"]
    return [f"InceptionResnetV2/{s}" for s in scopes]


SLIM_SCOPES: dict[str, Callable[[], list[str]]] = {
    "inception_v4": _slim_v4_scopes,
    "inception_resnet_v2": _slim_irv2_scopes,
}
SLIM_ROOT = {"inception_v4": "InceptionV4", "inception_resnet_v2": "InceptionResnetV2"}


def convert_tf_slim(arrays: Mapping[str, object], model: str) -> dict[str, torch.Tensor]:
    """TF-slim checkpoint variables (``scope/weights``, ``scope/BatchNorm/beta`` ...) into ours.

    Scopes are listed in slim's creation order and zipped with our convs in execution order;
    the auxiliary head (``AuxLogits``) and optimizer slots are ignored.
    """
    with torch.device("meta"):
        net = build_model(model, num_classes=1)
    units = conv_units(net)
    scopes = SLIM_SCOPES[model]()
    if len(scopes) != len(units):  # pragma: no cover - a table error, caught by the tests
        raise AssertionError(f"{len(scopes)} slim scopes for {len(units)} convs")
    out: dict[str, torch.Tensor] = {}
    missing = []
    for (name, module), scope in zip(units, scopes, strict=True):
        if f"{scope}/weights" not in arrays:
            missing.append(f"{scope}/weights")
            continue
        if isinstance(module, ConvBNReLU):
            out[f"{name}.conv.weight"] = _hwio(arrays[f"{scope}/weights"])
            bn = f"{scope}/BatchNorm"
            _bn(name, out, arrays[f"{bn}/beta"], arrays[f"{bn}/moving_mean"], arrays[f"{bn}/moving_variance"],
                arrays.get(f"{bn}/gamma"))  # fmt: skip
        else:
            out[f"{name}.weight"] = _hwio(arrays[f"{scope}/weights"])
            out[f"{name}.bias"] = _tensor(arrays[f"{scope}/biases"])
    if missing:
        raise ValueError(f"{len(missing)} variables of a TF-slim {model} are missing (e.g. {missing[:3]})")
    logits = f"{SLIM_ROOT[model]}/Logits/Logits"
    if f"{logits}/weights" in arrays:
        w = np.asarray(arrays[f"{logits}/weights"])  # (1, 1, C, classes) in slim's 1x1 conv form, or (C, classes)
        out["head.fc.weight"] = _tensor(w.reshape(w.shape[-2], w.shape[-1]).T)
        out["head.fc.bias"] = _tensor(arrays[f"{logits}/biases"])
    return out


ORDERED_CONVERTERS = {"keras": convert_keras, "tf-slim": convert_tf_slim}


def head_kwargs(sd: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """The head sizes a state dict in our names was saved with (classes, facenet's embedding)."""
    fc = sd.get("head.fc.weight")
    kwargs: dict[str, int] = {"num_classes": int(fc.shape[0]) if fc is not None else 0}
    if "head.proj.weight" in sd:
        kwargs["embedding_dim"] = int(sd["head.proj.weight"].shape[0])
    return kwargs


def identify_architecture(obj: object, *, source: str) -> list[str]:
    """The networks a checkpoint without our metadata fits, name for name and shape for shape.

    A raw state dict carries no architecture name; its names and shapes do. ``source`` is as
    for :func:`convert_state_dict`, plus "inceptionv4" for a state dict already in our names
    (``model.state_dict()`` saved by hand). Empty when nothing fits.
    """
    return list(fitting_conversions(obj, source=source))


def fitting_conversions(
    obj: object, *, source: str, keep_background: bool = False
) -> dict[str, dict[str, torch.Tensor]]:
    """:func:`identify_architecture` with each fit's state dict in our names, so that a caller who
    loads the one that fits does not convert it a second time."""
    if source == "inceptionv4":
        sd = dict(_as_state_dict(obj))
        kwargs = head_kwargs(sd)
        theirs = {k: tuple(v.shape) for k, v in sd.items()}
        fits = {}
        for name in list_models():
            with torch.device("meta"):
                ours = {k: tuple(v.shape) for k, v in build_model(name, **kwargs).state_dict().items()}
            if ours == theirs:
                fits[name] = sd
        return fits
    models_of_source = tuple(TABLES[source]) if source in TABLES else ORDERED_SOURCES.get(source, ())
    fits = {}
    for name in models_of_source:
        try:
            fits[name] = convert_state_dict(obj, source=source, model=name, keep_background=keep_background)
        except (ValueError, KeyError):
            continue
    return fits


def _drop_background(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """TensorFlow's 1001-class heads put a background class at 0: drop it to get ImageNet's 1000."""
    sd = dict(sd)
    sd["head.fc.weight"] = sd["head.fc.weight"][1:]
    sd["head.fc.bias"] = sd["head.fc.bias"][1:]
    return sd


def convert_state_dict(
    obj: object, *, source: str, model: str, keep_background: bool = False
) -> dict[str, torch.Tensor]:
    """Translate a ``source`` checkpoint of network ``model`` into this package's names.

    ``obj`` is a state dict (or module) for timm, cadene and facenet; a mapping of variable names
    to arrays for keras and tf-slim (as their readers return). 1001-class TensorFlow heads lose
    their background class unless ``keep_background``. Raises ValueError naming every source key it
    cannot place, every weight of ours left without a value, and every shape that differs, so a
    checkpoint of another architecture fails loudly.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known sources: {', '.join(SOURCES)}")
    models_of_source = tuple(TABLES[source]) if source in TABLES else ORDERED_SOURCES[source]
    if model not in models_of_source:
        if model not in list_models():
            raise ValueError(f"unknown model {model!r}; known models: {', '.join(list_models())}")
        raise ValueError(f"source {source!r} has no {model} checkpoints; it converts: {', '.join(models_of_source)}")
    sd = _as_state_dict(obj)
    unplaced = []
    out: dict[str, torch.Tensor] = {}
    if source in TABLES:
        for key, value in sd.items():
            new = rename_key(key, TABLES[source][model])
            if new is None:
                unplaced.append(key)
            else:
                out[new] = _tensor(value)
    else:
        out = ORDERED_CONVERTERS[source](sd, model)
    fc = out.get("head.fc.weight")
    if fc is not None and fc.shape[0] == 1001 and not keep_background:
        out = _drop_background(out)
    with torch.device("meta"):
        expected = build_model(model, **head_kwargs(out)).state_dict()
    missing = sorted(set(expected) - set(out))
    unplaced += sorted(set(out) - set(expected)) if source not in TABLES else []
    shapes = [
        f"{k}: {tuple(out[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in out and out[k].shape != v.shape
    ]
    if unplaced or missing or shapes:
        problems = []
        if unplaced:
            problems.append(f"{len(unplaced)} keys not in a {source} {model} (e.g. {unplaced[:5]})")
        if missing:
            problems.append(f"{len(missing)} weights of {model} have no value (e.g. {missing[:5]})")
        if shapes:
            problems.append(f"{len(shapes)} shapes differ (e.g. {shapes[:5]})")
        raise ValueError(f"this does not look like a {source} {model} checkpoint: " + "; ".join(problems))
    return {k: out[k].to(expected[k].dtype) for k in expected}
