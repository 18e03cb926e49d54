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


def embedding_schema(width: int):
    """``key``: the input; ``embedding``: float32 of ``width``."""
    import pyarrow as pa

    return pa.schema([("key", pa.string()), ("embedding", pa.list_(pa.float32(), width))])


def top_schema():
    """``key``: the input; ``top``: its classes, best first (index, name, probability)."""
    import pyarrow as pa

    entry = pa.struct([("index", pa.int32()), ("name", pa.string()), ("prob", pa.float32())])
    return pa.schema([("key", pa.string()), ("top", pa.list_(entry))])


__all__ = ["ParquetRows", "done_keys", "embedding_schema", "top_schema"]
