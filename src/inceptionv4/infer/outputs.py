"""Rows of results written as a Parquet dataset that a rerun resumes: what ``embed`` and
``predict --out`` write.

The output is a folder (``emb.parquet/``, which pyarrow, pandas, Spark, DuckDB and Ray all read as
one table) of part files. Each part is written beside its final name and renamed into place, so a
part is on disk whole or not at all: a run killed at any moment leaves only finished rows, and a
rerun reads their keys and skips those images. Rows are gathered into a part until
``rows_per_part`` of them, or ``seconds`` since the last part, or the run ends (Ctrl-C and SIGTERM
included): a SIGKILL loses at most that much work, never a row already written.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..extras import require


class ParquetRows:
    """A Parquet dataset folder at ``path`` taking rows (dicts of ``schema``'s columns; ``key``,
    a string, names each row's input). ``prefix`` starts each part's name (a torchrun rank's)."""

    def __init__(self, path: str | os.PathLike, schema, *, rows_per_part: int = 4096, seconds: float = 30.0,
                 prefix: str = "part") -> None:  # fmt: skip
        require("pyarrow", "writing Parquet (embed, predict --out)")
        import pyarrow as pa

        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"{self.path} is a file: the output is a folder of Parquet parts; give a new name")
        if "key" not in schema.names or schema.field("key").type != pa.string():
            raise ValueError("the rows' schema needs a string column 'key'")
        self.schema, self.rows_per_part, self.seconds, self.prefix = schema, rows_per_part, seconds, prefix
        self.path.mkdir(parents=True, exist_ok=True)
        self.pending: list[dict] = []
        self.written = 0
        self._last = time.monotonic()

    def add(self, row: dict) -> None:
        """Take one row; a part is written once enough rows or time have gathered."""
        self.pending.append(row)
        if len(self.pending) >= self.rows_per_part or time.monotonic() - self._last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        """Write the rows gathered as one part (nothing when there are none)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._last = time.monotonic()
        if not self.pending:
            return
        table = pa.Table.from_pylist(self.pending, schema=self.schema)
        name = f"{self.prefix}-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.path / f".{name}.tmp"  # hidden: readers of the folder skip it
        pq.write_table(table, tmp)
        os.replace(tmp, self.path / name)
        self.written += len(self.pending)
        self.pending = []

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> ParquetRows:
        return self

    def __exit__(self, *exc) -> None:  # written on any exit: an error, Ctrl-C, SIGTERM (SystemExit)
        self.close()


def done_keys(path: str | os.PathLike) -> set[str]:
    """The keys of every row already in the Parquet dataset at ``path`` (none if it is not there
    yet): what a rerun skips."""
    folder = Path(path)
    if not folder.is_dir():
        return set()
    require("pyarrow", "reading Parquet (embed, predict --out)")
    import pyarrow.parquet as pq

    keys: set[str] = set()
    for part in sorted(folder.glob("*.parquet")):
        keys.update(pq.read_table(part, columns=["key"]).column("key").to_pylist())
    return keys


def check_columns(path: str | os.PathLike, columns: list[str]) -> None:
    """ValueError unless the Parquet dataset at ``path`` (if it has parts) holds rows of
    ``columns``: a resumed run must add rows of the shape already written."""
    folder = Path(path)
    part = next(iter(sorted(folder.glob("*.parquet"))), None) if folder.is_dir() else None
    if part is None:
        return
    import pyarrow.parquet as pq

    found = pq.read_schema(part).names
    if found != columns:
        raise ValueError(f"{folder} holds rows of {', '.join(found)}, not {', '.join(columns)}: rerun with the flags "
                         "that wrote it, or give a new --out")  # fmt: skip


def embedding_schema(width: int, top: bool = False):
    """``key``: the input; ``embedding``: float32 of ``width``; with ``top``, :func:`top_schema`'s
    column too."""
    import pyarrow as pa

    fields = [("key", pa.string()), ("embedding", pa.list_(pa.float32(), width))]
    return pa.schema(fields + ([top_schema().field("top")] if top else []))


def top_schema():
    """``key``: the input; ``top``: its classes, best first (index, name, probability)."""
    import pyarrow as pa

    entry = pa.struct([("index", pa.int32()), ("name", pa.string()), ("prob", pa.float32())])
    return pa.schema([("key", pa.string()), ("top", pa.list_(entry))])


def write_parquet(rows: Iterator[dict], out: str | os.PathLike, schema_of, row_of, *,
                  rows_per_part: int = 4096, prefix: str = "part", on_error=None) -> dict:  # fmt: skip
    """Each ok row of ``rows`` (from :func:`embed_rows` or predict) as ``row_of(row)`` into the
    Parquet dataset ``out`` (:class:`ParquetRows`; its schema made by
    ``schema_of(first ok row)``). ``on_error(row)`` is called for each input that could not be read.
    Returns ``{"written", "errors"}``."""
    writer, errors = None, 0
    try:
        for row in rows:
            if not row["ok"]:
                errors += 1
                if on_error is not None:
                    on_error(row)
                continue
            if writer is None:
                writer = ParquetRows(out, schema_of(row), rows_per_part=rows_per_part, prefix=prefix)
            writer.add(row_of(row))
    finally:  # Ctrl-C, SIGTERM (SystemExit), an error: what is finished is written
        if writer is not None:
            writer.close()
    return {"written": writer.written if writer is not None else 0, "errors": errors}


def to_parquet(weights, out: str | os.PathLike, inputs=None, options=None, *, dataset=None, topk: int | None = None,
               batch_size: int | None = None, workers: int = 0, decode: str = "workers", progress: bool = False,
               world=None, ray: str | None = None, ray_actors: int = 1, ray_cpus: float = 1,
               on_error=None) -> dict:  # fmt: skip
    """``embed`` and ``predict --out``: every image of ``inputs`` (files, folders, globs) or of
    ``dataset`` (shards, a Hugging Face split) into the Parquet dataset ``out``, as rows of ``key``
    and ``embedding`` (``options.output == "embeddings"``; with ``topk``, also ``top`` by the
    network's classifier, :class:`~inceptionv4.infer.embed.TopClasses`) or ``top`` (the ``topk``,
    default 5, best classes).

    Keys already in ``out`` are skipped: a rerun finishes what a killed run left. The session is
    ``weights`` opened with ``options`` (:class:`~inceptionv4.engines.options.SessionOptions`) here,
    or, with ``ray`` (an address, or "local"), on ``ray_actors`` Ray actors of ``ray_cpus`` CPUs
    each (:func:`~inceptionv4.infer.raydata.ray_rows`). Under torchrun (``world``) each process
    takes its share and writes parts named by its rank. ``on_error(row)`` hears of each image that
    could not be read. Returns ``{"written", "errors", "skipped"}`` (this process's)."""
    from ..engines.options import SessionOptions

    options = options or SessionOptions()
    embeddings = options.output == "embeddings"
    if topk is not None and topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    ranked = topk is not None or not embeddings  # rows carry a top column
    topk = topk or 5
    done = done_keys(out)
    check_columns(out, ["key", "embedding", "top"][: 3 if ranked else 2] if embeddings else ["key", "top"])
    if ray:
        from .raydata import connect, ray_rows

        started = connect(ray)
        rows = ray_rows(weights, inputs, options, dataset=dataset, topk=topk if ranked else None, actors=ray_actors,
                        cpus_per_actor=ray_cpus, batch_size=batch_size, skip=done, progress=progress)  # fmt: skip
    else:
        from ..engines.open import open_session
        from .embed import TopClasses, embed_rows
        from .predict import predict

        started = False
        ranks = TopClasses(weights, topk, options.model) if embeddings and ranked else None
        session = open_session(weights, options)
        common = {"dataset": dataset, "world": world, "batch_size": batch_size, "progress": progress,
                  "workers": workers, "decode": decode, "skip": done}  # fmt: skip
        rows = (embed_rows(session, inputs, ranks=ranks, **common) if embeddings
                else predict(session, inputs, topk=topk, **common))  # fmt: skip
    prefix = f"rank{world.rank:05d}" if world is not None and world.distributed else "part"
    schema_of = (lambda r: embedding_schema(len(r["embedding"]), top=ranked)) if embeddings else (lambda _: top_schema())
    try:
        summary = write_parquet(rows, out, schema_of,
                                lambda r: {"key": r["file"], **{c: r[c] for c in ("embedding", "top") if c in r}},
                                prefix=prefix, on_error=on_error)  # fmt: skip
    finally:
        if started:
            import ray as ray_module

            ray_module.shutdown()
    return {**summary, "skipped": len(done)}


__all__ = ["ParquetRows", "check_columns", "done_keys", "embedding_schema", "to_parquet", "top_schema", "write_parquet"]
