"""Readers for the files each source ships, into plain ``name -> array`` mappings.

No reader executes anything from the file: HDF5 is read with h5py, TensorFlow checkpoints with
TensorFlow's own reader (an optional extra), PyTorch pickles with ``weights_only=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .io import read_tensors

KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")


def read_keras_h5(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays of a Keras weights file keyed ``layer/var`` (``conv2d_5/kernel``, ``predictions/bias``).

    Reads the legacy HDF5 layout (``layer_names`` / ``weight_names`` attributes: the released
    Keras Applications files and ``model.save('x.h5')``) and Keras 3's ``.weights.h5``
    (``layers/<name>/vars/<i>``, whose variables carry no names: they are named by layer kind).
    Either way the result lists the layers in the model's layer order.
    """
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a test dependency
        raise ImportError("reading Keras files needs h5py: pip install 'inceptionv4[keras]'") from None
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such weights file: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 file: {err}") from None
    with f:
        try:
            root = f.get("model_weights", f)
            if "layer_names" in root.attrs:
                return _read_legacy(root)
            if "layers" in f:
                return _read_keras3(f["layers"])
        except (KeyError, ValueError, TypeError, AttributeError, OSError) as err:  # a layer or weight it names is absent
            raise ValueError(f"{path} is a damaged Keras weights file: {type(err).__name__}: {err}") from None
    raise ValueError(f"{path} is an HDF5 file but not a Keras weights file (no layer_names, no layers/)")


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _read_legacy(root) -> dict[str, np.ndarray]:
    out = {}
    for layer in map(_text, root.attrs["layer_names"]):
        group = root[layer]
        for weight in map(_text, group.attrs.get("weight_names", [])):
            var = weight.split("/")[-1].split(":")[0]
            out[f"{layer}/{var}"] = np.asarray(group[weight])
    return out


_KERAS3_VARS = {
    "conv": ("kernel", "bias"),
    "bn": ("beta", "moving_mean", "moving_variance"),
    "bn_scaled": ("gamma", "beta", "moving_mean", "moving_variance"),
}


def _layer_position(name: str) -> tuple[str, int]:
    """Keras 3 keys its groups by class and position in model.layers: conv2d, conv2d_1, ..."""
    stem, _, number = name.rpartition("_")
    return (stem, int(number)) if number.isdigit() and stem else (name, 0)


def _read_keras3(layers) -> dict[str, np.ndarray]:
    out = {}
    for layer in sorted(layers, key=_layer_position):  # h5py lists them alphabetically
        vars_group = layers[layer].get("vars")
        if vars_group is None or len(vars_group) == 0:
            continue
        arrays = [np.asarray(vars_group[str(i)]) for i in range(len(vars_group))]
        if layer.startswith("batch_normalization") or layer.endswith("_bn"):
            names = _KERAS3_VARS["bn_scaled" if len(arrays) == 4 else "bn"]
        else:
            names = _KERAS3_VARS["conv"]
        for name, arr in zip(names, arrays, strict=False):
            out[f"{layer}/{name}"] = arr
    return out


def read_tf_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Variables of a TensorFlow checkpoint (the TF-slim releases), by name; needs TensorFlow."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up banner, not our output
    try:
        import tensorflow as tf
    except ImportError:
        raise ImportError(
            "reading TF-slim checkpoints needs TensorFlow's checkpoint reader: pip install 'inceptionv4[tf]' "
            "(or convert the checkpoint where TensorFlow is installed)"
        ) from None
    prefix = str(path)
    for suffix in (".index", ".meta"):
        prefix = prefix.removesuffix(suffix)
    if not Path(prefix + ".index").exists() and not Path(prefix).exists():
        raise FileNotFoundError(f"no TensorFlow checkpoint at {prefix} (expected {prefix}.index)")
    try:
        reader = tf.train.load_checkpoint(prefix)
        return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    except (tf.errors.OpError, ValueError) as err:  # not a checkpoint, or a damaged one
        first = (getattr(err, "message", None) or str(err)).strip().splitlines()[0]
        raise ValueError(f"{prefix} is not a readable TensorFlow checkpoint: {first}") from None


def is_tf_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` names a TensorFlow checkpoint (a prefix with an .index beside it)."""
    p = str(path)
    return p.endswith((".index", ".ckpt")) or Path(p + ".index").exists()


def read_source_file(path: str | Path, source: str | None = None) -> tuple[dict[str, object], dict[str, str]]:
    """(name -> tensor or array, metadata) of any supported weights file."""
    path = Path(path)
    if source == "keras" or (source is None and path.suffix in KERAS_SUFFIXES):
        return dict(read_keras_h5(path)), {"source": "keras"}
    if source == "tf-slim" or (source is None and _looks_like_tf(path)):
        return dict(read_tf_checkpoint(path)), {"source": "tf-slim"}
    return read_tensors(path)


def _looks_like_tf(path: Path) -> bool:
    """A TF checkpoint prefix or file; a ``.ckpt`` that is a zip is PyTorch's (Lightning's)."""
    import zipfile

    if path.suffix not in ("", ".index", ".ckpt") or not is_tf_checkpoint(path):
        return False
    return not (path.is_file() and zipfile.is_zipfile(path))


def detect_source(tensors: dict[str, object], path: object = "") -> str:
    """Which source wrote a state dict, from its names."""
    keys = set(tensors)
    if any(k.startswith(("stem.", "stage_a.")) for k in keys):
        return "inceptionv4"
    if "last_bn.weight" in keys or any(k.startswith("repeat_3.") for k in keys):
        return "facenet"
    if any(k.startswith(("features.", "conv2d_1a.", "mixed_5b.")) for k in keys):
        return "timm"  # Cadene's files use the same names
    if any(k.endswith("/kernel") for k in keys):
        return "keras"
    if any(k.startswith(("InceptionV4/", "InceptionResnetV2/")) for k in keys):
        return "tf-slim"
    raise ValueError(
        f"cannot tell which source wrote {path}: its names (e.g. {sorted(keys)[:3]}) are neither ours nor those "
        "of a timm, cadene, facenet, keras or tf-slim checkpoint; if it is one of those, say which "
        "(`inceptionv4 convert --from SOURCE`, source= in Python)"
    )


def to_tensors(arrays: dict[str, object]) -> dict[str, torch.Tensor]:
    """Arrays (numpy or torch) as contiguous torch tensors, names unchanged."""
    return {
        k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()
    }
