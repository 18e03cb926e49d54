"""The ``inceptionv4`` command: a thin layer over functions a user can import."""

from __future__ import annotations

import argparse
import json
import sys

from .models import count_params, create_model, get_model_card, list_models


def _info(args: argparse.Namespace) -> int:
    import torch

    card = get_model_card(args.model)  # ValueError for an unknown name
    with torch.device("meta"):
        model = create_model(args.model)
    report = card.to_dict()
    report["feature_info"] = [f.to_dict() for f in model.feature_info]
    report["params_recounted"] = count_params(model)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{card.name}: {card.title} ({card.figures}), {card.layout} layout")
    print(f"  parameters {card.num_params:,}   GFLOPs @299 {card.gflops:.2f}")
    print(
        f"  input {card.input_size}, minimum {card.min_input_size}, mean/std {card.mean}/{card.std}, "
        f"{card.interpolation}, crop {card.crop_pct}"
    )
    if card.paper_top1 is not None:
        print(f"  paper (Table 2) top-1/top-5: {card.paper_top1}/{card.paper_top5}")
    if card.released_top1 is not None:
        print(f"  released checkpoint top-1/top-5: {card.released_top1}/{card.released_top5}")
    for f in model.feature_info:
        print(f"  feature stride {f.reduction:>2}: {f.module} ({f.num_chs} channels)")
    if card.weights_from:
        print("  weights: " + "; ".join(card.weights_from))
    if card.notes:
        print(f"  note: {card.notes}")
    return 0


def _list(args: argparse.Namespace) -> int:
    for name in list_models():
        card = get_model_card(name)
        print(f"{name:<28} {card.num_params / 1e6:6.1f}M params {card.gflops:6.2f} GFLOPs  {card.title}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .weights.bundle import convert_file, read_bundle_metadata

    out = convert_file(args.src, args.dst, source=args.source, model=args.model, keep_background=args.keep_background)
    meta = read_bundle_metadata(out)
    print(f"wrote {out}: {meta['architecture']}, {meta['num_classes']} classes, from {meta['source']}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import logging

    from .engine import TrainConfig, train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "func", "config") and v is not None}
    cfg = TrainConfig.from_sources(args.config, **overrides)
    summary = train(cfg)
    if summary["status"] == "preempted":
        print(f"preempted at step {summary['steps']}: resume with --resume --out-dir {summary['out_dir']}")
        return 0
    print(f"finished {summary['steps']} steps in {summary['time_s']:.0f}s: val top-1 {summary['val_top1']:.2f}%, "
          f"top-5 {summary['val_top5']:.2f}%; weights {summary.get('weights')}")  # fmt: skip
    return 0


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    import dataclasses

    from .engine import TrainConfig

    p.add_argument("--config", help="a YAML file of settings (flags override it)")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if kind == "bool":
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        elif kind.startswith("int"):
            p.add_argument(flag, dest=f.name, type=int, default=None)
        elif kind.startswith("float"):
            p.add_argument(flag, dest=f.name, type=float, default=None)
        else:
            p.add_argument(flag, dest=f.name, default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inceptionv4", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="the networks this package builds")
    p.set_defaults(func=_list)
    p = sub.add_parser("info", help="a network's model card")
    p.add_argument("model", help="a name from `inceptionv4 list`")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_info)
    p = sub.add_parser("convert", help="a released checkpoint -> an inceptionv4 .safetensors bundle")
    p.add_argument("--from", dest="source", choices=("timm", "cadene", "facenet", "keras", "tf-slim"), default=None,
                   help="who wrote SRC (detected from its names when omitted)")  # fmt: skip
    p.add_argument("--model", required=True, help="the network SRC holds (see `inceptionv4 list`)")
    p.add_argument("--keep-background", action="store_true", help="keep class 0 of 1001-class TensorFlow heads")
    p.add_argument("src", help="the checkpoint: .safetensors, .pth/.bin (read without unpickling code), .h5, TF prefix")
    p.add_argument("dst", help="the bundle to write (.safetensors)")
    p.set_defaults(func=_convert)
    p = sub.add_parser("train", help="train a network (single process, or under torchrun for DDP)")
    _add_train_flags(p)
    p.set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, RuntimeError) as err:
        print(f"inceptionv4 {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
