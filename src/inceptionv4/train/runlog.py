"""The run folder: resolved config, one JSON object per line, a CSV of epochs, PNG plots."""

from __future__ import annotations

import csv
import json
import logging
import sys
import types
from pathlib import Path

import yaml

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


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl, in order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_run(out_dir: str | Path, title: str | None = None, *, lr_curve: tuple[list[int], list[float]] | None = None,
             num_classes: int | None = None) -> list[Path]:  # fmt: skip
    """PNG plots of loss, accuracy and learning rate from ``metrics.jsonl``; returns their paths.

    Each is titled with ``title`` (default: the run folder's name); epoch axes tick whole epochs.
    ``lr_curve`` (steps, rates), the schedule at every step, draws the learning rate where the step
    records, one per ``log_every`` steps, would draw a short run's warm-up and decay as two points.
    With ``num_classes`` of 5 or fewer, top-5 (always 100%) is left out of the accuracy plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    out_dir = Path(out_dir)
    title = title or out_dir.resolve().name
    records = read_metrics(out_dir / "metrics.jsonl")
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    written = []

    def figure(name: str, series: list[tuple[list, list, str]], xlabel: str, ylabel: str) -> None:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for xs, ys, label in series:
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: {name}")
        if xlabel == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if any(s[0] for s in series):
            ax.legend()
        fig.tight_layout()
        path = plot_dir / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

    figure("loss", [([r["step"] for r in steps], [r["loss"] for r in steps], "train (mean since last point)"),
                    ([r["step"] for r in epochs], [r["val_loss"] for r in epochs], "val (epoch)")], "step", "loss")  # fmt: skip
    accuracy = [([r["epoch"] for r in epochs], [r["val_top1"] for r in epochs], "val top-1")]
    if num_classes is None or num_classes > 5:
        accuracy.append(([r["epoch"] for r in epochs], [r["val_top5"] for r in epochs], "val top-5"))
    figure("accuracy", accuracy, "epoch", "%")
    lr_steps, lr_values = lr_curve or ([r["step"] for r in steps], [r["lr"] for r in steps])
    figure("lr", [(list(lr_steps), list(lr_values), "learning rate (schedule)" if lr_curve else "learning rate")],
           "step", "lr")  # fmt: skip
    return written


def plot_confusion(confusion: list[list[int]], classes: list[str], path: str | Path, title: str | None = None) -> Path:
    """The confusion matrix as a PNG (rows: true class, columns: prediction), with a colour bar
    and ``title`` (default: the accuracy it shows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(confusion)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * n + 2), max(4, 0.5 * n + 1.5)), dpi=100)
    image = ax.imshow(m, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    total = int(m.sum())
    ax.set_title(title or f"top-1 {100 * np.trace(m[:, :n]) / max(total, 1):.1f}% of {total} images")
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if m[i, j] > m.max() / 2 else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
