"""Commands about the networks and their weights: ``list``, ``info``, ``convert``, ``export``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..models import Preprocessing, build_model, count_params, get_model_card, list_models, released_weights
from ..models.complexity import stage_shapes
from ..models.preprocessing import MAX_INPUT_SIZE
from .args import number


def register(sub) -> None:
    p = sub.add_parser("list", help="the networks this package builds")
    p.set_defaults(func=_list)
    p = sub.add_parser("info", help="a network's model card, or what a weights file holds")
    p.add_argument("model", help="a name from `inceptionv4 list`, or a weights bundle (.safetensors)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_info)
    p = sub.add_parser("convert", help="a released checkpoint -> an inceptionv4 .safetensors bundle")
    p.add_argument("--from", dest="source", choices=("timm", "cadene", "facenet", "keras", "tf-slim"), default=None,
                   help="who wrote SRC (detected from its names when omitted)")  # fmt: skip
    p.add_argument("--model", help="the network SRC holds (see `inceptionv4 list`; default: the one its names and "
                                   "shapes fit)")  # fmt: skip
    p.add_argument("--keep-background", action="store_true", help="keep class 0 of 1001-class TensorFlow heads")
    p.add_argument("src", help="the checkpoint: .safetensors, .pth/.bin (read without unpickling code), .h5, TF prefix")
    p.add_argument("dst", help="the bundle to write (.safetensors)")
    p.set_defaults(func=_convert)
    p = sub.add_parser("export", help="ONNX / TorchScript / torch.export / a Triton model repository, checked against eager")
    p.add_argument("output", help="the file to write (--format triton: the repository folder)")
    p.add_argument("--weights", help="a weights file (random weights of --model if omitted)")
    p.add_argument("--model", help="the network")
    p.add_argument("--format", choices=("onnx", "torchscript", "exported-program", "triton"), default="onnx",
                   help="what to write; triton: a model repository folder")  # fmt: skip
    p.add_argument("--max-batch-size", type=number(int, 1, 65536), default=32, help="triton: the config's max_batch_size")
    p.add_argument("--input-size", type=number(int, 75, MAX_INPUT_SIZE), help="the input size to trace at (default: the model's)")
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the convolutions (inference)")
    p.set_defaults(func=_export)


def _list(args: argparse.Namespace) -> int:
    for name in list_models():
        card = get_model_card(name)
        print(f"{name:<28} {card.num_params / 1e6:6.1f}M params {card.gflops:6.2f} GFLOPs  {card.title}")
    return 0


def _info_file(args: argparse.Namespace) -> int:
    from ..weights import describe_bundle

    d = describe_bundle(args.model)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    names = d["class_names"] or []
    if not names and d.get("label_set"):
        from ..weights import class_names

        names = class_names(d["label_set"])
    classes = f"{d['num_classes']} classes" + (f" ({d['label_set']})" if d.get("label_set") else "")
    if names:
        classes += ": " + ", ".join(map(str, names[:10])) + (", ..." if len(names) > 10 else "")
    pre = d["preprocessing"]
    print(f"{d['path']}: {d['architecture']} weights bundle, {d['bytes'] / 2**20:.1f} MiB, sha256 {d['sha256']}")
    print(f"  {classes}")
    if pre:
        print(f"  preprocessing: {Preprocessing.from_dict(pre).summary()}")  # checked when the metadata was read
    print(f"  source: {d.get('source') or 'not recorded'}")
    if d.get("build_kwargs"):
        built = ", ".join(f"{k} {'(the network default)' if v is None else v}" for k, v in d["build_kwargs"].items())
        print(f"  built with: {built}")
    recorded = d.get("meta") if isinstance(d.get("meta"), dict) else {"recorded": d["meta"]} if d.get("meta") else {}
    for key, value in recorded.items():  # what the writer recorded, e.g. train's started_from
        print(f"  {key.replace('_', ' ')}: {value if isinstance(value, str) else json.dumps(value)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    import torch

    if args.model not in list_models() and (Path(args.model).suffix or os.sep in args.model):
        return _info_file(args)  # a weights file, not a network's name
    card = get_model_card(args.model)  # ValueError for an unknown name
    with torch.device("meta"):
        model = build_model(args.model)
    report = card.to_dict()
    report["released_weights"] = [w.to_dict() for w in released_weights(card.name)]
    report["feature_info"] = [f.to_dict() for f in model.feature_info]
    report["params_recounted"] = count_params(model)
    report["stage_shapes_299"] = [{"module": n, "shape": list(shape)} for n, shape in stage_shapes(model)]
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{card.name}: {card.title} ({card.figures}), {card.layout} layout")
    print(f"  parameters {card.num_params:,}   GFLOPs @299 {card.gflops:.2f}")
    print(f"  preprocessing: {card.preprocessing.summary()}; minimum input {card.min_input_size[-1]} px")
    if card.paper_top1 is not None:
        print(f"  paper (Table 2) top-1/top-5: {card.paper_top1}/{card.paper_top5}")
    if card.released_top1 is not None:
        print(f"  released checkpoint top-1/top-5: {card.released_top1}/{card.released_top5}")
    print("  stages at 299x299 (HxWxC): " + ", ".join(f"{n} {s[1]}x{s[2]}x{s[0]}" for n, s in stage_shapes(model)))
    for f in model.feature_info:
        print(f"  feature stride {f.reduction:>2}: {f.module} ({f.num_chs} channels)")
    for w in released_weights(card.name):
        acc = f"{w.top1}/{w.top5}" if w.top1 is not None else "not published"
        how = f"pretrained={w.name!r}" if w.hub else f"{w.file} from {w.where}"
        print(f"  weights {w.name}: {w.classes}; {w.preprocessing.summary()}; top-1/top-5 {acc}; {how}")
    if card.notes:
        print(f"  note: {card.notes}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from ..weights.bundle import convert_file, read_bundle_metadata

    out = convert_file(args.src, args.dst, source=args.source, model=args.model, keep_background=args.keep_background)
    meta = read_bundle_metadata(out)
    print(f"wrote {out}: {meta['architecture']}, {meta['num_classes']} classes, from {meta['source']}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..api import load_network
    from ..engines.export import export_model

    if args.weights is None and args.model is None:
        raise ValueError("say what to export: --weights FILE (a trained or converted model) or --model NAME "
                         f"(random weights; one of {', '.join(list_models())})")  # fmt: skip
    (model,) = [load_network(args.weights, args.model)] if args.weights else [None]
    if model is None:
        model = build_model(args.model)
    if args.format == "triton":
        from ..tools.triton import export_triton

        if args.input_size is not None or args.fold_bn:
            raise ValueError("--format triton exports at the model's own input size, BatchNorm folded: drop "
                             "--input-size and --fold-bn")  # fmt: skip
        r = export_triton(model, args.output, max_batch_size=args.max_batch_size)
        for variant, m in r["models"].items():
            print(f"wrote {m['path']}/ ({m['backend']} backend; config.pbtxt, labels.txt, 1/)")
        print(f"and {r['repository']}/README.md (the client's preprocessing), client.py; max |diff| of the ONNX "
              f"model vs eager: {r['max_abs_diff']:.2e}. Serve: tritonserver --model-repository={r['repository']}")  # fmt: skip
        return 0
    report = export_model(model, args.output, format=args.format, input_size=args.input_size, fold_bn=args.fold_bn)
    print(
        f"wrote {report['path']} ({report['format']}, dynamic batch); max |diff| vs eager: {report['max_abs_diff']:.2e}"
    )
    return 0
