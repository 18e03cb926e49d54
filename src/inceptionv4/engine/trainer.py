"""``train``: the whole training run as one importable function (the CLI only parses flags).

Resumable to the bit: the data order is a function of (seed, epoch), each sample's augmentation
of (seed, epoch, index), and each step's dropout of (seed, rank, step), so a run killed at any
point and resumed from its last checkpoint computes exactly what an uninterrupted run computes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import signal
import threading
import time
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
from ..data.datasets import Subset
from ..data.shards import ShardBatches, ShardDataset
from .checkpoint import (latest_checkpoint, list_checkpoints, newest_intact_checkpoint, remove_stale_temps,
                         save_checkpoint)  # fmt: skip
from .config import TrainConfig
from .distributed import World, broadcast_flag, cleanup, init_distributed
from .evaluate import _amp_dtype, evaluate
from .optim import EMA, build_optimizer, fit_to_run, load_optimizer_state, lr_at, scaler_step
from ..data.views import DeviceViews, EncodedFiles, collate_items
from .runlog import RunLog, plot_confusion, plot_run

log = logging.getLogger(__name__)

#: The share of each class validated on when a folder has class folders but no train/ and val/.
VAL_HOLDOUT = 0.1


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; no checkpoint was written after it."""


def _seed_of(*parts: object) -> int:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


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
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(_seed_of(self.seed, "epoch", self.epoch)))
        for s in range(self.start_step, self.steps):
            for m in range(self.accum):
                lo = s * self.batch + m * self.micro + self.world.rank * self.per_rank
                yield perm[lo : lo + self.per_rank].tolist()

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.accum


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    from ..api import create_model

    kwargs: dict = {"drop_rate": cfg.drop_rate}
    if cfg.aux_weight > 0:
        kwargs["aux_logits"] = True
    if cfg.residual_scale is not None:
        kwargs["residual_scale"] = cfg.residual_scale
    model = create_model(cfg.model, pretrained=cfg.pretrained, num_classes=num_classes, **kwargs)
    if cfg.freeze_backbone:
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("head.")
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    return model


def _set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:  # keep the running statistics as loaded (small batches, fine-tuning)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def train(config: TrainConfig | None = None, **overrides) -> dict:
    """Train a network as ``config`` (or keyword settings of :class:`TrainConfig`) says.

    Returns a summary dict: status ("finished" or "preempted"), steps, the last validation
    metrics, and the paths written (weights bundle, metrics, plots).
    """
    cfg = config if config is not None else TrainConfig.from_sources(**overrides)
    cfg.validate()
    r = cfg.resolved()
    world = init_distributed()
    try:
        return _train(cfg, r, world)
    finally:
        cleanup(world)


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


def _train(cfg: TrainConfig, r: dict, world: World) -> dict:  # one loop, read top to bottom
    start_time = time.time()
    out_dir = Path(cfg.out_dir)
    if out_dir.exists() and not out_dir.is_dir():  # said now, not after the data and model are built
        raise ValueError(f"out_dir {out_dir} is a file, not a folder")
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    if cfg.batch_size % (world.size * cfg.accum_steps):
        raise ValueError(
            f"batch_size {cfg.batch_size} must divide into {world.size} processes x {cfg.accum_steps} accumulation steps"
        )

    # -- data ---------------------------------------------------------------------------------------
    holdout = {"holdout": VAL_HOLDOUT} if cfg.dataset == "folder" else {}  # for a folder without val/
    columns = {"image_column": cfg.image_column, "label_column": cfg.label_column} if cfg.dataset == "hf" else {}
    train_base = build_dataset(cfg.dataset, "train", root=cfg.data, seed=cfg.seed, **holdout, **columns)
    val_root = cfg.val_data if cfg.dataset in ("list", "wds") or (cfg.dataset == "hf" and cfg.val_data) else cfg.data
    val_base = build_dataset(cfg.dataset, "val", root=val_root, seed=cfg.seed, classes=train_base.classes, **holdout,
                             **columns)  # fmt: skip
    if isinstance(val_base, Subset) and world.is_main:  # build_dataset held part of the folder out
        log.info("%s has no train/ and val/: validating on %d held-out images (%.0f%% of each class), "
                 "training on %d", cfg.data, len(val_base), 100 * VAL_HOLDOUT, len(train_base))  # fmt: skip
    classes = list(train_base.classes)
    if len(classes) < 2:  # a one-class softmax has zero loss from the first step: nothing to learn
        raise ValueError(
            f"{cfg.data} has {len(classes)} class ({', '.join(map(str, classes))}): a classifier needs at least 2"
        )
    if len(train_base) < cfg.batch_size:
        raise ValueError(f"the training set has {len(train_base)} images, fewer than one batch of {cfg.batch_size}")

    # -- model, optimiser ---------------------------------------------------------------------------
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = _build_model(cfg, len(classes)).to(world.device)
    if cfg.input_size < model.min_input_size:  # here, not as a shape error in the first step
        raise ValueError(f"input_size {cfg.input_size} is below {cfg.model}'s minimum of {model.min_input_size} pixels")
    if cfg.sync_bn and world.distributed and world.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # the card follows the resolution trained at: the bundle, eval and export use it from here on
    model.pretrained_cfg = dataclasses.replace(
        model.pretrained_cfg, input_size=(model.in_chans, cfg.input_size, cfg.input_size)
    )
    pre = Preprocessing.of(model)
    augment = {"scale": (cfg.min_crop_area, 1.0), "hflip": cfg.hflip, "color_jitter": cfg.color_jitter}
    if cfg.decode == "device":  # workers read files and draw crops; the device decodes and augments
        train_ds = EncodedImages(train_base, **augment, seed=cfg.seed)
        train_collate, on_device = collate_encoded, DeviceAugment(pre, world.device, channels_last=cfg.channels_last)
        # validation too: the workers read files, the device decodes, resizes and centre-crops
        val_ds, val_collate, val_on_device = EncodedFiles(val_base), collate_items, DeviceViews(pre, 1, world.device)
    else:
        train_ds = Augmented(train_base, train_transform(pre, **augment), cfg.seed)
        train_collate, on_device = collate, None
        val_ds, val_collate, val_on_device = Augmented(val_base, eval_transform(pre), cfg.seed), collate, None
    optimizer = build_optimizer(r["optimizer"], model, r["lr"], r["weight_decay"], r["momentum"],
                                grad_scaling=cfg.amp == "fp16")  # fmt: skip
    scaler = torch.amp.GradScaler(world.device.type, enabled=cfg.amp == "fp16")
    steps_per_epoch = len(train_base) // cfg.batch_size
    total_steps = (
        steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    )
    r["warmup_epochs"], r["ema_decay"], fitted = fit_to_run(r["warmup_epochs"], r["ema_decay"], total_steps,
                                                            steps_per_epoch)  # fmt: skip
    for note in fitted:
        log.warning("a short run: %s", note)
    ema = EMA(model, r["ema_decay"]) if r["ema_decay"] else None

    # -- resume -------------------------------------------------------------------------------------
    ckpt_dir = out_dir / "checkpoints"
    global_step = 0
    skipped_steps = 0
    resumed_from = None
    # A fresh run in the folder of another would overwrite its checkpoints one by one and leave
    # the newer ones behind for a later --resume to pick up: refuse unless told to replace it.
    earlier = list_checkpoints(ckpt_dir) if world.is_main else []
    if not cfg.resume and broadcast_flag(bool(earlier) and not cfg.overwrite, world):
        newest = f" (checkpoints up to {earlier[-1].name})" if earlier else ""
        raise FileExistsError(
            f"{out_dir} already holds a run{newest}: resume it (--resume), replace it (--overwrite), "
            "or give another out_dir"
        )
    if not cfg.resume:
        for old in earlier:
            old.unlink()
    if world.is_main:  # what a killed write left: a checkpoint's temp file is hundreds of MB
        for folder in (out_dir, ckpt_dir, out_dir / "plots"):
            for stale in remove_stale_temps(folder):
                log.info("removed %s, left by a killed write", stale)
    last_eval: dict = {}
    carried_loss: tuple = (0.0, 0)
    # the newest checkpoint that verifies; a damaged newer one is skipped, and said so
    found = newest_intact_checkpoint(ckpt_dir) if cfg.resume else None
    if found is not None:
        latest, state = found
        _check_resumable(state, r, latest, len(classes))
        model.load_state_dict(state["model"])
        load_optimizer_state(optimizer, state["optimizer"])
        if ema is not None and state.get("ema"):
            ema.load_state_dict(state["ema"])
        scaler.load_state_dict(state["scaler"])
        global_step, skipped_steps = state["step"], state.get("skipped_steps", 0)
        torch.set_rng_state(state["rng"]["torch"])
        last_eval = dict(state.get("last_eval") or {})
        carried_loss = tuple(state.get("epoch_loss") or (0.0, 0))  # the resumed epoch's training loss so far
        resumed_from = str(latest)
        if global_step >= total_steps:  # killed while writing the final weights or plots, or resumed when done
            log.info("the run in %s had finished its %d steps; writing its final weights and plots", out_dir,
                     total_steps)  # fmt: skip
        else:
            log.info("resumed from %s at step %d", latest, global_step)
    elif cfg.resume:  # one command for a preemptible job's first start and every restart
        log.info("--resume: no checkpoint in %s yet, starting a fresh run", ckpt_dir)

    net: nn.Module = model
    if world.distributed:
        # gradients as views into the all-reduce buckets: no second copy of them, no copy per step
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[world.local_rank] if world.device.type == "cuda" else None,
            gradient_as_bucket_view=True,
        )
    if cfg.compile:
        net = torch.compile(net)

    stop = {"sigterm": False}
    in_main_thread = threading.current_thread() is threading.main_thread()  # signals can only be caught there
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("sigterm", True)) if in_main_thread else None
    runlog: RunLog | None = None

    sched = {
        "base_lr": r["lr"],
        "schedule": r["schedule"],
        "steps_per_epoch": steps_per_epoch,
        "epochs": cfg.epochs,
        "warmup_epochs": r["warmup_epochs"],
    }

    def checkpoint() -> Path | None:
        if not world.is_main:
            return None
        return save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "scaler": scaler.state_dict(),
                "scheduler": {"step": global_step, "lr": lr_at(global_step, **sched)},
                "rng": {"torch": torch.get_rng_state()},
                "step": global_step,
                "epoch": global_step // steps_per_epoch,
                "step_in_epoch": global_step % steps_per_epoch,
                "skipped_steps": skipped_steps,
                "epoch_loss": [epoch_loss, epoch_n],
                "last_eval": {k: last_eval[k] for k in ("loss", "top1", "top5", "confusion")} if last_eval else None,
                "config": r,
            },
            ckpt_dir,
            global_step,
            keep=r["keep_checkpoints"],
        )

    amp_dtype = _amp_dtype(cfg.amp)
    status = "finished"
    skipped_files: list[str] = []
    try:
        # after the handler: a SIGTERM while the log opens (TensorBoard's import) is a clean stop too
        runlog = RunLog(out_dir, r, resume_step=global_step if resumed_from else None) if world.is_main else None
        interval_loss, interval_n = 0.0, 0  # the training loss since the last step record
        while global_step < total_steps:
            epoch, start_in_epoch = divmod(global_step, steps_per_epoch)
            train_ds.set_epoch(epoch)
            if isinstance(train_base, ShardDataset):  # a stream: shards by rank and worker, a shuffle buffer
                sampler = ShardBatches(train_base, cfg.batch_size, seed=cfg.seed, epoch=epoch, accum=cfg.accum_steps,
                                       world=world, start_step=start_in_epoch, workers=cfg.workers,
                                       buffer=cfg.shuffle_buffer)  # fmt: skip
            else:
                sampler = StepBatches(len(train_base), cfg.batch_size, seed=cfg.seed, epoch=epoch,
                                      accum=cfg.accum_steps, world=world, start_step=start_in_epoch)  # fmt: skip
            loader = torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, num_workers=cfg.workers,
                                                 collate_fn=train_collate, persistent_workers=False)  # fmt: skip
            epoch_start, images = time.time(), 0
            epoch_loss, epoch_n = carried_loss if start_in_epoch else (0.0, 0)
            carried_loss = (0.0, 0)
            bar = None
            if world.is_main and cfg.progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=steps_per_epoch, initial=start_in_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                           dynamic_ncols=True, leave=True)  # fmt: skip
            micro = iter(loader) if on_device is None else DeviceBatches(loader, on_device)
            for _ in range(start_in_epoch, steps_per_epoch):
                if global_step >= total_steps:
                    break
                _set_train_mode(net, cfg.freeze_bn)
                lr = lr_at(global_step, **sched)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                torch.manual_seed(_seed_of(cfg.seed, "step", world.rank, global_step))  # dropout of this step
                step_loss_t, step_n = torch.zeros((), device=world.device), 0
                for m in range(cfg.accum_steps):
                    batch = next(micro)
                    skipped_files += batch["skipped"]
                    if batch["images"] is None:
                        continue
                    x = batch["images"].to(world.device, non_blocking=True)
                    if cfg.channels_last:
                        x = x.to(memory_format=torch.channels_last)
                    y = batch["labels"].to(world.device, non_blocking=True)
                    sync = m == cfg.accum_steps - 1 or not world.distributed
                    ctx = contextlib.nullcontext() if sync else net.no_sync()
                    with ctx:  # forward and backward inside no_sync: gradients all-reduce once a step
                        with torch.autocast(world.device.type, dtype=amp_dtype, enabled=cfg.amp != "none"):
                            out = net(x)
                            logits, aux = out if isinstance(out, tuple) else (out, None)
                            loss = F.cross_entropy(logits.float(), y, label_smoothing=r["label_smoothing"])
                            if aux is not None:
                                loss = loss + cfg.aux_weight * F.cross_entropy(
                                    aux.float(), y, label_smoothing=r["label_smoothing"]
                                )
                        # a non-finite loss poisons only gradients that are dropped below, on every rank
                        scaler.scale(loss / cfg.accum_steps).backward()
                    step_loss_t += loss.detach().float() * len(y)
                    step_n += len(y)
                if on_device is not None and global_step + 1 < total_steps:
                    micro.prefetch()  # the next batch decodes while the device finishes this step
                step_loss = step_loss_t.item()  # the one host sync of a step
                bad = broadcast_flag(not math.isfinite(step_loss), world)
                if bad:
                    optimizer.zero_grad(set_to_none=True)
                    if cfg.nan_policy == "stop":
                        raise NonFiniteLossError(
                            f"non-finite loss ({step_loss / max(step_n, 1)}) at step {global_step} (epoch {epoch + 1}); "
                            f"stopped without writing a checkpoint; the last good one is {latest_checkpoint(ckpt_dir)}"
                        )
                    skipped_steps += 1
                    log.warning("skipping step %d: non-finite loss", global_step)
                else:
                    if r["clip_grad"]:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(model.parameters(), r["clip_grad"])
                    applied = scaler_step(scaler, optimizer)  # None without fp16's scaler
                    optimizer.zero_grad(set_to_none=True)
                    if ema is not None:
                        ema.update(model, applied)  # a step the scaler skipped leaves the average alone
                global_step += 1
                mean_loss = step_loss / max(step_n, 1)
                interval_loss, interval_n = interval_loss + step_loss, interval_n + step_n
                epoch_loss += step_loss
                epoch_n += step_n
                images += step_n * world.size
                rate = images / max(time.time() - epoch_start, 1e-9)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{mean_loss:.3f}", img_s=f"{rate:.1f}", lr=f"{lr:.2e}")
                if runlog is not None and (global_step % cfg.log_every == 0 or global_step == 1):
                    # the mean over the steps since the last record, not one batch's loss
                    runlog.write({"kind": "step", "step": global_step, "epoch": epoch + 1,
                                  "loss": interval_loss / max(interval_n, 1), "lr": lr, "img_per_s": rate})  # fmt: skip
                    interval_loss, interval_n = 0.0, 0
                preempted = broadcast_flag(stop["sigterm"], world)
                at_epoch_end = global_step % steps_per_epoch == 0 or global_step >= total_steps
                if preempted or (cfg.save_every and global_step % cfg.save_every == 0 and not at_epoch_end):
                    checkpoint()
                if preempted:
                    status = "preempted"
                    break
            if bar is not None:
                bar.close()
            if status == "preempted":
                break
            # -- end of epoch (or of max_steps): evaluate, log, checkpoint -----------------------------
            eval_model = model
            if ema is not None:
                eval_model = _copy_with(model, ema.shadow)
            val_sampler = list(range(world.rank, len(val_base), world.size))
            val_loader = torch.utils.data.DataLoader(val_ds, batch_size=max(cfg.batch_size // world.size, 1),
                                                     sampler=val_sampler, num_workers=cfg.workers, collate_fn=val_collate)  # fmt: skip
            val_batches = val_loader if val_on_device is None else map(val_on_device, val_loader)
            last_eval = evaluate(eval_model, val_batches, num_classes=len(classes), world=world, amp=cfg.amp,
                                 channels_last=cfg.channels_last)  # fmt: skip
            skipped_files += last_eval["skipped"]
            record = {
                "kind": "epoch",
                "epoch": epoch + 1,
                "step": global_step,
                "train_loss": epoch_loss / max(epoch_n, 1),
                "val_loss": last_eval["loss"],
                "val_top1": last_eval["top1"],
                "val_top5": last_eval["top5"],
                "lr": lr_at(global_step - 1, **sched),
                "epoch_time_s": time.time() - epoch_start,
                "img_per_s": images / max(time.time() - epoch_start, 1e-9),
                "skipped": len(set(skipped_files)),
            }
            if runlog is not None:
                runlog.write(record)
            log.info("epoch %d: val top-1 %.2f%%, top-5 %.2f%%", epoch + 1, last_eval["top1"], last_eval["top5"])
            checkpoint()
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        if runlog is not None:
            runlog.close()

    summary = {
        "status": status,
        "weights_digest": state_digest(model),
        "steps": global_step,
        "skipped_steps": skipped_steps,
        "skipped_files": sorted(set(skipped_files)),
        "resumed_from": resumed_from,
        "val_top1": last_eval.get("top1"),
        "val_top5": last_eval.get("top5"),
        "val_loss": last_eval.get("loss"),
        "out_dir": str(out_dir),
        "time_s": time.time() - start_time,
        "classes": classes,
        "train_images": len(train_base),
        "val_images": len(val_base),
    }
    if world.is_main and status == "finished":
        from ..weights import save_weights

        final = _copy_with(model, ema.shadow) if ema is not None else model
        summary["weights"] = str(save_weights(final, out_dir / "model.safetensors", class_names=classes,
                                              source=f"inceptionv4 train ({cfg.recipe} recipe, {global_step} steps)"))  # fmt: skip
        if cfg.plots:
            summary["plots"] = [str(p) for p in plot_run(out_dir)]
            if last_eval.get("confusion"):
                title = f"{out_dir.name}: val top-1 {summary['val_top1']:.1f}%"
                summary["plots"].append(
                    str(plot_confusion(last_eval["confusion"], classes, out_dir / "plots" / "confusion.png", title=title))
                )
        summary["confusion"] = last_eval.get("confusion")
    return summary


def state_digest(model: nn.Module) -> str:
    """SHA-256 of every tensor of the model's state, bit for bit (same digest = same weights)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _copy_with(model: nn.Module, state: dict) -> nn.Module:
    import copy

    clone = copy.deepcopy(model)
    clone.load_state_dict(state)
    return clone
