"""Every PNG the package draws: a training run's curves, a confusion matrix, a heatmap over its image.

At the package root, so that ``eval`` draws its confusion matrix without importing training, and
training draws its curves without anything from inference."""

from __future__ import annotations

import json
from pathlib import Path


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


#: the colour map heatmaps are drawn in, and how much of it covers the image
HEAT_COLORS, HEAT_ALPHA = "jet", 0.5


def overlay(image, heatmap, box: tuple[int, int, int, int] | None = None, *, max_side: int | None = None):
    """A class-activation heatmap drawn over its image, as an RGB PIL image: the (H, W) map in
    [0, 1] (at the image's size) in :data:`HEAT_COLORS` at :data:`HEAT_ALPHA` over the part of the
    image the network saw (``box``: left, top, right, bottom), the rest dimmed, the box outlined.
    With ``max_side`` a larger image is drawn scaled down to it."""
    import matplotlib
    import numpy as np
    from PIL import Image, ImageDraw

    picture = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != picture.shape[:2]:
        raise ValueError(f"the heatmap is {heat.shape[1]}x{heat.shape[0]}, the image {image.width}x{image.height}")
    colors = matplotlib.colormaps[HEAT_COLORS](np.clip(heat, 0, 1))[..., :3].astype(np.float32)
    out = picture * 0.45  # what the network did not see, dimmed
    left, top, right, bottom = box or (0, 0, image.width, image.height)
    seen = (slice(max(top, 0), bottom), slice(max(left, 0), right))
    out[seen] = (1 - HEAT_ALPHA) * picture[seen] + HEAT_ALPHA * colors[seen]
    drawn = Image.fromarray((out * 255).round().astype(np.uint8))
    if box is not None and box != (0, 0, image.width, image.height):
        ImageDraw.Draw(drawn).rectangle((left, top, right - 1, bottom - 1), outline=(255, 255, 255),
                                        width=max(1, min(image.size) // 150))  # fmt: skip
    if max_side and max(drawn.size) > max_side:
        drawn.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return drawn


def save_overlay(image, heatmap, box, title: str, path: str | Path, *, max_side: int = 1024) -> Path:
    """:func:`overlay` as a PNG at ``path``, ``title`` (the class and its probability) on a white
    strip above it; an image larger than ``max_side`` is drawn scaled down to it. Drawn with PIL
    alone: a matplotlib figure would take most of an explanation's time."""
    from PIL import Image, ImageDraw, ImageFont

    drawn = overlay(image, heatmap, box, max_side=max_side)
    size = 12 if drawn.width < 400 else 15
    font = ImageFont.load_default(size=size)
    strip = size * 2
    canvas = Image.new("RGB", (max(drawn.width, 160), drawn.height + strip), (255, 255, 255))
    canvas.paste(drawn, ((canvas.width - drawn.width) // 2, strip))
    draw = ImageDraw.Draw(canvas)
    while draw.textlength(title, font=font) > canvas.width - 8 and len(title) > 4:  # too long: cut, marked
        title = title[:-2].rstrip() + "…" if not title.endswith("…") else title[:-2] + "…"
    draw.text((canvas.width / 2, strip / 2), title, fill=(20, 20, 30), font=font, anchor="mm")
    canvas.save(path, format="PNG")
    return Path(path)
