"""Converters: pure functions from a source's state dict to ours (STYLE.md, habit 6).

Each source has an explicit table from its block prefixes to ours, plus a rename of the branch
attributes inside each block; leaf names (``conv.weight``, ``bn.running_mean`` ...) are shared.
The result is checked key by key and shape by shape against the model it is meant for.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..models import create_model, list_models

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

TABLES: dict[str, dict[str, BlockTable]] = {
    "timm": {"inception_v4": TIMM_INCEPTION_V4, "inception_resnet_v2": TIMM_INCEPTION_RESNET_V2},
}
SOURCES = tuple(TABLES)


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


def _as_state_dict(obj: object) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping) and len(obj) <= 4:
                return obj[wrapper]
        return obj
    raise TypeError(f"expected a state dict (a mapping of names to tensors) or a module, got {type(obj).__name__}")


def convert_state_dict(obj: object, *, source: str, model: str) -> dict[str, torch.Tensor]:
    """Translate a ``source`` state dict of network ``model`` into this package's names.

    Raises ValueError naming every source key it cannot place, every key of ours left without a
    value, and every shape that differs, so a checkpoint of another architecture fails loudly.
    """
    if source not in TABLES:
        raise ValueError(f"unknown source {source!r}; known sources: {', '.join(SOURCES)}")
    if model not in TABLES[source]:
        known = ", ".join(TABLES[source]) or "none"
        if model not in list_models():
            raise ValueError(f"unknown model {model!r}; known models: {', '.join(list_models())}")
        raise ValueError(f"source {source!r} has no {model} checkpoints; it converts: {known}")
    table = TABLES[source][model]
    sd = _as_state_dict(obj)
    out: dict[str, torch.Tensor] = {}
    unplaced = []
    for key, value in sd.items():
        new = rename_key(key, table)
        if new is None:
            unplaced.append(key)
        else:
            out[new] = value
    fc = out.get("head.fc.weight")
    num_classes = int(fc.shape[0]) if fc is not None else 0
    with torch.device("meta"):
        expected = create_model(model, num_classes=num_classes).state_dict()
    missing = sorted(set(expected) - set(out))
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
    return out
