"""Reading weight files without ever executing what is inside them, and writing files atomically.

safetensors files are plain tensors. Pickle-based files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``)
are read only through ``torch.load(weights_only=True)``, which refuses any object that is not a
tensor or a plain container, so a file handed to us cannot run code.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import secrets
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..files import special_kind

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")


@contextmanager
def atomic_write(path: str | Path, *, durable: bool = False) -> Iterator[str]:
    """Yield a temp file's name beside ``path``; once the block has written it, rename it to ``path``.

    A failed write leaves ``path`` as it was and no temp file behind. The result takes the user's
    umask, as ``open()`` would: ``tempfile.mkstemp`` and safetensors both write private files (mode
    0600), and weights or checkpoints on a shared cluster must stay readable by whoever reads the
    results. ``durable`` also fsyncs the file and the folder, so the rename survives a power cut.
    """
    path = Path(path)
    fd, tmp = _new_temp(path)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)  # 0666 less the umask, set by the kernel
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode)
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_TEMP = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.tmp(\.[^.]+)?$")


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temp files :func:`atomic_write` left in ``folder`` when its writer was killed
    (a kill -9 mid-write leaves one; a checkpoint's is hundreds of MB), and return them. A temp
    file whose writing process is still alive on this machine is left alone."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _TEMP.match(entry.name)
        if m is None or not entry.is_file() or _alive(int(m.group(1))):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except FileNotFoundError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except PermissionError:  # another user's process
        return True
    except (ProcessLookupError, OverflowError):  # none, or a number no pid can be
        return False
    return True


def check_writable(path: str | Path) -> Path:
    """Make sure ``path`` can be written, now rather than at the end of a long run: its folder is
    made, a temp file is created there and removed; ``path`` itself is left as it is. OSError (or
    ValueError for a folder) naming ``path`` if not."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give a file name")
    fd, tmp = _new_temp(path)
    os.close(fd)
    os.unlink(tmp)
    return path


def _new_temp(path: Path) -> tuple[int, str]:
    """(descriptor, name) of a new empty file beside ``path`` (its folder made first), created as
    ``open()`` would create it; an OSError names ``path``, not the temp file."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path}: it is a folder; give a file name inside it")
    kind = special_kind(path)
    if kind is not None:  # the rename would replace /dev/null, a FIFO or a socket with a regular file
        raise OSError(errno.EEXIST, f"cannot write {path}: it is {kind}, not a regular file; give a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((a for a in reversed(path.parents) if a.exists() and not a.is_dir()), path.parent)
        raise NotADirectoryError(errno.ENOTDIR, f"cannot write {path}: {blocker} is a file, not a folder") from None
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror}") from None
    try:
        for _ in range(100):  # the suffix stays last: writers such as torch.export read it
            tmp = path.parent / f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}"
            try:
                return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, "no free temp name")
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror}") from None


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class UnsafeFileError(ValueError):
    """A pickle that holds more than tensors and plain containers: refused, never executed."""


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) of a safetensors or pickle-based checkpoint file, on the CPU."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such weights file: {path}")
    if path.is_dir():
        raise ValueError(f"expected a weights file, got a directory: {path}")
    kind, looks_like = sniff_format(path)
    if kind == "safetensors" or (path.suffix == ".safetensors" and kind is None):
        return _read_safetensors(path)
    if kind == "torch":
        return _read_pickle(path), {}
    artefact = int8_artefact_note(path)
    if artefact is not None:
        raise ValueError(artefact)
    hint = f" ({looks_like})" if looks_like else ""
    raise ValueError(f"{path} is not a weights file: neither safetensors nor a PyTorch checkpoint{hint}")


#: the metadata key `inceptionv4 quantize` writes into its int8 artefacts (ONNX metadata_props, OpenVINO rt_info)
_ARTEFACT_MARK = b"inceptionv4.int8"


def int8_artefact_note(path: Path) -> str | None:
    """What to say when ``path`` is an int8 artefact of ``inceptionv4 quantize`` given where fp32
    weights are wanted (train, export, convert, info): that it is for inference only, and the fp32
    weights its report (``<stem>.report.json`` beside it) names. None for any other file."""
    if path.suffix.lower() not in (".xml", ".onnx") or path.stat().st_size > 2**31:
        return None
    with path.open("rb") as f:
        if _ARTEFACT_MARK not in f.read():
            return None
    made_from = None
    try:
        made_from = json.loads(path.with_name(path.stem + ".report.json").read_text(encoding="utf-8")).get("weights")
    except (OSError, ValueError, AttributeError):
        pass
    source = f"the fp32 weights it was made from: {made_from}" if made_from else (
        "the fp32 weights it was made from (its report, <name>.report.json, names them for artefacts written from now on)")  # fmt: skip
    return (f"{path} is an int8 artefact of `inceptionv4 quantize`: it is for inference only (predict, eval, serve, "
            f"bench); train, export, convert and info take {source}")  # fmt: skip


#: Leading bytes of files people hand over by mistake, to say what was given instead.
_OTHER_FORMATS = {
    b"\xff\xd8\xff": "a JPEG image",
    b"\x89PNG": "a PNG image",
    b"\x89HDF": "an HDF5 (Keras) file: convert it first, `inceptionv4 convert --help`",
}


def check_not_input(out: str | Path, *inputs: str | Path) -> None:
    """ValueError where the output path ``out`` is one of the ``inputs`` (the same file by any
    name): writing it would destroy what is being read (``convert A A``)."""
    out = Path(out)
    for source in inputs:
        same = out.exists() and Path(source).exists() and os.path.samefile(out, source)
        if same or out.resolve() == Path(source).resolve():
            raise ValueError(f"{out} is also the input: write the output to another path")


def check_regular(path: str | Path) -> None:
    """ValueError for a weights path that exists but is not a regular file (a FIFO would block the
    reader forever, a device would be read without end), before anything opens it."""
    kind = special_kind(path)
    if kind is not None:
        raise ValueError(f"{path} is {kind}, not a weights file; not read")


def sniff_format(path: Path) -> tuple[str | None, str]:
    """(``"safetensors"``, ``"torch"`` (zip or legacy pickle) or None; what else it looks like), from the first bytes."""
    check_regular(path)
    with path.open("rb") as f:
        head = f.read(16)
    if not head:
        return None, "the file is empty"
    if head.startswith(b"PK\x03\x04") or (head[0] == 0x80 and 2 <= head[1] <= 5):
        return "torch", ""
    if len(head) >= 10 and head[8:10] == b'{"':  # 8-byte header length, then the JSON header
        return "safetensors", ""
    return None, next((f"it looks like {what}" for magic, what in _OTHER_FORMATS.items() if head.startswith(magic)), "")


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118 (safe_open is no dict)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then handles or refuses
            warnings.filterwarnings("ignore", message=".*pickle protocol.*", category=UserWarning)
            with open(path, "rb") as f:  # a stream: torch would hand a path named .safetensors to safetensors
                obj = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unsupported content"
        raise UnsafeFileError(
            f"refusing to load {path}: it holds Python objects other than tensors, and unpickling them "
            f"could run code ({first}). Convert it where you trust it, e.g. to .safetensors."
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {err}") from None
    except Exception as err:  # noqa: BLE001 -- a crafted pickle trips torch's safe unpickler (IndexError, ...)
        raise UnsafeFileError(
            f"refusing to load {path}: its pickle is malformed ({type(err).__name__}), as a crafted one is; "
            "nothing in it ran. Convert it where you trust it, e.g. to .safetensors."
        ) from None
    return _find_state_dict(obj, path)


def _find_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Unwrap the usual training-checkpoint containers ({'state_dict': ...}, {'model': ...})."""
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        if isinstance(obj, dict):
            inner = next(
                (obj[k] for k in ("state_dict", "model", "model_state", "ema") if isinstance(obj.get(k), dict)), None
            )
            if inner is not None:
                obj = inner
                continue
        break
    raise ValueError(f"{path} holds no state dict (a mapping of names to tensors), got {type(obj).__name__}")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read 1 MiB at a time: what tells two copies of a weights file apart."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def state_sha256(state: object) -> str:
    """SHA-256 of a state (a state dict, a checkpoint's whole state): every tensor's dtype, shape
    and bytes, every other value's repr, dict keys in sorted order. The same state gives the same
    digest in any process: a checkpoint's checksum, a run's weights digest, a build cache's key."""
    h = hashlib.sha256()
    _feed(h, state)
    return h.hexdigest()


def _feed(h, obj: object) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(b"{")
        for key in sorted(obj, key=repr):
            h.update(repr(key).encode())
            _feed(h, obj[key])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[" if isinstance(obj, list) else b"(")
        for item in obj:
            _feed(h, item)
        h.update(b"]")
    else:
        h.update(repr(obj).encode())
