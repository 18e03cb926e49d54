"""Commands that run a session over images: ``eval``, ``predict``, ``quantize``, ``bench``; and
the session flags every session command (``serve`` too) takes, generated from
:class:`~inceptionv4.engines.options.SessionOptions`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from ..engines.options import SessionOptions
from ..models.preprocessing import MAX_INPUT_SIZE
from ..weights.io import atomic_write, check_writable
from .args import Retired, add_settings, given, number, printable


def register(sub) -> None:
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
    p.add_argument("--explain-errors", metavar="DIR",
                   help="write a heatmap overlay PNG for each misclassified image, worst (most confident) first: "
                        "why the network chose the wrong class (docs/explain.md)")  # fmt: skip
    p.add_argument("--explain-limit", type=number(int, 1, 1_000_000), default=100, metavar="N",
                   help="most overlays --explain-errors writes")  # fmt: skip
    add_explain_flags(p)
    add_session_flags(p, workers=True, precision="fp32")  # eval reproduces published numbers: fp32
    p.set_defaults(func=_eval)

    p = sub.add_parser("predict", help="top-k classes of image files, folders or globs")
    add_input_flags(p)
    p.add_argument("--topk", type=number(int, 1), default=5, help="classes shown per image")
    p.add_argument("--batch-size", type=number(int, 1, 65536), default=None, metavar="N",
                   help="images per pass (default: 16 on a CPU, 256 on a GPU)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--out", metavar="PREDS.parquet",
                   help="write the top-k of each image as Parquet rows (key, top) instead of printing them; a rerun "
                        "skips the images already written (docs/evaluation.md)")  # fmt: skip
    p.add_argument("--explain", metavar="DIR",
                   help="also write one overlay PNG per image into DIR: the heatmap of the class predicted over the "
                        "image, class and probability in the title (docs/explain.md)")  # fmt: skip
    add_explain_flags(p)
    add_ray_flags(p, "with --out")
    add_session_flags(p, workers=True)
    p.set_defaults(func=_predict)

    _register_embed(sub)

    p = sub.add_parser("quantize", help="calibrated int8 (OpenVINO NNCF or onnxruntime QDQ), checked on held-out images")
    p.add_argument("--weights", required=True, help="the fp32 weights (a bundle or checkpoint)")
    p.add_argument("--model", help="the network, for weights files that do not say it")
    p.add_argument("--calibrate", required=True, metavar="DIR",
                   help="a folder of images like the ones it will see (class folders named as the network's "
                        "classes also give top-1/top-5)")  # fmt: skip
    p.add_argument("--check", metavar="DIR", help="judge on this folder instead of holding out a quarter of --calibrate")
    p.add_argument("--backend", choices=("openvino", "onnxruntime"), default="openvino",
                   help="the engine the artefact is for: OpenVINO (NNCF) or onnxruntime (static QDQ)")  # fmt: skip
    p.add_argument("--out", required=True, metavar="Q", help="the artefact: Q.xml (openvino) or Q.onnx (onnxruntime)")
    p.add_argument("--min-agreement", type=number(float, 0, 1), default=0.99,
                   help="least top-1 agreement with fp32 on the held-out images; below it nothing is written")
    p.add_argument("--calibration-images", type=number(int, 1, 1_000_000), default=300, metavar="N",
                   help="most images calibrated on")  # fmt: skip
    p.add_argument("--full-decode", action="store_true",
                   help="decode every JPEG at full size (default: a large one is decoded reduced, as predict does)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_quantize)
    _register_bench(sub)


#: the torch CPU forms the engines replaced, and what to give instead
RETIRED_FORMS = (
    "the ONNX engines are faster on a CPU and are the default there (--backend auto: OpenVINO, else "
    "onnxruntime; --precision bf16, or an int8 artefact from `inceptionv4 quantize`); "
    "`inceptionv4 bench MODEL` times every path side by side. For torch itself, --compile"
)


def add_input_flags(p: argparse.ArgumentParser) -> None:
    """predict's and embed's inputs: files, folders and globs, or one dataset (shards, HF)."""
    p.add_argument("inputs", nargs="+", help="image files, folders, or quoted globs; with --dataset, its one source")
    p.add_argument("--dataset", choices=("files", "wds", "hf"), default="files",
                   help="what the inputs are: files (and folders, globs), wds (one WebDataset shard pattern, e.g. "
                        "'shards/train-{000000..000099}.tar'; samples need no .cls), or hf (a saved Hugging Face "
                        "dataset; no label column needed)")  # fmt: skip
    p.add_argument("--split", help="--dataset hf: the split (default: train)")
    p.add_argument("--image-column", help="--dataset hf: the image column (default: found by its type)")


def add_ray_flags(p: argparse.ArgumentParser, when: str = "") -> None:
    """The flags that run a command's session on Ray actors (docs/evaluation.md)."""
    p.add_argument("--ray", metavar="ADDRESS",
                   help=f"{when + ': ' if when else ''}run on a Ray cluster: auto (the one this machine joined), "
                        "host:port, ray://host:port, or local (start one on this machine); the session runs on Ray "
                        "actors, images are read and decoded by Ray tasks, rows come back here to be written")  # fmt: skip
    p.add_argument("--ray-actors", type=number(int, 1, 100_000), default=1, metavar="N",
                   help="--ray: actors, each with the session loaded once (one GPU each on CUDA)")
    p.add_argument("--ray-cpus", type=number(float, 0.01, 1024), default=1.0, metavar="C",
                   help="--ray: CPUs each CPU actor takes")


def input_source(args: argparse.Namespace) -> tuple[list[str] | None, object]:
    """(inputs, None) for files, folders and globs; (None, the dataset) for --dataset wds / hf."""
    if args.dataset == "files":
        if args.split or args.image_column:
            raise ValueError("--split and --image-column read a Hugging Face dataset: give --dataset hf")
        return args.inputs, None
    if len(args.inputs) != 1:
        raise ValueError(f"--dataset {args.dataset} reads one source (a shard pattern or a saved dataset); got "
                         f"{len(args.inputs)}")  # fmt: skip
    from ..data import build_dataset

    columns = {"image_column": args.image_column} if args.dataset == "hf" else {}
    return None, build_dataset(args.dataset, args.split or "train", root=args.inputs[0], labelled=False, **columns)


def torchrun_world(options: SessionOptions):
    """(the World, the device) of this process: under torchrun (WORLD_SIZE > 1) it joins the group
    and takes its rank's device; alone, one process and the device the options say (None)."""
    from ..devices import resolve_device
    from ..distributed import World, init_distributed

    device = resolve_device(options.device)  # a GPU this machine lacks is said before anything is listed
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        world = init_distributed(device.type)
        return world, str(world.device)
    return World(), None


def add_session_flags(p: argparse.ArgumentParser, *, workers: bool, precision: str = "auto") -> None:
    """The flags of every command that runs a session: --weights, every
    :class:`~inceptionv4.engines.options.SessionOptions` setting (``precision`` is this command's
    default), and where images are decoded (with --workers for those that read files in bulk)."""
    p.add_argument("--weights", action="append", default=[],
                   help="a weights file or an int8 artefact (inceptionv4 quantize); repeat for an ensemble")  # fmt: skip
    add_settings(p, SessionOptions, defaults={"precision": precision}, skip=("output",))  # the command says it
    p.set_defaults(default_precision=precision)
    p.add_argument("--compile", dest="form", action="store_const", const="compile", help="the same as --form compile")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default=None, help=argparse.SUPPRESS)  # deprecated
    for flag in ("--optimize", "--fuse", "--parallel"):
        p.add_argument(flag, action=Retired, instead=RETIRED_FORMS)
    if workers:
        p.add_argument("--workers", type=number(int, 0, 64), default=0, metavar="N",
                       help="loader processes that decode and resample the images while the model runs (default 0: "
                            "threads of this process do, one per core)")  # fmt: skip
        p.add_argument("--decode", choices=("workers", "device"), default="workers",
                       help="where JPEGs are decoded and resampled: workers (loader workers, PIL: the reference "
                            "pixels) or the device (the batch at once, nvJPEG on a GPU; pixels within two levels of "
                            "PIL's)")  # fmt: skip


def add_explain_flags(p: argparse.ArgumentParser) -> None:
    """How heatmaps are computed (:class:`~inceptionv4.engines.options.ExplainOptions`), and the fp32
    weights of an int8 artefact."""
    from ..engines.options import ExplainOptions

    add_settings(p, ExplainOptions)
    p.add_argument("--explain-weights", action="append", default=[], metavar="FILE",
                   help="the fp32 weights an int8 artefact was quantized from, where its report's path is not "
                        "at hand (heatmaps need gradients); repeat for an ensemble")  # fmt: skip


def explain_options(args: argparse.Namespace):
    """The :class:`~inceptionv4.engines.options.ExplainOptions` the flags gave."""
    from ..engines.options import ExplainOptions

    return ExplainOptions(**given(args, ExplainOptions))


def open_explainer(args: argparse.Namespace, session):
    """The explainer of a session, as the explain flags say (a missing extra or fp32 weights: said now)."""
    from ..infer.explain import Explainer

    options = explain_options(args)
    return Explainer.of(session, weights=args.explain_weights or None, method=options.method, layer=options.layer)


def session_options(args: argparse.Namespace) -> SessionOptions:
    """The session settings the flags gave, over :class:`SessionOptions`' defaults (and the
    deprecated --amp read as --precision)."""
    values = given(args, SessionOptions)
    if getattr(args, "amp", None) is not None:
        print("inceptionv4: --amp is deprecated, use --precision (bf16, fp16)", file=sys.stderr)
        if values.get("precision") != args.default_precision:
            raise ValueError("give --precision or the deprecated --amp, not both")
        values["precision"] = {"none": "fp32"}.get(args.amp, args.amp)
    return SessionOptions(**values)


def check_weights(weights: list[str]) -> list[str]:
    if not weights:
        raise ValueError("give --weights (a bundle, a checkpoint or an int8 artefact; several for an ensemble)")
    return weights


def open_from_flags(args: argparse.Namespace, weights: list[str], device: str | None = None, **settings):
    """The session of eval / predict / embed / serve, from the flags every one of them shares
    (``settings``: the command's own, e.g. embed's output)."""
    from ..engines.open import open_session

    return open_session(check_weights(weights), session_options(args), **({"device": device} if device else {}),
                        **settings)  # fmt: skip


def _eval(args: argparse.Namespace) -> int:
    from ..data import build_dataset, run_split
    from ..distributed import cleanup
    from ..infer.evaluate import evaluate_protocol
    from ..plots import plot_confusion

    if sum(bool(x) for x in (args.data, args.list, args.run)) != 1:
        raise ValueError("give one of --data (a folder of class folders), --list (a list file) or --run (a training "
                         "run's folder: its held-out images)")  # fmt: skip
    if args.split and not args.run:
        raise ValueError("--split picks a split of --run RUN_DIR; give --run")
    if args.report:  # an evaluation can take hours: a report that cannot be written is said now
        check_writable(args.report)
    if args.explain_errors:
        check_writable(Path(args.explain_errors) / "overlay.png")
    own = [str(Path(args.run) / "model.safetensors")] if args.run and not args.weights else []
    weights = check_weights(args.weights + own + (args.ensemble or []))
    world, device = torchrun_world(session_options(args))  # under torchrun: each process takes a share of the images
    try:
        if args.run:
            dataset, scored = run_split(args.run, args.split or "val")
        else:
            dataset = build_dataset("list" if args.list else "folder", "val", root=args.list or args.data)
            scored = f"every image of {args.list or args.data}"
        session = open_from_flags(args, weights, device)
        explainer = open_explainer(args, session) if args.explain_errors and world.is_main else None
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
    print(f"{report['n']} images, {session.crops} crop(s), {report['models']} model(s) on {where}: "
          f"top-1 {report['top1']:.2f}%  top-5 {report['top5']:.2f}%  ({session.backend} {session.precision})")  # fmt: skip
    if args.report:
        with atomic_write(args.report) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2))
        png = Path(args.report).with_suffix(".confusion.png")
        plot_confusion([row[:-1] for row in report["confusion"]], report["classes"], png,
                       title=f"{session.architecture}, {session.crops} crop(s): top-1 {report['top1']:.2f}%")  # fmt: skip
        print(f"wrote {args.report} (the report) and {png} (its confusion matrix)")
    if explainer is not None:
        _write_error_overlays(explainer, dataset, report, args.explain_errors, args.explain_limit)
    for reason in report["skipped"]:
        print(f"skipped: {printable(reason)}", file=sys.stderr)
    return 0


def _write_error_overlays(explainer, dataset, report: dict, out_dir: str, limit: int) -> None:
    from ..infer.explain import explain_errors

    wrong = report["n"] - round(report["top1"] * report["n"] / 100)
    written = explain_errors(explainer, dataset, report, out_dir, limit=limit)
    for r in written:
        if "error" in r:
            print(f"{printable(r['file'])}: no overlay: {printable(r['error'])}", file=sys.stderr)
    shown = sum("overlay" in r for r in written)
    print(f"wrote {shown} overlay(s) of the {wrong} misclassified image(s) into {out_dir}, worst first "
          f"({explainer.method} at {explainer.layer})")  # fmt: skip


def _predict(args: argparse.Namespace) -> int:
    from ..infer.predict import predict

    if args.out and (args.explain or args.json):
        raise ValueError("--out writes the predictions as Parquet: drop --json and --explain, or --out")
    if args.ray and not args.out:
        raise ValueError("--ray writes the predictions as Parquet: give --out PREDS.parquet")
    if args.explain and args.dataset != "files":
        raise ValueError("--explain draws over image files: give files, folders or globs, not --dataset")
    if args.explain:
        check_writable(Path(args.explain) / "overlay.png")
    inputs, dataset = input_source(args)
    if args.out:
        return _to_parquet(args, inputs, dataset, "prediction")
    session = open_from_flags(args, args.weights)
    explainer = open_explainer(args, session) if args.explain else None
    explained: list[tuple[str, int]] = []
    failed = 0
    bar = not args.json and sys.stderr.isatty()  # a bar in a log file is noise
    if sys.stderr.isatty():  # what runs, as eval's and serve's banners say it; not in a log file
        chosen = " (auto)" if args.precision == "auto" else ""
        print(f"{session.architecture} on {session.backend} {session.precision}{chosen}, {session.crops} crop(s), "
              f"JPEG decoding {session.decode_size}", file=sys.stderr)  # fmt: skip
    for result in predict(session, inputs, dataset=dataset, topk=args.topk, batch_size=args.batch_size, progress=bar,
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
        if explainer is not None and result["ok"]:
            explained.append((result["file"], result["top"][0]["index"]))
    if explainer is not None:
        failed += _write_overlays(explainer, explained, args)
    return 1 if failed else 0


def _sigterm_exits() -> None:
    """SIGTERM (a scheduler's stop) ends the run as Ctrl-C does: what is finished gets written."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _unreadable(row: dict) -> None:
    print(f"{printable(row['file'])}: error: {printable(row['error'])}", file=sys.stderr)


def _to_parquet(args: argparse.Namespace, inputs, dataset, what: str) -> int:
    """embed, and predict --out: rows into a Parquet dataset (:func:`~inceptionv4.infer.outputs.to_parquet`);
    here, on Ray actors, or in this torchrun process's share."""
    from ..distributed import cleanup, gather_objects
    from ..infer.outputs import to_parquet

    options = session_options(args)
    if what == "embedding":
        options = dataclasses.replace(options, output="embeddings")
    _sigterm_exits()
    world, device = (None, None) if args.ray else torchrun_world(options)
    if device:
        options = dataclasses.replace(options, device=device)
    try:
        summary = to_parquet(check_weights(args.weights), args.out, inputs, options, dataset=dataset,
                             topk=args.topk, batch_size=args.batch_size, workers=args.workers,
                             decode=args.decode, world=world, ray=args.ray, ray_actors=args.ray_actors,
                             ray_cpus=args.ray_cpus, on_error=_unreadable,
                             progress=not getattr(args, "no_progress", False) and sys.stderr.isatty())  # fmt: skip
        every = gather_objects(summary, world) if world is not None else [summary]
    finally:
        if world is not None:
            cleanup(world)
    if world is not None and not world.is_main:
        return 0
    total = {k: sum(s[k] for s in every) for k in ("written", "errors")}
    done = summary["skipped"]  # every process read the same folder
    said = f" ({done} already there, skipped)" if done else ""
    errors = f"; {total['errors']} could not be read" if total["errors"] else ""
    where = f" by {len(every)} processes" if len(every) > 1 else (f" on Ray ({args.ray})" if args.ray else "")
    print(f"wrote {total['written']} {what} row(s) into {args.out}{where}{said}{errors}", file=sys.stderr)
    return 1 if total["errors"] else 0


def _embed(args: argparse.Namespace) -> int:
    inputs, dataset = input_source(args)
    return _to_parquet(args, inputs, dataset, "embedding")


def _verify(args: argparse.Namespace) -> int:
    from ..infer.embed import verify

    v = verify(args.weights, *args.faces, threshold=args.threshold, model=args.model, device=args.device)
    if args.json:
        print(json.dumps({"faces": args.faces, "distance": v.distance, "threshold": v.threshold, "same": v.same}))
    else:
        call = "the same person" if v.same else "different people"
        print(f"distance {v.distance:.4f}: {call} (threshold {v.threshold:g})")
    return 0


def _write_overlays(explainer, explained: list[tuple[str, int]], args: argparse.Namespace) -> int:
    """predict --explain: each predicted file's overlay (its top-1 class); the count that failed."""
    from ..infer.explain import write_overlays

    failed = 0
    images = ((file, file, index, None) for file, index in explained)
    for r in write_overlays(explainer, images, args.explain):
        failed += "error" in r
        if "error" in r:
            print(f"{printable(r['file'])}: no overlay: {printable(r['error'])}", file=sys.stderr)
        elif args.json:
            print(json.dumps(r))
    print(f"wrote {len(explained) - failed} overlay(s) into {args.explain} ({explainer.method} at "
          f"{explainer.layer})", file=sys.stderr)  # fmt: skip
    return failed


def _quantize(args: argparse.Namespace) -> int:
    from ..engines.quantize import quantize

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


def _register_embed(sub) -> None:
    """embed and verify: what an image's embedding is, and whether two faces are one person's."""
    p = sub.add_parser("embed", help="each image's embedding (an embedding head's, else the pooled features) as "
                       "Parquet rows; resumable, across machines on Ray or under torchrun")  # fmt: skip
    add_input_flags(p)
    p.add_argument("--out", required=True, metavar="EMB.parquet",
                   help="the Parquet dataset (a folder of parts) to write: rows of key and embedding; a rerun skips "
                        "the keys already there")  # fmt: skip
    p.add_argument("--batch-size", type=number(int, 1, 65536), default=None, metavar="N",
                   help="images per pass (default: 16 on a CPU, 256 on a GPU)")  # fmt: skip
    p.add_argument("--topk", type=number(int, 1), default=None, metavar="K",
                   help="also a top column: the K best classes by the network's classifier over the same features")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_ray_flags(p)
    add_session_flags(p, workers=True)
    p.set_defaults(func=_embed)

    p = sub.add_parser("verify", help="are two faces one person's? the distance between their embeddings (facenet)")
    p.add_argument("faces", nargs=2, metavar="FACE", help="two aligned face crops (160 px for facenet's weights)")
    p.add_argument("--weights", required=True, help="face-embedding weights: facenet-pytorch's .pt, or a bundle")
    p.add_argument("--threshold", required=True, type=number(float, 0, 2),
                   help="the largest distance called the same person (0-2; pick it on pairs you know)")
    p.add_argument("--model", help="the network, for weights files that do not say it")
    p.add_argument("--device", default="cpu", help="where the network runs: cpu, cuda, cuda:N, mps")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(func=_verify)


def _register_bench(sub) -> None:
    p = sub.add_parser("bench", help="every engine x precision this machine runs, side by side; or one torch path")
    p.add_argument("model", help="the network to time (see `inceptionv4 list`)")
    p.add_argument("--weights", help="time this weights file (default: random weights of MODEL)")
    p.add_argument("--batch-size", type=number(int, 1, 4096), nargs="+", default=None, metavar="N",
                   help="batch sizes (default: 16 and 1; one torch path: 16)")  # fmt: skip
    p.add_argument("--backend", nargs="+", help="only these backends (default: every one installed)")
    p.add_argument("--precision", nargs="+", help="only these precisions (default: every one this CPU runs)")
    p.add_argument("--rounds", type=number(int, 1, 1000), default=3, help="interleaved rounds; each path's best is kept")
    p.add_argument("--seconds", type=number(float, 0, 3600), default=2.0,
                   help="time per path, batch size and round (0: one timed pass)")  # fmt: skip
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
        single.add_argument(flag, action=Retired, instead=RETIRED_FORMS)
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from ..tools.bench import benchmark, compare_engines

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
