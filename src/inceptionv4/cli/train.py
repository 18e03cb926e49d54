"""Commands that train: ``train``, ``shard`` (WebDataset shards for it) and ``demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..train.config import TrainConfig
from .args import add_settings, number, printable


def register(sub) -> None:
    p = sub.add_parser("train", help="train a network (single process, or under torchrun for DDP)")
    p.add_argument("--config", help="a YAML file of settings (flags override it)")
    p.add_argument("--amp", default=None, help=argparse.SUPPRESS)  # the deprecated name of --precision
    add_settings(p, TrainConfig)
    p.set_defaults(func=_train)
    p = sub.add_parser("shard", help="write WebDataset shards (tar) of an image folder or list file, for --dataset wds")
    p.add_argument("source", help="a folder of class folders, or a list file of '<path> <label>' lines")
    p.add_argument("out", help="the folder the shards and index.json go to")
    p.add_argument("--shard-size", default="500MB", help="the most bytes a shard holds (500MB, 2GB, ...)")
    p.add_argument("--prefix", default="shard", help="shard names: PREFIX-000000.tar, ...")
    p.add_argument("--seed", type=int, default=0, help="the order the samples are written in (shuffled)")
    p.add_argument("--val-fraction", type=number(float, 0, 1), default=0.0, metavar="F",
                   help="hold out this fraction of each class as validation shards: OUT/train and OUT/val")  # fmt: skip
    p.set_defaults(func=_shard)
    p = sub.add_parser("demo", help="train, evaluate, export and predict on bundled real data (a few minutes)")
    p.add_argument("--out", default="runs/demo", help="the run folder")
    p.add_argument("--epochs", type=number(int, 1), help="training epochs (default 4)")
    p.add_argument("--max-steps", type=number(int, 1), help="stop training after this many steps (a quick look)")
    p.add_argument("--seed", type=int, default=0, help="the seed of the split, the initialisation and the order")
    p.set_defaults(func=_demo)


def _train(args: argparse.Namespace) -> int:
    import logging

    from ..distributed import launch_rank
    from ..train import TrainConfig, train

    # under torchrun only rank 0 speaks (every rank would say the same); the others still report errors
    logging.basicConfig(level=logging.INFO if launch_rank() == 0 else logging.ERROR, format="%(message)s")
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "func", "config") and v is not None}
    cfg = TrainConfig.from_sources(args.config, **overrides)
    summary = train(cfg)
    if launch_rank() != 0:
        return 0
    if summary["status"] == "preempted":
        print(f"preempted at step {summary['steps']}: resume with --resume --out-dir {summary['out_dir']}")
        return 0
    scores = (f"val top-1 {summary['val_top1']:.2f}%, top-5 {summary['val_top5']:.2f}%" if summary["val_top1"] is not None
              else "no validation in this process (the run had finished before it)")  # fmt: skip
    print(f"finished {summary['steps']} steps in {summary['time_s']:.0f}s: {scores}; weights {summary.get('weights')}")
    return 0


def _shard(args: argparse.Namespace) -> int:
    from ..data.shards import write_shards

    r = write_shards(args.source, args.out, shard_size=args.shard_size, prefix=args.prefix, seed=args.seed,
                     val_fraction=args.val_fraction, progress=sys.stderr.isatty())  # fmt: skip
    patterns = []
    for name, part in (("train", r), ("val", r.get("val"))):
        if part is None:
            continue
        for reason in part["skipped"]:
            print(f"skipped: {printable(reason)}", file=sys.stderr)
        first, last = Path(part["shards"][0]), Path(part["shards"][-1])
        what = f"{name} " if "val" in r else ""
        print(f"wrote {part['samples']} {what}samples of {len(part['classes'])} classes in {len(part['shards'])} "
              f"shard(s) ({first.name} .. {last.name}) and {part['index']}; {len(part['skipped'])} unreadable file(s) "
              "skipped")  # fmt: skip
        patterns.append(f"{first.parent}/{args.prefix}-{{{first.stem.rsplit('-', 1)[1]}..{last.stem.rsplit('-', 1)[1]}}}.tar")
    val = f"'{patterns[1]}'" if len(patterns) > 1 else "VAL_SHARDS"
    print(f"train on them: inceptionv4 train --dataset wds --data '{patterns[0]}' --val-data {val} ...")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import logging

    from ..demo import format_report, run_demo

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run_demo(args.out, epochs=args.epochs, max_steps=args.max_steps, seed=args.seed)
    print(format_report(report))
    return 0
