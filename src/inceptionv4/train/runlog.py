"""The run folder: resolved config, one JSON object per line, a CSV of epochs (its plots: :mod:`inceptionv4.plots`)."""

from __future__ import annotations

import csv
import json
import logging
import sys
import types
from pathlib import Path

import yaml

from ..plots import read_metrics  # noqa: F401 (the run folder's reader, read from here too)

log = logging.getLogger(__name__)

EPOCH_FIELDS = [
    "epoch",
    "step",
    "train_loss",
    "val_loss",
    "val_top1",
    "val_top5",
    "lr",
    "epoch_time_s",
    "img_per_s",
    "skipped",
]


def _summary_writer(path: Path):
    """TensorBoard's SummaryWriter at ``path``, or None where TensorBoard is not installed.

    Where TensorFlow is installed but not yet imported, TensorBoard would import all of it (about
    10 s and hundreds of MB, before the first step) only to write event files. Its own switch,
    an importable ``tensorboard.compat.notf``, makes it use the stub it ships instead; for the rest
    of the process, unless TensorBoard had already chosen.
    """
    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # TensorBoard is optional
        return None
    return SummaryWriter(str(path))


class RunLog:
    """Writes ``config.yaml``, ``metrics.jsonl``, ``metrics.csv`` (and TensorBoard if installed)."""

    def __init__(self, out_dir: str | Path, config: dict, *, resume_step: int | None = None,
                 tensorboard: bool = True) -> None:  # fmt: skip
        """A fresh log, or with ``resume_step`` the log of a run resumed from its checkpoint at that
        step: the records a killed run wrote after that checkpoint (and a line torn by the kill)
        are dropped, so the resumed run writes each epoch once."""
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        kept = _records_up_to(self.dir / "metrics.jsonl", resume_step) if resume_step is not None else []
        self._jsonl = open(self.dir / "metrics.jsonl", "w", encoding="utf-8")  # noqa: SIM115 (lives with the run)
        self._csv_file = open(self.dir / "metrics.csv", "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv = csv.DictWriter(self._csv_file, fieldnames=EPOCH_FIELDS, extrasaction="ignore")
        self._csv.writeheader()
        self._tb = None
        for record in kept:
            self.write(record)
        self._tb = _summary_writer(self.dir / "tensorboard") if tensorboard else None

    def write(self, record: dict) -> None:
        """Append one record (``kind`` "step" or "epoch") to metrics.jsonl, flushed; epochs also to
        metrics.csv, and its numbers to TensorBoard when on."""
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if record.get("kind") == "epoch":
            self._csv.writerow(record)
            self._csv_file.flush()
        if self._tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if isinstance(v, int | float) and k not in ("step", "epoch"):
                    self._tb.add_scalar(f"{record.get('kind', 'x')}/{k}", v, step)

    def close(self) -> None:
        self._jsonl.close()
        self._csv_file.close()
        if self._tb is not None:
            self._tb.close()


def _records_up_to(path: Path, step: int) -> list[dict]:
    """The records of ``path`` up to ``step``, in order; a torn or unreadable line is dropped."""
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(record)
    return kept
