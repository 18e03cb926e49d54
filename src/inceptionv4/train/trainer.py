"""``train``: the whole training run as one importable function (the CLI only parses flags).

Read top to bottom: :func:`train` sets a run up (:func:`setup`: data, network, optimiser, the
run folder, resume), runs its epochs (:func:`run_epoch`, each optimiser step one
:func:`train_step`; each epoch ends in :func:`validate`) and writes what it made (:func:`finish`).
Past set-up, everything reads the resolved config (``run.r``: the recipe's values filled in).

Resumable to the bit: the data order is a function of (seed, epoch), each sample's augmentation
of (seed, epoch, index), and each step's dropout of (seed, rank, step), so a run killed at any
point and resumed from its last checkpoint computes exactly what an uninterrupted run computes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data import (
    Augmented,
    DeviceAugment,
    DeviceBatches,
    EncodedImages,
    Preprocessing,
    build_dataset,
    collate,
    collate_encoded,
    eval_transform,
    train_transform,
)
from ..data.build import split_root, write_list
from ..data.datasets import Subset, seed_of
from ..data.shards import ShardBatches, ShardDataset
from ..data.views import DeviceViews, EncodedFiles, collate_items
from ..distributed import World, all_reduce_sum, broadcast_flag, cleanup, init_distributed, launch_rank
from ..devices import vector_units
from ..plots import plot_confusion, plot_run
from ..precision import TORCH_DTYPES, engine_precision_gap
from ..scoring import Tally
from ..weights.io import file_sha256, state_sha256
from .checkpoint import (latest_checkpoint, list_checkpoints, newest_intact_checkpoint, remove_stale_temps,
                         save_checkpoint)  # fmt: skip
from .config import ResolvedConfig, TrainConfig
from .optim import EMA, build_optimizer, fit_to_run, load_optimizer_state, lr_at, scaler_step
from .runlog import RunLog

log = logging.getLogger(__name__)

#: The share of each class validated on when a folder has class folders but no train/ and val/.
VAL_HOLDOUT = 0.1


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; no checkpoint was written after it."""


class UnreadableDataError(RuntimeError):
    """Too many training images could not be read for the epoch to count (``max_unreadable``);
    the run stops before validating or checkpointing it."""


class StepBatches(torch.utils.data.Sampler):
    """Micro-batches of indices for this rank, step by step from ``start_step`` of an epoch.

    Global batch s of epoch e is ``perm_e[s*B:(s+1)*B]`` with ``perm_e`` fixed by (seed, e); it is
    cut into ``accum`` micro-batches, each cut into ``world`` equal slices, one per rank. So one
    process with batch B sees exactly the samples two processes with B/2 each see together.
    """

    def __init__(self, n: int, batch: int, *, seed: int, epoch: int, accum: int, world: World, start_step: int = 0):
        self.n, self.batch, self.seed, self.epoch = n, batch, seed, epoch
        self.accum, self.world, self.start_step = accum, world, start_step
        self.micro = batch // accum
        self.per_rank = self.micro // world.size
        self.steps = n // batch

    def __iter__(self):
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(seed_of(self.seed, "epoch", self.epoch)))
        for s in range(self.start_step, self.steps):
            for m in range(self.accum):
                lo = s * self.batch + m * self.micro + self.world.rank * self.per_rank
                yield perm[lo : lo + self.per_rank].tolist()

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.accum


def _build_model(r: ResolvedConfig, num_classes: int) -> nn.Module:
    from ..api import create_model

    kwargs: dict = {"drop_rate": r.drop_rate}
    if r.aux_weight > 0:
        kwargs["aux_logits"] = True
    if r.residual_scale is not None:
        kwargs["residual_scale"] = r.residual_scale
    model = create_model(r.model, pretrained=r.pretrained, num_classes=num_classes, **kwargs)
    if r.freeze_backbone:
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("head.")
    model.set_grad_checkpointing(r.grad_checkpointing)
    return model


def _started_from(pretrained: str | None) -> str:
    """What a run's weights started as, for its log, config.yaml and final bundle: "random weights",
    a weights file with its sha256 (which copy it was), or a hub id."""
    from ..weights.hub import is_local

    if pretrained is None:
        return "random weights"
    if is_local(pretrained):
        path = Path(pretrained).expanduser()
        return f"{pretrained}, sha256 {file_sha256(path)}" if path.is_file() else str(pretrained)
    return f"{pretrained} (hub)"


def _set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:  # keep the running statistics as loaded (small batches, fine-tuning)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


#: Settings a run cannot change and resume: they decide which tensors the checkpoint holds.
_RESUME_MUST_MATCH = ("model", "residual_scale", "optimizer", "aux_weight", "freeze_backbone")


def _check_resumable(state: dict, now: dict, path: Path, num_classes: int) -> None:
    """Say which setting differs from the checkpointed run's, instead of a load_state_dict dump."""
    saved = state.get("config") or {}

    def norm(key: str, value: object) -> object:
        return bool(value) if key == "aux_weight" else value  # only whether the aux head exists matters

    differ = [
        f"{k} {saved[k]!r} (now {now.get(k)!r})"
        for k in _RESUME_MUST_MATCH
        if k in saved and norm(k, saved[k]) != norm(k, now.get(k))
    ]
    fc = state.get("model", {}).get("head.fc.weight")
    if fc is not None and fc.shape[0] != num_classes:
        differ.append(f"{fc.shape[0]} classes (now {num_classes})")
    if differ:
        raise ValueError(
            f"cannot resume from {path}: that run had {', '.join(differ)}. "
            "Resume with its settings, or start a new run in another out_dir."
        )


def train(config: TrainConfig | None = None, **overrides) -> dict:
    """Train a network as ``config`` (or keyword settings of :class:`TrainConfig`) says.

    Returns a summary dict: status ("finished" or "preempted"), steps, the last validation
    metrics, and the paths written (weights bundle, metrics, plots).
    """
    cfg = config if config is not None else TrainConfig.from_sources(**overrides)
    cfg.validate()
    with _epoch_lines():
        world = init_distributed(None if cfg.device == "auto" else cfg.device)
        try:
            run = setup(cfg.resolved(), world)
            return finish(run, fit(run))
        finally:
            cleanup(world)


@contextlib.contextmanager
def _epoch_lines():
    """Where the caller set up no logging (a script, a notebook), this package's INFO lines, each
    epoch's result among them, go to stderr for the run, from rank 0 only. A caller's own logging
    set-up (the command line's) is left alone."""
    pkg = logging.getLogger("inceptionv4")
    if logging.getLogger().handlers or pkg.handlers or launch_rank() != 0:
        yield
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = pkg.level
    pkg.addHandler(handler)
    pkg.setLevel(logging.INFO)
    try:
        yield
    finally:
        pkg.removeHandler(handler)
        pkg.setLevel(level)


@dataclass
class Pipeline:
    """How a split's samples become batches (:class:`~inceptionv4.data.Batch`): the dataset the
    loader indexes, its collate function, and what the device does to a collated batch (None:
    nothing, the workers made the images)."""

    dataset: torch.utils.data.Dataset
    collate: object
    on_device: object | None


@dataclass
class Run:
    """A run once set up: what :func:`train_step`, :func:`run_epoch` and :func:`validate` read
    (the resolved config ``r``, the network, the data) and move on (the step, the last validation)."""

    r: ResolvedConfig
    world: World
    out_dir: Path
    model: nn.Module
    net: nn.Module  # the model as the step runs it: DDP-wrapped, compiled
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: EMA | None
    classes: list[str]
    train_base: object
    val_base: object
    train: Pipeline
    val: Pipeline
    steps_per_epoch: int
    total_steps: int
    step: int = 0
    skipped_steps: int = 0
    last_eval: dict = field(default_factory=dict)
    carried_loss: tuple = (0.0, 0)  # the resumed epoch's training loss so far
    resumed_from: str | None = None
    skipped_files: list[str] = field(default_factory=list)
    empty_batches: int = 0  # micro-batches of which no image could be read
    stop: dict = field(default_factory=lambda: {"sigterm": False})
    started: float = field(default_factory=time.time)

    @property
    def amp_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.r.precision] or torch.float32

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def lr(self, step: int) -> float:
        r = self.r
        return lr_at(step, base_lr=r.lr, schedule=r.schedule, steps_per_epoch=self.steps_per_epoch,
                     epochs=r.epochs, warmup_epochs=r.warmup_epochs)  # fmt: skip


# -- set-up ---------------------------------------------------------------------------------------
def _check_precision(precision: str, device: torch.device) -> None:
    """Refuse fp16 autocast on a CPU without FP16 units, where it looks hung: torch emulates it, far
    slower than fp32 (benchmarks/RESULTS.md). The inference table decides it
    (:func:`~inceptionv4.precision.engine_precision_gap`), so train and predict agree."""
    if precision == "fp16" and device.type == "cpu" and engine_precision_gap("torch", "fp16", "cpu"):
        raise ValueError(f"precision fp16 on a CPU needs AVX-512 FP16 or AMX-FP16; on this one ({vector_units()}) "
                         f"torch emulates it, about 10x slower than fp32: use --precision bf16 or fp32")  # fmt: skip


def setup(r: ResolvedConfig, world: World) -> Run:
    """Data, network, optimiser and the run folder, from the resolved config; then the newest
    intact checkpoint if resuming. Every check that can fail does so here, before a step runs."""
    started = time.time()
    out_dir = Path(r.out_dir)
    if out_dir.exists() and not out_dir.is_dir():  # said now, not after the data and model are built
        raise ValueError(f"out_dir {out_dir} is a file, not a folder")
    if r.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    if r.batch_size % (world.size * r.accum_steps):
        raise ValueError(f"batch_size {r.batch_size} must divide into {world.size} processes x "
                         f"{r.accum_steps} accumulation steps")  # fmt: skip
    _check_precision(r.precision, world.device)
    train_base, val_base, classes = _datasets(r, world)
    torch.manual_seed(r.seed)  # the same initial weights on every rank
    r = dataclasses.replace(r, started_from=_started_from(r.pretrained))
    log.info("started from: %s", r.started_from)
    model = _build_model(r, len(classes)).to(world.device)
    if r.input_size < model.min_input_size:  # here, not as a shape error in the first step
        raise ValueError(f"input_size {r.input_size} is below {r.model}'s minimum of {model.min_input_size} pixels")
    if r.sync_bn and world.distributed and world.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if r.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # the card follows the resolution trained at: the bundle, eval and export use it from here on
    model.pretrained_cfg = model.pretrained_cfg.at_input_size(r.input_size)
    train_pipe, val_pipe = _pipelines(r, Preprocessing.of(model), train_base, val_base, world)
    optimizer = build_optimizer(r.optimizer, model, r.lr, r.weight_decay, r.momentum,
                                grad_scaling=r.precision == "fp16")  # fmt: skip
    scaler = torch.amp.GradScaler(world.device.type, enabled=r.precision == "fp16")
    steps_per_epoch = len(train_base) // r.batch_size
    total_steps = steps_per_epoch * r.epochs if r.max_steps is None else min(r.max_steps,
                                                                                   steps_per_epoch * r.epochs)  # fmt: skip
    warmup_epochs, ema_decay, fitted = fit_to_run(r.warmup_epochs, r.ema_decay, total_steps, steps_per_epoch)
    r = dataclasses.replace(r, warmup_epochs=warmup_epochs, ema_decay=ema_decay)
    for note in fitted:
        log.warning("a short run: %s", note)
    ema = EMA(model, r.ema_decay) if r.ema_decay else None
    run = Run(r=r, world=world, out_dir=out_dir, model=model, net=model, optimizer=optimizer, scaler=scaler, ema=ema,
              classes=classes, train_base=train_base, val_base=val_base, train=train_pipe, val=val_pipe,
              steps_per_epoch=steps_per_epoch, total_steps=total_steps, started=started)  # fmt: skip
    _prepare_folder(run)
    if isinstance(val_base, Subset) and world.is_main:  # the split held out, for `eval --run`
        note = (f"held out from {r.data} by file name ({100 * VAL_HOLDOUT:.0f}% of each class) by inceptionv4 "
                f"train\nscore the held-out images: inceptionv4 eval --run {out_dir}")  # fmt: skip
        for name, part in (("train", train_base), ("val", val_base)):
            write_list(part, out_dir / "splits" / f"{name}.txt", note)
    if r.resume:
        _resume(run)
    if world.distributed:
        # gradients as views into the all-reduce buckets: no second copy of them, no copy per step
        run.net = nn.parallel.DistributedDataParallel(
            model, device_ids=[world.local_rank] if world.device.type == "cuda" else None, gradient_as_bucket_view=True
        )
    if r.compile:
        run.net = torch.compile(run.net)
    return run


def _datasets(r: ResolvedConfig, world: World) -> tuple[object, object, list[str]]:
    """(train, val, classes) for the dataset kind; a folder of class folders alone is held out from."""
    kind = r.dataset
    holdout = {"holdout": VAL_HOLDOUT} if kind == "folder" else {}  # for a folder without val/
    columns = {"image_column": r.image_column, "label_column": r.label_column} if kind == "hf" else {}
    train_base = build_dataset(kind, "train", root=r.data, seed=r.seed, **holdout, **columns)
    val_root = split_root(kind, "val", r.data, r.val_data)
    val_base = build_dataset(kind, "val", root=val_root, seed=r.seed, classes=train_base.classes, **holdout,
                             **columns)  # fmt: skip
    if isinstance(val_base, Subset) and world.is_main:  # build_dataset held part of the folder out
        log.info("%s has no train/ and val/: validating on %d held-out images (%.0f%% of each class), "
                 "training on %d", r.data, len(val_base), 100 * VAL_HOLDOUT, len(train_base))  # fmt: skip
    classes = list(train_base.classes)
    if len(classes) < 2:  # a one-class softmax has zero loss from the first step: nothing to learn
        raise ValueError(
            f"{r.data} has {len(classes)} class ({', '.join(map(str, classes))}): a classifier needs at least 2"
        )
    if len(train_base) < r.batch_size:
        raise ValueError(f"the training set has {len(train_base)} images, fewer than one batch of {r.batch_size}")
    return train_base, val_base, classes


def _pipelines(r: ResolvedConfig, pre: Preprocessing, train_base, val_base, world: World) -> tuple[Pipeline, Pipeline]:
    """The training and validation pipelines: decoded and augmented by the workers, or (``decode
    device``) only read by the workers and decoded, augmented, resized and cropped on the device."""
    augment = {"scale": (r.min_crop_area, 1.0), "hflip": r.hflip, "color_jitter": r.color_jitter}
    if r.decode == "device":
        return (Pipeline(EncodedImages(train_base, **augment, seed=r.seed), collate_encoded,
                         DeviceAugment(pre, world.device, channels_last=r.channels_last)),
                Pipeline(EncodedFiles(val_base), collate_items, DeviceViews(pre, 1, world.device)))  # fmt: skip
    return (Pipeline(Augmented(train_base, train_transform(pre, **augment), r.seed), collate, None),
            Pipeline(Augmented(val_base, eval_transform(pre), r.seed), collate, None))  # fmt: skip


def _prepare_folder(run: Run) -> None:
    """A fresh run in the folder of another would overwrite its checkpoints one by one and leave
    the newer ones behind for a later --resume to pick up: refuse unless told to replace it. What
    a killed write left (a checkpoint's temp file is hundreds of MB) is removed."""
    r, world = run.r, run.world
    earlier = list_checkpoints(run.ckpt_dir) if world.is_main else []
    if not r.resume and broadcast_flag(bool(earlier) and not r.overwrite, world):
        newest = f" (checkpoints up to {earlier[-1].name})" if earlier else ""
        raise FileExistsError(f"{run.out_dir} already holds a run{newest}: resume it (--resume), replace it "
                              "(--overwrite), or give another out_dir")  # fmt: skip
    if not r.resume:
        for old in earlier:
            old.unlink()
    if world.is_main:
        for folder in (run.out_dir, run.ckpt_dir, run.out_dir / "plots"):
            for stale in remove_stale_temps(folder):
                log.info("removed %s, left by a killed write", stale)


def _resume(run: Run) -> None:
    """Continue from the newest checkpoint that verifies (a damaged newer one is skipped, and said
    so); or, with none yet, start fresh and say so (one command for a preemptible job's first
    start and every restart)."""
    found = newest_intact_checkpoint(run.ckpt_dir)
    if found is None:
        log.info("--resume: no checkpoint in %s yet, starting a fresh run", run.ckpt_dir)
        return
    latest, state = found
    _check_resumable(state, run.r.as_dict(), latest, len(run.classes))
    run.model.load_state_dict(state["model"])
    load_optimizer_state(run.optimizer, state["optimizer"])
    if run.ema is not None and state.get("ema"):
        run.ema.load_state_dict(state["ema"])
    run.scaler.load_state_dict(state["scaler"])
    run.step, run.skipped_steps = state["step"], state.get("skipped_steps", 0)
    torch.set_rng_state(state["rng"]["torch"])
    run.last_eval = dict(state.get("last_eval") or {})
    run.carried_loss = tuple(state.get("epoch_loss") or (0.0, 0))
    run.resumed_from = str(latest)
    if run.step >= run.total_steps:  # killed while writing the final weights or plots, or resumed when done
        log.info("the run in %s had finished its %d steps; writing its final weights and plots", run.out_dir,
                 run.total_steps)  # fmt: skip
    else:
        log.info("resumed from %s at step %d", latest, run.step)


def checkpoint(run: Run, epoch_loss: tuple = (0.0, 0)) -> Path | None:
    """Everything to resume at this step (the main process writes it)."""
    if not run.world.is_main:
        return None
    last = {k: run.last_eval[k] for k in ("loss", "top1", "top5", "confusion")} if run.last_eval else None
    return save_checkpoint(
        {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "ema": run.ema.state_dict() if run.ema is not None else None,
            "scaler": run.scaler.state_dict(),
            "scheduler": {"step": run.step, "lr": run.lr(run.step)},
            "rng": {"torch": torch.get_rng_state()},
            "step": run.step,
            "epoch": run.step // run.steps_per_epoch,
            "step_in_epoch": run.step % run.steps_per_epoch,
            "skipped_steps": run.skipped_steps,
            "epoch_loss": list(epoch_loss),
            "last_eval": last,
            "config": run.r.as_dict(),
        },
        run.ckpt_dir,
        run.step,
        keep=run.r.keep_checkpoints,
    )


# -- the loop -------------------------------------------------------------------------------------
def fit(run: Run) -> str:
    """Epochs until the run's last step, or a SIGTERM (then "preempted", after a checkpoint)."""
    in_main_thread = threading.current_thread() is threading.main_thread()  # signals can only be caught there
    previous = signal.signal(signal.SIGTERM, lambda *_: run.stop.__setitem__("sigterm", True)) if in_main_thread else None
    runlog: RunLog | None = None
    status = "finished"
    try:
        # after the handler: a SIGTERM while the log opens (TensorBoard's import) is a clean stop too
        runlog = RunLog(run.out_dir, run.r.as_dict(), resume_step=run.step if run.resumed_from else None) \
            if run.world.is_main else None  # fmt: skip
        while run.step < run.total_steps and status == "finished":
            status = run_epoch(run, runlog)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        if runlog is not None:
            runlog.close()
    return status


def run_epoch(run: Run, runlog: RunLog | None) -> str:
    """The rest of the current epoch from the run's step: its steps, then validation, its record
    and a checkpoint. "preempted" if a SIGTERM came (checkpointed at that step), else "finished"."""
    r, world = run.r, run.world
    epoch, start_in_epoch = divmod(run.step, run.steps_per_epoch)
    micro = _micro_batches(run, epoch, start_in_epoch)
    epoch_start, images = time.time(), 0
    skipped_before, empty_before, read_here = len(run.skipped_files), run.empty_batches, 0
    epoch_loss, epoch_n = run.carried_loss if start_in_epoch else (0.0, 0)
    run.carried_loss = (0.0, 0)
    interval_loss, interval_n = 0.0, 0  # the training loss since the last step record
    bar = None
    if world.is_main and r.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=run.steps_per_epoch, initial=start_in_epoch, desc=f"epoch {epoch + 1}/{r.epochs}",
                   unit="step", dynamic_ncols=True, leave=True)  # fmt: skip
    for _ in range(start_in_epoch, run.steps_per_epoch):
        if run.step >= run.total_steps:
            break
        lr = run.lr(run.step)
        step_loss, step_n = train_step(run, micro, lr)
        epoch_loss, epoch_n = epoch_loss + step_loss, epoch_n + step_n
        read_here += step_n
        interval_loss, interval_n = interval_loss + step_loss, interval_n + step_n
        images += step_n * world.size
        rate = images / max(time.time() - epoch_start, 1e-9)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss / max(step_n, 1):.3f}", img_s=f"{rate:.1f}", lr=f"{lr:.2e}")
        at_epoch_end = run.step % run.steps_per_epoch == 0 or run.step >= run.total_steps
        if runlog is not None and (run.step % r.log_every == 0 or run.step == 1 or at_epoch_end):
            # the mean over the steps since the last record, not one batch's loss
            runlog.write({"kind": "step", "step": run.step, "epoch": epoch + 1, "loss": interval_loss / max(interval_n, 1),
                          "lr": lr, "img_per_s": rate})  # fmt: skip
            interval_loss, interval_n = 0.0, 0
        preempted = broadcast_flag(run.stop["sigterm"], world)
        if preempted or (r.save_every and run.step % r.save_every == 0 and not at_epoch_end):
            checkpoint(run, (epoch_loss, epoch_n))
        if preempted:
            if bar is not None:
                bar.close()
            return "preempted"
    if bar is not None:
        bar.close()
    _check_readable(run, epoch, len(run.skipped_files) - skipped_before, read_here, run.empty_batches - empty_before)
    run.last_eval = validate(run)
    if runlog is not None:
        elapsed = time.time() - epoch_start
        runlog.write({"kind": "epoch", "epoch": epoch + 1, "step": run.step, "train_loss": epoch_loss / max(epoch_n, 1),
                      "val_loss": run.last_eval["loss"], "val_top1": run.last_eval["top1"],
                      "val_top5": run.last_eval["top5"], "lr": run.lr(run.step - 1), "epoch_time_s": elapsed,
                      "img_per_s": images / max(elapsed, 1e-9), "skipped": len(set(run.skipped_files))})  # fmt: skip
    top5 = f", top-5 {run.last_eval['top5']:.2f}%" if len(run.classes) > 5 else ""
    log.info("epoch %d/%d: train loss %.4f, val loss %.4f, val top-1 %.2f%%%s", epoch + 1, r.epochs,
             epoch_loss / max(epoch_n, 1), run.last_eval["loss"], run.last_eval["top1"], top5)  # fmt: skip
    checkpoint(run, (epoch_loss, epoch_n))
    return "finished"


def _check_readable(run: Run, epoch: int, skipped: int, read: int, empty: int) -> None:
    """Stop with :class:`UnreadableDataError` where more than ``max_unreadable`` of this epoch's
    training images, or a whole micro-batch, could not be read: a run that learned from nothing
    (every file unreadable gave a loss of 0.0 and a "finished" model) must not say it finished.
    The counts are summed over the ranks, so every rank stops alike."""
    share = run.r.max_unreadable
    skipped, read, empty = (int(v) for v in all_reduce_sum([skipped, read, empty], run.world))
    if share >= 1 or not skipped or (skipped <= share * (skipped + read) and not empty):
        return
    whole = f", {empty} whole batch(es) among them" if empty else ""
    first = "; ".join(sorted(set(run.skipped_files))[:3])
    raise UnreadableDataError(
        f"epoch {epoch + 1}: {skipped} of {skipped + read} training images could not be read{whole}, over the "
        f"{share:.0%} max_unreadable allows (--max-unreadable 1 never stops); stopped before validating or "
        f"saving. The first: {first}"
    )


def _micro_batches(run: Run, epoch: int, start_in_epoch: int):
    """This rank's micro-batches of ``epoch`` from ``start_in_epoch``, ready to run: a stream for
    shards (by rank and worker, a shuffle buffer), else slices of the epoch's permutation."""
    r, world = run.r, run.world
    run.train.dataset.set_epoch(epoch)
    if isinstance(run.train_base, ShardDataset):
        sampler = ShardBatches(run.train_base, r.batch_size, seed=r.seed, epoch=epoch, accum=r.accum_steps,
                               world=world, start_step=start_in_epoch, workers=r.workers, buffer=r.shuffle_buffer)  # fmt: skip
    else:
        sampler = StepBatches(len(run.train_base), r.batch_size, seed=r.seed, epoch=epoch, accum=r.accum_steps,
                              world=world, start_step=start_in_epoch)  # fmt: skip
    loader = torch.utils.data.DataLoader(run.train.dataset, batch_sampler=sampler, num_workers=r.workers,
                                         collate_fn=run.train.collate, persistent_workers=False)  # fmt: skip
    return iter(loader) if run.train.on_device is None else DeviceBatches(loader, run.train.on_device)


def train_step(run: Run, micro, lr: float) -> tuple[float, int]:
    """One optimiser step at ``lr`` over ``accum_steps`` micro-batches drawn from ``micro``: the
    summed loss and the number of images. A non-finite loss stops the run (or, with nan_policy
    skip, drops the step's gradients and counts it), on every rank alike."""
    r, world, net = run.r, run.world, run.net
    _set_train_mode(net, r.freeze_bn)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    torch.manual_seed(seed_of(r.seed, "step", world.rank, run.step))  # dropout of this step
    amp_dtype = run.amp_dtype
    step_loss_t, step_n = torch.zeros((), device=world.device), 0
    for m in range(r.accum_steps):
        batch = next(micro)
        run.skipped_files += batch["skipped"]
        if batch["images"] is None:
            run.empty_batches += 1
            continue
        x = batch["images"].to(world.device, non_blocking=True)
        if r.channels_last:
            x = x.to(memory_format=torch.channels_last)
        y = batch["labels"].to(world.device, non_blocking=True)
        sync = m == r.accum_steps - 1 or not world.distributed
        with contextlib.nullcontext() if sync else net.no_sync():  # gradients all-reduce once a step
            with torch.autocast(world.device.type, dtype=amp_dtype, enabled=r.precision != "fp32"):
                out = net(x)
                logits, aux = out if isinstance(out, tuple) else (out, None)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=r.label_smoothing)
                if aux is not None:
                    loss = loss + r.aux_weight * F.cross_entropy(aux.float(), y, label_smoothing=r.label_smoothing)
            # a non-finite loss poisons only gradients that are dropped below, on every rank
            run.scaler.scale(loss / r.accum_steps).backward()
        step_loss_t += loss.detach().float() * len(y)
        step_n += len(y)
    if run.train.on_device is not None and run.step + 1 < run.total_steps:
        micro.prefetch()  # the next batch decodes while the device finishes this step
    step_loss = step_loss_t.item()  # the one host sync of a step
    if broadcast_flag(not math.isfinite(step_loss), world):
        run.optimizer.zero_grad(set_to_none=True)
        if r.nan_policy == "stop":
            raise NonFiniteLossError(
                f"non-finite loss ({step_loss / max(step_n, 1)}) at step {run.step} (epoch "
                f"{run.step // run.steps_per_epoch + 1}); stopped without writing a checkpoint; the last good one is "
                f"{latest_checkpoint(run.ckpt_dir)}"
            )
        run.skipped_steps += 1
        log.warning("skipping step %d: non-finite loss", run.step)
    else:
        if r.clip_grad:
            run.scaler.unscale_(run.optimizer)
            nn.utils.clip_grad_norm_(run.model.parameters(), r.clip_grad)
        applied = scaler_step(run.scaler, run.optimizer)  # None without fp16's scaler
        run.optimizer.zero_grad(set_to_none=True)
        if run.ema is not None:
            run.ema.update(run.model, applied)  # a step the scaler skipped leaves the average alone
    run.step += 1
    return step_loss, step_n


@torch.no_grad()
def validate(run: Run) -> dict:
    """The network (its weight average, with EMA) on every validation image, this rank taking
    every ``world``-th, through :class:`~inceptionv4.scoring.Tally`: the report ``eval``
    gives (top-1, top-5, loss, per-class top-1, the confusion matrix), the same on every rank."""
    r, world = run.r, run.world
    model = _copy_with(run.model, run.ema.shadow) if run.ema is not None else run.model
    was_training = model.training
    model.eval()
    sampler = list(range(world.rank, len(run.val_base), world.size))
    loader = torch.utils.data.DataLoader(run.val.dataset, batch_size=max(r.batch_size // world.size, 1),
                                         sampler=sampler, num_workers=r.workers, collate_fn=run.val.collate)  # fmt: skip
    batches = loader if run.val.on_device is None else map(run.val.on_device, loader)
    amp_dtype = run.amp_dtype
    # no per-image entries: a run reads only the figures, and they would be gathered every epoch
    tally = Tally(run.classes, list(range(len(run.classes))), run.classes)
    for batch in batches:
        tally.skip(batch["skipped_indices"], batch["skipped"])
        if batch["images"] is None:
            continue
        x = batch["images"].to(world.device, non_blocking=True)
        if r.channels_last:
            x = x.to(memory_format=torch.channels_last)
        with torch.autocast(world.device.type, dtype=amp_dtype, enabled=r.precision != "fp32"):
            logits = model(x)
        tally.add(torch.softmax(logits.float(), 1), [int(y) for y in batch["labels"]], [int(i) for i in batch["indices"]])
    model.train(was_training)
    tally.merge(world)
    report = tally.report()
    run.skipped_files += report["skipped"]
    return report


# -- the end --------------------------------------------------------------------------------------
def finish(run: Run, status: str) -> dict:
    """The run's summary; for a finished run the final weights (the average, with EMA) as a bundle,
    and the plots."""
    last = run.last_eval
    summary = {
        "status": status,
        "weights_digest": state_sha256(run.model.state_dict()),
        "steps": run.step,
        "skipped_steps": run.skipped_steps,
        "skipped_files": sorted(set(run.skipped_files)),
        "resumed_from": run.resumed_from,
        "started_from": run.r.started_from,
        "val_top1": last.get("top1"),
        "val_top5": last.get("top5"),
        "val_loss": last.get("loss"),
        "out_dir": str(run.out_dir),
        "time_s": time.time() - run.started,
        "classes": run.classes,
        "train_images": len(run.train_base),
        "val_images": len(run.val_base),
    }
    if run.world.is_main and status == "finished":
        from ..weights import save_weights

        final = _copy_with(run.model, run.ema.shadow) if run.ema is not None else run.model
        summary["weights"] = str(save_weights(final, run.out_dir / "model.safetensors", class_names=run.classes,
                                              source=f"inceptionv4 train ({run.r.recipe} recipe, {run.step} steps)",
                                              started_from=run.r.started_from))  # fmt: skip
        if run.r.plots:
            steps = range(1, run.total_steps + 1, max(run.total_steps // 2000, 1))  # the rate each step ran at
            curve = (list(steps), [run.lr(s - 1) for s in steps])
            summary["plots"] = [str(p) for p in plot_run(run.out_dir, lr_curve=curve, num_classes=len(run.classes))]
            if last.get("confusion"):
                title = f"{run.out_dir.name}: val top-1 {summary['val_top1']:.1f}%"
                square = [row[: len(run.classes)] for row in last["confusion"]]  # no output falls outside here
                summary["plots"].append(str(plot_confusion(square, run.classes, run.out_dir / "plots" / "confusion.png",
                                                           title=title)))  # fmt: skip
        summary["confusion"] = last.get("confusion")
    return summary


def _copy_with(model: nn.Module, state: dict) -> nn.Module:
    import copy

    clone = copy.deepcopy(model)
    clone.load_state_dict(state)
    return clone
