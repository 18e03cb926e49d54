"""WebDataset shards: tar files of ``<key>.<image ext>``, ``<key>.cls`` and ``<key>.json`` members,
the layout timm reads and ImageNet-1k is published in.

- :func:`write_shards` writes them from an image folder or list file (``inceptionv4 shard``), with
  ``index.json`` beside them (members, offsets, classes), so that reading does not rescan the tars.
- :class:`ShardDataset` reads them as a dataset like any other: every sample by its offset in its
  tar, decoded and augmented by the same code as a file, bad members skipped and counted.
- :class:`ShardBatches` orders a training epoch as a stream: shards split by rank and, within a
  rank, by loader worker, each stream through a shuffle buffer; a pure function of (seed, epoch),
  so a resumed run lands on the same sample.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .datasets import ImageDataset, check_labels, seed_of
from .decode import IMAGE_SUFFIXES, DecodeError, decode_rgb

log = logging.getLogger(__name__)

INDEX = "index.json"
_IMAGE_EXTS = tuple(s.lstrip(".") for s in IMAGE_SUFFIXES)
_JPEG_EXTS = ("jpg", "jpeg")


def expand_shards(pattern: str | os.PathLike) -> list[Path]:
    """The tar files a pattern names: braces (``train-{000000..000146}.tar``, as WebDataset writes
    them), globs, a folder (every ``.tar`` in it) or one file; sorted. ValueError if none exists."""
    try:
        import braceexpand
    except ImportError:
        raise ImportError("dataset 'wds' needs WebDataset: pip install 'inceptionv4[wds]'") from None

    text = os.fspath(pattern)
    if Path(text).is_dir():
        found = sorted(Path(text).glob("*.tar"))
    else:
        found = []
        for part in braceexpand.braceexpand(text):
            found += [Path(p) for p in sorted(glob.glob(part))] if any(c in part for c in "*?[") else [Path(part)]
        missing = [p for p in found if not p.is_file()]
        if missing and len(missing) < len(found):
            raise ValueError(f"{text}: {len(missing)} of {len(found)} shards are missing (e.g. {missing[0]})")
        found = [p for p in found if p.is_file()]
    if not found:
        raise ValueError(f"no shard matches {text!r} (a pattern such as 'shards/train-{{000000..000009}}.tar', "
                         "a glob, or a folder of .tar files)")  # fmt: skip
    return sorted(dict.fromkeys(found))


@dataclass(frozen=True)
class Member:
    """Where one sample's image is: shard number, byte offset and size in the tar, key, extension."""

    shard: int
    offset: int
    size: int
    key: str
    ext: str


class ShardDataset(ImageDataset):
    """The samples of WebDataset shards, read by offset: ``load(i)`` as any dataset's.

    Labels are each sample's ``.cls`` (an integer); class names come from ``index.json`` or the
    samples' ``.json`` ("class"), else are the indices. A tar damaged part-way is read up to the
    damage, with one warning naming the shard and how many samples were lost from view."""

    def __init__(self, pattern: str | os.PathLike, classes: list[str] | None = None, *, labelled: bool = True) -> None:
        """``labelled=False`` (inference: embed, predict) also takes samples without a ``.cls``,
        labelled -1."""
        self.pattern = os.fspath(pattern)
        self.shards = expand_shards(pattern)
        self.samples: list[tuple[Member, int]] = []
        self.shard_sizes: list[int] = []
        names: dict[int, str] = {}
        indexes = {}
        for i, shard in enumerate(self.shards):
            entry = _indexed(shard, indexes)
            if entry is None:
                entry = _scan(shard, labelled)
            for key, ext, offset, size, label, name in entry["samples"]:
                self.samples.append((Member(i, offset, size, key, ext), label))
                if name is not None:
                    names.setdefault(label, name)
            self.shard_sizes.append(len(entry["samples"]))
            for label, name in entry.get("classes", {}).items():
                names.setdefault(int(label), name)
        self._files: dict[int, object] = {}
        self._pid = os.getpid()
        if not labelled:
            if not self.samples:
                raise ValueError(f"{self.pattern}: the shards hold no images")
            self.classes = list(classes) if classes is not None else [names[c] for c in sorted(names)]
            return
        if not self.samples:
            raise ValueError(f"{self.pattern}: the shards hold no samples with an image and a .cls label")
        check_labels([label for _, label in self.samples] + list(names), self.pattern)
        top = max(max(label for _, label in self.samples), max(names, default=0))
        found = [names.get(c, str(c)) for c in range(top + 1)]
        if classes is not None and names and found != list(classes)[: len(found)]:
            # named classes of another numbering (validation shards written with fewer classes): by name
            unknown = sorted(set(found) - set(classes))
            if unknown:
                raise ValueError(f"{self.pattern}: classes {unknown[:3]} are not among the training classes")
            where = {c: i for i, c in enumerate(classes)}
            self.samples = [(m, where[found[label]]) for m, label in self.samples]
        self.classes = list(classes) if classes is not None else found
        check_labels([label for _, label in self.samples], self.pattern, len(self.classes))

    def __getstate__(self) -> dict:
        """Pickled (to a Ray task, a spawned worker) without this process's open shard files."""
        return {**self.__dict__, "_files": {}, "_pid": None}

    def read_sample(self, index: int) -> tuple[bytes, str, bool]:
        """(the image member's bytes, its name, whether it is a JPEG) of sample ``index``."""
        member = self.samples[index][0]
        if self._pid != os.getpid():  # a loader worker: its own file handles, not the parent's
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(member.shard)
        try:
            if f is None:
                f = self._files[member.shard] = open(self.shards[member.shard], "rb")  # noqa: SIM115 - kept open
            f.seek(member.offset)
            data = f.read(member.size)
        except OSError as err:
            raise DecodeError(f"{self.name_of(index)}: cannot be read ({err.strerror or err})") from None
        if len(data) != member.size:
            raise DecodeError(f"{self.name_of(index)}: the shard ends inside this member (truncated)")
        return data, self.name_of(index), member.ext in _JPEG_EXTS

    def load(self, index: int, reduce_to: int | None = None) -> tuple[Image.Image, int]:
        data, name, _ = self.read_sample(index)
        return decode_rgb(data, name, reduce_to=reduce_to), self.samples[index][1]

    def name_of(self, index: int) -> str:
        member = self.samples[index][0]
        return f"{self.shards[member.shard].name}:{member.key}.{member.ext}"


def _indexed(shard: Path, cache: dict) -> dict | None:
    """The entry of ``shard`` in the index.json beside it, if it is there and the size still matches."""
    folder = shard.parent
    if folder not in cache:
        try:
            cache[folder] = json.loads((folder / INDEX).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cache[folder] = None
    index = cache[folder]
    if not isinstance(index, dict):
        return None
    entry = index.get("shards", {}).get(shard.name)
    if not isinstance(entry, dict) or entry.get("bytes") != shard.stat().st_size:
        return None
    return {"samples": [tuple(s) for s in entry["samples"]], "classes": index.get("classes", {})}


def _scan(shard: Path, labelled: bool = True) -> dict:
    """Members of one tar from its headers: (key, ext, offset, size, label, class name) per sample
    that has an image and a ``.cls`` (or, unless ``labelled``, an image alone: label -1)."""
    groups: dict[str, dict] = {}
    order: list[str] = []
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                base, ext = _split(info.name)
                if base is None:
                    continue
                if base not in groups:
                    groups[base] = {}
                    order.append(base)
                groups[base][ext.lower()] = info
                if ext.lower() in ("cls", "json") and info.size <= 65536:
                    groups[base][ext.lower() + ":data"] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        log.warning("shard %s is damaged after %d samples (%s): the rest of it is skipped", shard, len(order), err)
    samples = []
    unlabeled = 0
    for base in order:
        g = groups[base]
        image = next((e for e in g if e in _IMAGE_EXTS), None)
        label = _label(g.get("cls:data"))
        if image is None or (label is None and labelled):
            unlabeled += 1
            continue
        label = -1 if label is None else label
        name = None
        if g.get("json:data"):
            try:
                name = json.loads(g["json:data"]).get("class")
            except (ValueError, AttributeError):
                name = None
        info = g[image]
        samples.append((base.rsplit("/", 1)[-1], image, info.offset_data, info.size, label, name))
    if unlabeled:
        what = "an image or an integer .cls label" if labelled else "an image"
        log.warning("shard %s: %d sample(s) without %s skipped", shard, unlabeled, what)
    return {"samples": samples}


def _split(name: str) -> tuple[str | None, str]:
    """WebDataset's key and extension: everything up to the first dot of the last path part."""
    head, _, last = name.rpartition("/")
    stem, dot, ext = last.partition(".")
    if not dot or not stem:
        return None, ""
    return (f"{head}/{stem}" if head else stem), ext


def _label(data: bytes | None) -> int | None:
    try:
        text = data.decode("ascii").strip() if data is not None else ""
    except UnicodeDecodeError:
        return None
    return int(text) if text.isdigit() else None


def _size_bytes(text: str | int) -> int:
    """'500MB', '2GB', '100k' or a number of bytes."""
    if isinstance(text, int):
        return text
    units = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9}
    s = str(text).strip().lower()
    number = s.rstrip("kmgb")
    try:
        value = float(number) * units[s[len(number) :]]
    except (ValueError, KeyError):
        raise ValueError(f"shard size {text!r} is not a size such as 500MB, 2GB or 100000") from None
    if not 1000 <= value < 2**50:
        raise ValueError(f"shard size {text!r} must be at least 1 kB")
    return int(value)


def write_shards(source: str | os.PathLike, out_dir: str | os.PathLike, *, shard_size: str | int = "500MB",
                 prefix: str = "shard", seed: int = 0, val_fraction: float = 0.0, progress: bool = False) -> dict:  # fmt: skip
    """Write the images of ``source`` (a folder of class folders, or a list file of ``<path> <label>``
    lines) as WebDataset shards ``out_dir/<prefix>-000000.tar`` ..., each file at most ``shard_size``
    bytes on disk (a single sample larger than that gets a shard of its own).

    With ``val_fraction``, that fraction of each class is held out as :func:`~inceptionv4.data.
    datasets.holdout_split` holds it out (by file name, as training from a folder does), and the
    two parts go to ``out_dir/train`` and ``out_dir/val``, each with its own index: what
    ``train --dataset wds`` takes as ``--data`` and ``--val-data``.

    The samples are written in an order shuffled by ``seed``, so that every shard mixes the
    classes (a stream reads a few shards at a time). Each sample is the file's bytes as they are
    (``<key>.<ext>``), its class index (``.cls``) and ``.json`` with the class name and the source
    path. ``index.json`` lists every shard's samples and the classes. An unreadable source file is
    skipped and counted. Returns ``{"shards", "samples", "skipped", "classes", "index"}``, and with
    ``val_fraction`` the same for the held-out part under ``"val"``.
    """
    try:
        import webdataset  # noqa: F401 (said here, before any folder is made)
    except ImportError:
        raise ImportError("writing shards needs WebDataset: pip install 'inceptionv4[wds]'") from None

    from .datasets import ImageFolder, ListFile, holdout_split

    if not prefix or prefix in (".", "..") or "/" in prefix or os.sep in prefix or "\0" in prefix:
        raise ValueError(f"prefix {prefix!r} must be a plain file-name stem (no folders): the shards stay in {out_dir}")
    if not os.fspath(out_dir).strip():
        raise ValueError("the output folder is empty: give a folder for the shards")
    source = Path(source)
    dataset = ListFile(source) if source.is_file() else ImageFolder(source)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder")
    limit = _size_bytes(shard_size)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    parts = {"": dataset}
    if val_fraction:
        train, val = holdout_split(dataset, val_fraction)
        parts = {"train": train, "val": val}
    for name in parts:
        if list((out / name).glob(f"{prefix}-*.tar")):
            raise FileExistsError(f"{out / name} already holds {prefix}-*.tar shards: give an empty folder or another prefix")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset), desc="shard", unit="img")
    written = {name: _write_part(part, out / name, limit, prefix, seed, bar) for name, part in parts.items()}
    if bar is not None:
        bar.close()
    if not val_fraction:
        return written[""]
    return {**written["train"], "val": written["val"]}


#: a tar file ends with two zero blocks and is padded to a record of 20 blocks
_TAR_END, _TAR_RECORD = 1024, 10240


def _tar_bytes(sample: dict) -> int:
    """The bytes ``sample`` takes in a shard, headers (PAX ones included) and block padding with
    it, measured by writing it as the shard writer does, to memory."""
    import io

    import webdataset as wds

    scratch = wds.TarWriter(io.BytesIO(), mtime=1.0)
    scratch.write(sample)
    size = scratch.tarstream.offset
    scratch.close()
    return size


def _write_part(dataset, out: Path, limit: int, prefix: str, seed: int, bar) -> dict:
    """One folder of shards of ``dataset`` (see :func:`write_shards`): a shard is closed before the
    sample that would take its file past ``limit`` bytes, counted as tar lays it out."""
    import webdataset as wds

    from .decode import read_bytes

    out.mkdir(parents=True, exist_ok=True)
    skipped: list[str] = []
    written, in_shard = 0, 0
    with wds.ShardWriter(str(out / f"{prefix}-%06d.tar"), maxsize=float("inf"), maxcount=10**12, verbose=0,
                         mtime=1.0) as sink:  # fmt: skip
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
        for i in order:
            path, label = dataset.samples[i]
            try:
                data = read_bytes(path)
            except DecodeError as err:
                skipped.append(str(err))
            else:
                ext = Path(path).suffix.lower().lstrip(".") or "img"
                ext = "jpg" if ext == "jpeg" else ext
                sample = {"__key__": f"{written:09d}", ext: data, "cls": str(label).encode(),
                          "json": json.dumps({"class": dataset.classes[label], "source": str(path)}).encode()}  # fmt: skip
                size = _tar_bytes(sample)
                if in_shard and -(-(in_shard + size + _TAR_END) // _TAR_RECORD) * _TAR_RECORD > limit:
                    sink.next_stream()
                    in_shard = 0
                sink.write(sample)
                in_shard += size
                written += 1
            if bar is not None:
                bar.update(1)
    shards = sorted(out.glob(f"{prefix}-*.tar"))
    index = {"format": "inceptionv4.shards", "classes": dict(enumerate(dataset.classes)), "shards": {}}
    for shard in shards:
        index["shards"][shard.name] = {"bytes": shard.stat().st_size, "samples": _scan(shard)["samples"]}
    (out / INDEX).write_text(json.dumps(index), encoding="utf-8")
    return {"shards": [str(s) for s in shards], "samples": written, "skipped": skipped,
            "classes": list(dataset.classes), "index": str(out / INDEX)}  # fmt: skip


class ShardBatches(torch.utils.data.Sampler):
    """Micro-batches of sample indices for this rank, step by step from ``start_step`` of an epoch,
    read as a stream: the shards, in an order fixed by (seed, epoch), are dealt to the ranks
    (shard i to rank i % world) and, within a rank, to ``workers`` streams (one per loader
    worker: a DataLoader gives micro-batch k to worker k % workers, and micro-batch k is cut from
    stream k % workers, so each worker reads only its own shards). Each stream passes through a
    shuffle buffer of ``buffer`` samples. A worker's stream that runs out takes the rest of the
    others' at the epoch's end; a rank whose share runs out before the epoch's last step starts it
    over, so every rank takes the same number of steps. Shards of equal size (as
    :func:`write_shards` writes them) give every sample once per epoch.
    """

    def __init__(self, dataset: ShardDataset, batch: int, *, seed: int, epoch: int, accum: int, world,
                 start_step: int = 0, workers: int = 0, buffer: int = 1000) -> None:  # fmt: skip
        self.dataset, self.batch, self.seed, self.epoch = dataset, batch, seed, epoch
        self.accum, self.world, self.start_step, self.buffer = accum, world, start_step, max(1, buffer)
        self.per_rank = batch // accum // world.size
        self.steps = len(dataset) // batch
        self.workers = max(1, workers)

    def streams(self) -> list[list[int]]:
        """This rank's sample streams, one per worker (the shards' samples in buffered order)."""
        starts = [0]
        for size in self.dataset.shard_sizes:
            starts.append(starts[-1] + size)
        order = torch.randperm(len(self.dataset.shard_sizes),
                               generator=torch.Generator().manual_seed(seed_of(self.seed, self.epoch, -1))).tolist()  # fmt: skip
        mine = order[self.world.rank :: self.world.size]
        lanes = min(self.workers, max(1, len(mine)))
        return [self._buffered([j for s in mine[v::lanes] for j in range(starts[s], starts[s + 1])], v) for v in range(lanes)]

    def _buffered(self, stream: list[int], lane: int) -> list[int]:
        """``stream`` through a shuffle buffer: each next sample is drawn at random from the next
        ``buffer`` still waiting, as WebDataset's shuffle does."""
        gen = torch.Generator().manual_seed(seed_of(self.seed, self.epoch, (self.world.rank, lane)))
        pool: list[int] = []
        out: list[int] = []
        it = iter(stream)
        for j in it:
            pool.append(j)
            if len(pool) >= self.buffer:
                break
        for j in it:
            k = int(torch.randint(len(pool), (1,), generator=gen))
            out.append(pool[k])
            pool[k] = j
        while pool:
            out.append(pool.pop(int(torch.randint(len(pool), (1,), generator=gen))))
        return out

    def __iter__(self):
        streams = self.streams()
        lanes = len(streams)
        cursor = [0] * lanes
        for k in range(self.steps * self.accum):
            picked: list[int] = []
            lane = k % lanes  # loader worker k % workers reads this micro-batch: its own stream first
            while len(picked) < self.per_rank:
                if all(cursor[v] == len(streams[v]) for v in range(lanes)):  # the rank's share ran out: again
                    cursor = [0] * lanes
                while cursor[lane] == len(streams[lane]):  # at the epoch's end, what another stream has left
                    lane = (lane + 1) % lanes
                take = min(self.per_rank - len(picked), len(streams[lane]) - cursor[lane])
                picked += streams[lane][cursor[lane] : cursor[lane] + take]
                cursor[lane] += take
            if k >= self.start_step * self.accum:
                yield picked

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.accum
