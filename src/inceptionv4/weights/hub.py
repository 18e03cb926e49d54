"""``pretrained=`` by name: released weights from the Hugging Face Hub, or a local file.

Downloads go through huggingface_hub's cache (the optional extra ``hub``). Without a network,
a call fails at once -- no retry loop -- with the file to fetch and how to pass it locally.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from ..models.released import RELEASED_WEIGHTS, ReleasedWeights

#: The released checkpoints on the hub, by hub id (the rows of the released-weights table).
HUB_WEIGHTS: dict[str, ReleasedWeights] = {w.name: w for w in RELEASED_WEIGHTS if w.hub}


class PretrainedUnavailableError(RuntimeError):
    """Released weights that cannot be fetched here; the message says how to supply them."""


def _reachable(endpoint: str, timeout: float = 3.0) -> str | None:
    """None if the hub answers a TCP connect, else the reason."""
    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout):
            return None
    except OSError as err:
        return f"{url.hostname} is unreachable ({err})"


def download(repo_id: str) -> tuple[str, ReleasedWeights]:
    """The local path of a hub checkpoint (cached, or downloaded now), and what it is."""
    if repo_id not in HUB_WEIGHTS:
        known = ", ".join(sorted(HUB_WEIGHTS))
        raise ValueError(f"unknown pretrained weights {repo_id!r}; known: {known}, or a local file path")
    w = HUB_WEIGHTS[repo_id]
    try:
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    except ImportError:
        raise PretrainedUnavailableError(
            f"downloading {repo_id} needs huggingface_hub: pip install 'inceptionv4[hub]' (from a clone: "
            "pip install -e '.[hub]'); " + _manual(w)
        ) from None
    cached = try_to_load_from_cache(w.name, w.file)
    if isinstance(cached, str):
        return cached, w
    reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else _reachable(constants.ENDPOINT)
    if reason:
        raise PretrainedUnavailableError(f"cannot download {repo_id}: {reason}. " + _manual(w))
    try:
        return hf_hub_download(w.name, w.file), w
    except Exception as err:  # noqa: BLE001 - any hub failure gets the same way out
        raise PretrainedUnavailableError(f"cannot download {repo_id}: {err}. " + _manual(w)) from None


def _manual(w: ReleasedWeights) -> str:
    return (
        f"Fetch https://huggingface.co/{w.name}/resolve/main/{w.file} where you have a network "
        f"(or `hf download {w.name} {w.file}`) and pass the file: pretrained='/path/to/{w.file}' in "
        f"Python; on the command line --weights /path/to/{w.file} (train: --pretrained /path/to/{w.file})."
    )


def is_local(pretrained: str) -> bool:
    """A file path rather than a hub id: it exists, or it is spelled like a path."""
    if pretrained in HUB_WEIGHTS:
        return False
    suffixes = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".h5", ".hdf5", ".index")
    return os.path.exists(pretrained) or pretrained.startswith(("/", ".", "~")) or pretrained.endswith(suffixes)
