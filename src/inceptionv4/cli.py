"""The ``inceptionv4`` command: a thin layer over functions a user can import."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from .models import Preprocessing, build_model, count_params, get_model_card, list_models, released_weights
from .models.complexity import stage_shapes
from .models.preprocessing import MAX_INPUT_SIZE
from .weights.io import atomic_write, check_writable


def _info_file(args: argparse.Namespace) -> int:
    from .weights import describe_bundle

    d = describe_bundle(args.model)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    names = d["class_names"] or []
    if not names and d.get("label_set"):
        from .weights import class_names

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

    from .distributed import launch_rank
    from .train import TrainConfig, train

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


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    import dataclasses

    from .train.config import TrainConfig

    p.add_argument("--config", help="a YAML file of settings (flags override it)")
    p.add_argument("--amp", default=None, help=argparse.SUPPRESS)  # the deprecated name of --precision
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        shown = f" (default: {f.default})" if f.default is not None and kind != "bool" else ""
        common = {"dest": f.name, "default": None, "help": f.metadata["help"] + shown}  # the field's own record
        if kind == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif kind.startswith("int"):
            p.add_argument(flag, type=_setting(f.name, int), metavar="N", **common)
        elif kind.startswith("float"):
            p.add_argument(flag, type=_setting(f.name, float), metavar="X", **common)
        else:
            p.add_argument(flag, metavar=f.name.upper(), **common)


def _load_models(weights: list[str], model: str | None) -> list:
    from .infer.session import _load

    if not weights:
        raise ValueError("give --weights (a bundle or checkpoint file; several for an ensemble)")
    return [_load(w, model) for w in weights]


def _precision(args: argparse.Namespace) -> str:
    """--precision, or the deprecated --amp it replaces."""
    if getattr(args, "amp", None) is None:
        return args.precision
    print("inceptionv4: --amp is deprecated, use --precision (bf16, fp16)", file=sys.stderr)
    if args.precision != args.default_precision:
        raise ValueError("give --precision or the deprecated --amp, not both")
    return {"none": "fp32"}.get(args.amp, args.amp)


def _open_session(args: argparse.Namespace, weights: list[str], device: str | None = None):
    """The session of eval / predict / serve, from the flags every one of them shares."""
    from .infer.session import open_session

    return open_session(_check_weights(weights), **{**_session_options(args), **({"device": device} if device else {})})


def _check_weights(weights: list[str]) -> list[str]:
    if not weights:
        raise ValueError("give --weights (a bundle, a checkpoint or an int8 artefact; several for an ensemble)")
    return weights


def _session_options(args: argparse.Namespace) -> dict:
    """open_session's keyword arguments from the flags every session command shares."""
    return {"model": args.model, "backend": args.backend, "device": args.device, "precision": _precision(args),
            "crops": args.crops, "form": "compile" if args.compile else "eager", "channels_last": args.channels_last,
            "full_decode": args.full_decode}  # fmt: skip


class _Retired(argparse.Action):
    """A flag that was removed: using it is a usage error that says what to use instead."""

    def __init__(self, option_strings, dest, instead: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help=argparse.SUPPRESS, **kwargs)
        self.instead = instead

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string} was retired: {self.instead}")


#: the torch CPU forms the engines replaced, and what to give instead
_RETIRED_FORMS = (
    "the ONNX engines are faster on a CPU and are the default there (--backend auto: OpenVINO, else "
    "onnxruntime; --precision bf16, or an int8 artefact from `inceptionv4 quantize`); "
    "`inceptionv4 bench MODEL` times every path side by side. For torch itself, --compile"
)


def _add_session_flags(p: argparse.ArgumentParser, *, workers: bool, precision: str = "auto") -> None:
    """The flags of every command that runs a session: weights, backend, device, precision
    (``precision`` its default), crops, torch forms, decoding (and --workers for those that read
    files in bulk)."""
    # the choices are checked where they are defined (infer.session.open_session): importing it
    # here would load torchvision for `--help` and `list`
    p.add_argument("--weights", action="append", default=[],
                   help="a weights file or an int8 artefact (inceptionv4 quantize); repeat for an ensemble")  # fmt: skip
    p.add_argument("--model", help="the network, for weights files that do not say it")
    p.add_argument("--backend", default="auto",
                   help="what runs the network: auto (OpenVINO, else onnxruntime, on a CPU; torch on a GPU or "
                        "for a torch form), torch, onnxruntime, openvino")  # fmt: skip
    p.add_argument("--device", default="auto",
                   help="where it runs: auto (a GPU if PyTorch sees one), cpu, cuda, cuda:N, mps")  # fmt: skip
    p.add_argument("--precision", default=precision,
                   help="auto (the engine's own default on this CPU: bf16 where it computes BF16 natively, else fp32); "
                        "fp32; bf16 / fp16 (torch autocast, OpenVINO's precision hint); int8: give an artefact from "
                        "`inceptionv4 quantize` as --weights")  # fmt: skip
    p.set_defaults(default_precision=precision)
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default=None, help=argparse.SUPPRESS)  # deprecated
    p.add_argument("--crops", type=int, choices=(1, 10, 12, 144), default=1,
                   help="views per image: 1 (centre crop), 10 (corners + centre, mirrored), 12 or 144 "
                        "(docs/evaluation.md)")  # fmt: skip
    p.add_argument("--channels-last", action="store_true", help="torch: models and views in channels_last")
    p.add_argument("--compile", action="store_true",
                   help="torch: torch.compile of the BN-folded network, constants frozen (the first pass per "
                        "input shape compiles: 1-3 minutes on 2 CPU cores)")  # fmt: skip
    for flag in ("--optimize", "--fuse", "--parallel"):
        p.add_argument(flag, action=_Retired, instead=_RETIRED_FORMS)
    if workers:
        p.add_argument("--workers", type=number(int, 0, 64), default=0, metavar="N",
                       help="loader processes that decode and resample the images while the model runs (default 0: "
                            "threads of this process do, one per core)")  # fmt: skip
    where = "loader workers" if workers else "the connection threads"
    p.add_argument("--decode", choices=("workers", "device"), default="workers",
                   help=f"where JPEGs are decoded and resampled: workers ({where}, PIL: the reference pixels) or the "
                        "device (the batch at once, nvJPEG on a GPU; pixels within two levels of PIL's)")  # fmt: skip
    p.add_argument("--full-decode", action="store_true",
                   help="decode every JPEG at full size: the exact pixels published accuracy is measured on (default: "
                        "a JPEG at least twice the size the crops need is decoded reduced, 1/2 to 1/8, in the DCT "
                        "domain; docs/evaluation.md)")  # fmt: skip


def _eval(args: argparse.Namespace) -> int:
    from .data import build_dataset, run_split
    from .distributed import World, cleanup, init_distributed
    from .infer.evaluate import evaluate_protocol
    from .plots import plot_confusion

    if sum(bool(x) for x in (args.data, args.list, args.run)) != 1:
        raise ValueError("give one of --data (a folder of class folders), --list (a list file) or --run (a training "
                         "run's folder: its held-out images)")  # fmt: skip
    if args.split and not args.run:
        raise ValueError("--split picks a split of --run RUN_DIR; give --run")
    if args.report:  # an evaluation can take hours: a report that cannot be written is said now
        check_writable(args.report)
    own = [str(Path(args.run) / "model.safetensors")] if args.run and not args.weights else []
    weights = _check_weights(args.weights + own + (args.ensemble or []))
    from .devices import resolve_device

    resolve_device(args.device)  # a GPU this machine lacks is said before the dataset is listed
    if args.run:
        dataset, scored = run_split(args.run, args.split or "val")
    else:
        dataset = build_dataset("list" if args.list else "folder", "val", root=args.list or args.data)
        scored = f"every image of {args.list or args.data}"
    world, device = World(), None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: each process takes a share of the images
        world = init_distributed(resolve_device(args.device).type)
        device = str(world.device)
    try:
        session = _open_session(args, weights, device)
        report = evaluate_protocol(session, dataset, batch_size=args.batch_size,
                                   progress=not args.no_progress and sys.stderr.isatty(),  # no bar in a log file
                                   workers=args.workers, decode=args.decode, world=world)  # fmt: skip
    finally:
        cleanup(world)
    if not world.is_main:
        return 0
    report["scored"] = scored
    print(f"scored {scored}", file=sys.stderr)
    where = report["device"] + (f" x {world.size} processes" if world.distributed else "")
    print(f"{report['n']} images, {args.crops} crop(s), {report['models']} model(s) on {where}: "
          f"top-1 {report['top1']:.2f}%  top-5 {report['top5']:.2f}%  ({session.backend} {session.precision})")  # fmt: skip
    if args.report:
        with atomic_write(args.report) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2))
        png = Path(args.report).with_suffix(".confusion.png")
        plot_confusion([row[:-1] for row in report["confusion"]], report["classes"], png,
                       title=f"{session.architecture}, {args.crops} crop(s): top-1 {report['top1']:.2f}%")  # fmt: skip
        print(f"wrote {args.report} (the report) and {png} (its confusion matrix)")
    for reason in report["skipped"]:
        print(f"skipped: {printable(reason)}", file=sys.stderr)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .infer.predict import predict

    session = _open_session(args, args.weights)
    failed = 0
    bar = not args.json and sys.stderr.isatty()  # a bar in a log file is noise
    if sys.stderr.isatty():  # what runs, as eval's and serve's banners say it; not in a log file
        chosen = " (auto)" if args.precision == "auto" else ""
        print(f"{session.architecture} on {session.backend} {session.precision}{chosen}, {session.crops} crop(s), "
              f"JPEG decoding {session.decode_size}", file=sys.stderr)  # fmt: skip
    for result in predict(session, args.inputs, topk=args.topk, batch_size=args.batch_size, progress=bar,
                          workers=args.workers, decode=args.decode):  # fmt: skip
        if not result["ok"]:
            failed += 1
            if not args.json:
                print(f"{printable(result['file'])}: error: {printable(result['error'])}", file=sys.stderr)
        if args.json:
            print(json.dumps(result))  # ASCII: control characters and undecodable bytes escaped
        elif result["ok"]:
            best = ", ".join(f"{printable(t['name'])} {100 * t['prob']:.1f}%" for t in result["top"])
            print(f"{printable(result['file'])}: {best}")
    return 1 if failed else 0


def printable(text: str) -> str:
    """``text`` safe for one terminal line: control characters (a newline, an ANSI escape) as
    Python escapes, and the bytes of a file name that were not UTF-8 (held as surrogates) as
    ``\\xNN``, so one name is one line and any stdout encoding can print it."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)


def number(kind: type, low: float | None = None, high: float | None = None, *, above: float | None = None):
    """An argparse type for a ``kind`` (int or float) flag that must be finite and within
    [``low``, ``high``] (or > ``above``), checked while parsing: ``--max-wait-ms inf`` or
    ``--workers 100000`` is a usage error before any model loads."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if (low is not None and value < low) or (high is not None and value > high) or (above is not None and value <= above):
            rule = (f"> {above:g}" if above is not None else f">= {low:g}" if low is not None else "") + (
                f"{' and ' if low is not None or above is not None else ''}<= {high:g}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _setting(name: str, kind: type):
    """An argparse type for a training setting: its kind, then its range as TrainConfig states it."""
    from .train.config import TrainConfig

    def parse(text: str):
        value = number(kind)(text)
        try:
            TrainConfig.check_setting(name, value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value

    parse.__name__ = kind.__name__
    return parse


def _port(text: str) -> int:
    """--port, checked while parsing: not after the models have loaded and warmed up."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535 (0: any free port), got {port}")
    return port


def _host(text: str) -> str:
    """--host, checked while parsing: an empty one would silently mean every interface."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: give 127.0.0.1 (this machine only) or 0.0.0.0 / :: (every interface)")
    return text


def _serve(args: argparse.Namespace) -> int:
    import logging
    import signal

    from .infer.serve import InferenceServer, serve_workers

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    limits = {"topk": args.topk, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "decode": args.decode,
              "max_body_bytes": int(args.max_body_mb * 2**20), "max_images": args.max_images,
              "queue_size": args.queue_size, "header_timeout_s": args.header_timeout,
              "body_timeout_s": args.body_timeout, "access_log": not args.quiet,
              "decode_memory_bytes": int(args.decode_memory_mb * 2**20)}  # fmt: skip
    endpoints = "the page at /, POST /v1/predict, GET /v1/model, /health, /metrics, /docs; Ctrl-C stops"
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.workers > 1:
        _check_weights(args.weights)

        def announce(url: str, card: dict) -> None:
            print(f"serving {card['architecture']} ({card['backend']} {card['precision']}) with {args.workers} "
                  f"worker processes at {url}: {endpoints}", file=sys.stderr, flush=True)  # fmt: skip

        serve_workers(args.weights, _session_options(args), limits, args.workers, host=args.host, port=args.port,
                      announce=announce)  # fmt: skip
        print("stopped", file=sys.stderr)
        return 0
    session = _open_session(args, args.weights)
    print(f"loaded {len(session.runners)} model(s) ({session.backend} {session.precision}); warming up ...",
          file=sys.stderr)  # fmt: skip
    server = InferenceServer(session, host=args.host, port=args.port, **limits)
    info = server.classifier.describe()
    print(f"serving {info['architecture']} ({info['backend']} {info['precision']}, {info['form']}, "
          f"{info['num_classes']} classes, batches of up to {info['max_batch']}) at {server.url}: {endpoints}",
          file=sys.stderr, flush=True)  # fmt: skip
    # uvicorn stops gracefully on SIGINT / SIGTERM (docker stop, systemd, kill), then sends the
    # signal again to the handler before it: SIGTERM's must then not kill the process
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    print("stopped", file=sys.stderr)
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from .infer.quantize import quantize

    r = quantize(args.weights, args.calibrate, args.out, backend=args.backend, model=args.model,
                 min_agreement=args.min_agreement, calibration_images=args.calibration_images,
                 check=args.check, full_decode=args.full_decode)  # fmt: skip
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"wrote {r['path']} ({r['backend']} int8, {r['architecture']}; calibrated on {r['calibration_images']} "
          f"images): top-1 agreement with fp32 {100 * r['agreement']:.2f}% on {r['heldout_images']} held-out "
          f"images, largest probability change {r['max_prob_drift']:.4f}")  # fmt: skip
    if "int8_top1" in r:
        print(f"  held-out top-1 / top-5: fp32 {r['fp32_top1']:.2f}% / {r['fp32_top5']:.2f}%, "
              f"int8 {r['int8_top1']:.2f}% / {r['int8_top5']:.2f}%")  # fmt: skip
    print(f"  report: {r['report']}; {len(r['skipped'])} unreadable file(s) passed over")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .tools.export import export_model

    if args.weights is None and args.model is None:
        raise ValueError("say what to export: --weights FILE (a trained or converted model) or --model NAME "
                         f"(random weights; one of {', '.join(list_models())})")  # fmt: skip
    (model,) = _load_models([args.weights], args.model) if args.weights else [None]
    if model is None:
        model = build_model(args.model)
    if args.format == "triton":
        from .tools.triton import export_triton

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


def _bench(args: argparse.Namespace) -> int:
    from .tools.bench import benchmark, compare_engines

    single = args.mode == "train" or args.compile or args.compare or args.channels_last
    if not single:
        r = compare_engines(args.model, weights=args.weights, batch_sizes=tuple(args.batch_size or (16, 1)), rounds=args.rounds,
                            seconds=args.seconds, device=args.device, backends=args.backend,
                            precisions=args.precision, log=lambda t: print(t, file=sys.stderr))  # fmt: skip
        if args.json:
            print(json.dumps(r, indent=2))
            return 0
        print(f"{r['model']} on {r['device']} ({r['cpu']}; {r['threads']} threads), best of {r['rounds']} "
              "interleaved rounds:")  # fmt: skip
        refs = [k for k in ("vs timm eager fp32", "vs onnxruntime fp32", "vs openvino fp32") if k in r["rows"][0]]
        print(f"  {'batch':>5}  {'path':<32} {'img/s':>8}" + "".join(f"  {k[3:]:>18}" for k in refs))
        for row in r["rows"]:
            print(f"  {row['batch_size']:>5}  {row['path']:<32} {row['img_per_s']:>8.1f}"
                  + "".join(f"  {row.get(k, float('nan')):>17.2f}x" for k in refs))  # fmt: skip
        return 0
    args.batch_size = args.batch_size or [16]
    if len(args.batch_size) > 1 or (args.precision and len(args.precision) > 1) or args.backend:
        raise ValueError("--compile, --compare, --channels-last and --mode train time one torch path: give one "
                         "--batch-size and one --precision, and no --backend")  # fmt: skip
    precision = args.precision[0] if args.precision else "fp32"
    r = benchmark(args.model, batch_size=args.batch_size[0], input_size=args.input_size, device=args.device,
                  precision=precision, channels_last=args.channels_last, compile=args.compile, mode=args.mode,
                  warmup=args.warmup, iters=args.iters, compare=args.compare)  # fmt: skip
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    o = r["ours"]
    print(f"{r['model']} {r['mode']} bs {r['batch_size']} {r['precision']} {r['device']}"
          f"{' channels_last' if r['channels_last'] else ''}{' compiled' if r['compile'] else ''}: "
          f"{o['img_per_s']:.1f} img/s, p50 {o['latency_p50_ms']:.1f} ms, p90 {o['latency_p90_ms']:.1f} ms, "
          f"{r['gflops_per_image']:.2f} GFLOP/img, {o['tflops']:.3f} TFLOP/s")  # fmt: skip
    if "timm" in r:
        print(f"timm: {r['timm']['img_per_s']:.1f} img/s -> ours / timm = {r['speedup_vs_timm']:.2f}x")
    return 0


def _shard(args: argparse.Namespace) -> int:
    from .data.shards import write_shards

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

    from .demo import format_report, run_demo

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run_demo(args.out, epochs=args.epochs, max_steps=args.max_steps, seed=args.seed)
    print(format_report(report))
    return 0


class _Help(argparse.HelpFormatter):
    """Every option's help ends with its default (when it has one worth showing) and says when
    the option is required."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.help is argparse.SUPPRESS or not action.option_strings:
            return text
        if action.required:
            return text + " (required)"
        default = action.default
        if "%(default)" not in text and default not in (None, False, [], argparse.SUPPRESS) and action.nargs != 0:
            text += " (default: %(default)s)"
        return text


DESCRIPTION = (
    "Inception-v4, Inception-ResNet-v1 and Inception-ResNet-v2 (Szegedy et al. 2016): build, convert, train, "
    "evaluate, predict, serve, quantize, export and benchmark them. `inceptionv4 COMMAND --help` for each."
)


def build_parser() -> argparse.ArgumentParser:
    """The ``inceptionv4`` command's parser; each subcommand sets ``func``, which takes the
    parsed arguments and returns the exit status."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="inceptionv4", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"inceptionv4 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
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
    p = sub.add_parser("train", help="train a network (single process, or under torchrun for DDP)")
    _add_train_flags(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="top-1/top-5 on a labelled folder, 1/10/12/144 crops, ensembles")
    p.add_argument("--data", help="a folder of class folders (ImageNet WordNet-id folders map automatically)")
    p.add_argument("--list", help="a list file of '<path> <label>' lines instead of --data")
    p.add_argument("--run", metavar="RUN_DIR", help="a training run's folder: score the images it validated on (its "
                   "weights unless --weights is given)")  # fmt: skip
    p.add_argument("--split", choices=("val", "train"), help="with --run: which of its splits (default: val)")
    p.add_argument("--ensemble", nargs="+", help="several weights files whose softmax is averaged (Table 5)")
    p.add_argument("--batch-size", type=number(int, 1, 65536), default=None, metavar="N",
                   help="images gathered at a time (default: the fewest whose views fill whole passes: 64 views on "
                        "a CPU, 256 on a GPU)")  # fmt: skip
    p.add_argument("--report", help="write the JSON report here (and the confusion matrix beside it as PNG)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_session_flags(p, workers=True, precision="fp32")  # eval reproduces published numbers: fp32
    p.set_defaults(func=_eval)

    p = sub.add_parser("predict", help="top-k classes of image files, folders or globs")
    p.add_argument("inputs", nargs="+", help="image files, folders, or quoted globs")
    p.add_argument("--topk", type=number(int, 1), default=5, help="classes shown per image")
    p.add_argument(
        "--batch-size", type=number(int, 1, 65536), default=None, metavar="N", help="images per pass (default: 16 on a CPU, 256 on a GPU)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    _add_session_flags(p, workers=True)
    p.set_defaults(func=_predict)

    p = sub.add_parser("serve", help="an HTTP server: POST an image, get its top-k classes (requests batched)")
    p.add_argument("--host", type=_host, default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=_port, default=8080, help="0 picks a free port")
    p.add_argument("--topk", type=number(int, 1), default=5, help="classes per image unless a request asks (?topk=K)")
    p.add_argument("--max-batch", type=number(int, 1, 4096), default=8, help="most images run in one forward pass")
    p.add_argument("--max-wait-ms", type=number(float, 0, 60_000), default=5.0,
                   help="how long a request waits for others to share its batch")  # fmt: skip
    p.add_argument("--max-body-mb", type=number(float, high=4096, above=0), default=32.0, help="largest request body accepted (413 above)")
    p.add_argument("--max-images", type=number(int, 1, 100_000), default=64, help="most images in one request")
    p.add_argument("--decode-memory-mb", type=number(float, high=1 << 20, above=0), default=2048.0, metavar="MB",
                   help="memory the uploads being decoded may hold at once, estimated from each image's header; an "
                        "upload that would pass it waits, and one larger than it gets a 503 with the reason")  # fmt: skip
    p.add_argument("--queue-size", type=number(int, 1, 1_000_000), default=256,
                   help="most requests waiting for the model; beyond, 503 with Retry-After")  # fmt: skip
    p.add_argument("--header-timeout", type=number(float, high=3600, above=0), default=10.0, metavar="S",
                   help="seconds a client has to send a request's headers")  # fmt: skip
    p.add_argument("--body-timeout", type=number(float, high=3600, above=0), default=30.0, metavar="S",
                   help="seconds a client has to send a request's body")  # fmt: skip
    p.add_argument("--workers", type=number(int, 1, 64), default=1, metavar="N",
                   help="server processes on the port, each with its own copy of the model")  # fmt: skip
    _add_session_flags(p, workers=False)
    p.add_argument("--quiet", action="store_true", help="no access log")
    p.set_defaults(func=_serve)

    p = sub.add_parser("quantize", help="calibrated int8 (OpenVINO NNCF or onnxruntime QDQ), checked on held-out images")
    p.add_argument("--weights", required=True, help="the fp32 weights (a bundle or checkpoint)")
    p.add_argument("--model", help="the network, for weights files that do not say it")
    p.add_argument("--calibrate", required=True, metavar="DIR",
                   help="a folder of images like the ones it will see (class folders named as the network's "
                        "classes also give top-1/top-5)")  # fmt: skip
    p.add_argument("--check", metavar="DIR",
                   help="judge on this folder instead of holding out a quarter of --calibrate")  # fmt: skip
    p.add_argument("--backend", choices=("openvino", "onnxruntime"), default="openvino",
                   help="the engine the artefact is for: OpenVINO (NNCF) or onnxruntime (static QDQ)")  # fmt: skip
    p.add_argument("--out", required=True, metavar="Q", help="the artefact: Q.xml (openvino) or Q.onnx (onnxruntime)")
    p.add_argument("--min-agreement", type=number(float, 0, 1), default=0.99,
                   help="least top-1 agreement with fp32 on the held-out images (default 0.99); below it nothing "
                        "is written")  # fmt: skip
    p.add_argument("--calibration-images", type=number(int, 1, 1_000_000), default=300, metavar="N", help="most images calibrated on")
    p.add_argument("--full-decode", action="store_true",
                   help="decode every JPEG at full size (default: a large one is decoded reduced, as predict does)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_quantize)

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

    p = sub.add_parser("bench", help="every engine x precision this machine runs, side by side; or one torch path")
    p.add_argument("model", help="the network to time (see `inceptionv4 list`)")
    p.add_argument("--weights", help="time this weights file (default: random weights of MODEL)")
    p.add_argument("--batch-size", type=number(int, 1, 4096), nargs="+", default=None, metavar="N",
                   help="batch sizes (default: 16 and 1; one torch path: 16)")  # fmt: skip
    p.add_argument("--backend", nargs="+",
                   help="only these backends (default: every one installed)")  # fmt: skip
    p.add_argument("--precision", nargs="+",
                   help="only these precisions (default: every one this CPU runs)")  # fmt: skip
    p.add_argument("--rounds", type=number(int, 1, 1000), default=3, help="interleaved rounds; each path's best is kept")
    p.add_argument("--seconds", type=number(float, 0, 3600), default=2.0, help="time per path, batch size and round (0: one timed pass)")
    p.add_argument("--device", default="cpu", help="where to time: cpu, cuda, cuda:N, mps")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    single = p.add_argument_group("one torch path (any of these flags)")
    single.add_argument("--mode", choices=("inference", "train"), default="inference",
                        help="a forward pass, or a training step (forward, backward, SGD)")  # fmt: skip
    single.add_argument("--input-size", type=number(int, 75, MAX_INPUT_SIZE), default=299, help="image side in pixels")
    single.add_argument("--channels-last", action="store_true", help="model and input in channels_last")
    single.add_argument("--compile", action="store_true", help="torch.compile (ours, and timm's with --compare)")
    single.add_argument("--warmup", type=number(int, 0, 100_000), default=3, help="untimed steps first")
    single.add_argument("--iters", type=number(int, 1, 100_000), default=10, help="timed steps")
    single.add_argument("--compare", choices=("timm",), help="timm's model in the same run")
    for flag in ("--optimize", "--fuse", "--parallel"):
        single.add_argument(flag, action=_Retired, instead=_RETIRED_FORMS)
    p.set_defaults(func=_bench)

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
    for command in sub.choices.values():
        command.formatter_class = _Help
    parser.commands = sub.choices  # for main's "did you mean"
    return parser


#: a flag one command takes under another name: train loads weights with --pretrained, the others
#: with --weights
_OTHER_NAMES = {"--weights": "--pretrained", "--pretrained": "--weights"}


def unknown_flags_hint(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """The usage error for arguments ``parser`` does not take: argparse's own words, and for each
    unknown flag the name this command gives it, or the closest flag it has ("did you mean")."""
    import difflib

    known = [o for action in parser._actions for o in action.option_strings]
    hints = []
    for arg in extras:
        flag = arg.split("=", 1)[0]
        if not flag.startswith("--"):
            continue
        other = _OTHER_NAMES.get(flag)
        if other in known:
            hints.append(f"{flag}: this command calls it {other}")
        elif close := difflib.get_close_matches(flag, known, n=1, cutoff=0.75):
            hints.append(f"{flag}: did you mean {close[0]}?")
    return f"unrecognized arguments: {' '.join(extras)}" + (f" ({'; '.join(hints)})" if hints else "")


def main(argv: list[str] | None = None) -> int:
    """Run one command; 0 on success, 2 with one ``inceptionv4 CMD: error: ...`` line for bad input."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # said by the command's own parser, with what it calls the flag
        parser.commands[args.command].error(unknown_flags_hint(extras, parser.commands[args.command]))
    try:
        return args.func(args)
    except BrokenPipeError:  # `inceptionv4 ... | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except OSError as err:  # a path that cannot be read or written: a full disk, no permission, ...
        where = f": {err.filename}" if err.filename and str(err.filename) not in str(err.strerror or "") else ""
        text = f"{err.strerror}{where}" if err.strerror else str(err)
        print(f"inceptionv4 {args.command}: error: {text}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, ImportError, RuntimeError) as err:
        print(f"inceptionv4 {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
