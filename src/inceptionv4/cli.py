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
