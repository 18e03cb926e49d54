"""``embed`` against ``predict`` on the same files, side by side: does writing embeddings cost more
than ranking classes?

    python benchmarks/embed.py [--model inception_v4] [--images 64] [--rounds 3] [--ray N] [--json out.json]

``--images`` 500x375 JPEGs, random weights of ``--model`` at 299 px, the session ``--precision
auto`` opens (the CPU's engine). Per round, in alternating order: ``predict()`` over the files, and
``embed_rows()`` over the same files written to a fresh Parquet dataset (``write_parquet``: what
``inceptionv4 embed`` does). With ``--ray N``, also ``embed --ray`` on a local Ray cluster of this
machine's cores, N actors of one CPU each: a whole run each round, the actors' start (and engine
build) included, as a user meets it. Prints the best round of each in images per second and each
one's ratio to predict.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import inceptionv4 as iv
from inceptionv4.devices import vector_units
from inceptionv4.engines.open import open_session
from inceptionv4.infer.embed import embed_rows
from inceptionv4.infer.outputs import embedding_schema, write_parquet
from inceptionv4.infer.predict import predict


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="inception_v4")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ray", type=int, default=0, metavar="N", help="also embed on a local Ray cluster, N actors")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = folder / "w.safetensors"
        iv.save_weights(iv.create_model(args.model).eval(), weights)
        rng = np.random.default_rng(0)
        for i in range(args.images):
            field = rng.normal(0, 1, (24, 32, 3)).cumsum(0).cumsum(1)
            pixels = ((field - field.min()) / np.ptp(field) * 255).astype(np.uint8)
            Image.fromarray(pixels).resize((500, 375), Image.Resampling.BICUBIC).save(folder / f"{i:04d}.jpg")
        files = sorted(str(f) for f in folder.glob("*.jpg"))
        classes = open_session(weights, precision="auto")
        vectors = open_session(weights, precision="auto", output="embeddings")

        def run_embed() -> None:
            out = folder / "emb.parquet"
            shutil.rmtree(out, ignore_errors=True)
            write_parquet(embed_rows(vectors, files), out, lambda r: embedding_schema(len(r["embedding"])),
                          lambda r: {"key": r["file"], "embedding": r["embedding"]})  # fmt: skip

        paths = {"predict": lambda: list(predict(classes, files)), "embed -> Parquet": run_embed}
        if args.ray:
            import ray

            from inceptionv4.engines.options import SessionOptions
            from inceptionv4.infer.outputs import to_parquet

            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
            options = SessionOptions(precision="auto", output="embeddings")

            def run_ray() -> None:
                out = folder / "ray.parquet"
                shutil.rmtree(out, ignore_errors=True)
                to_parquet(weights, out, files, options, ray="auto", ray_actors=args.ray)

            paths[f"embed --ray ({args.ray} actors)"] = run_ray
        for run in paths.values():  # warm-up
            run()
        best = {name: float("inf") for name in paths}
        for r in range(args.rounds):
            for name in paths if r % 2 == 0 else reversed(paths):
                start = time.perf_counter()
                paths[name]()
                best[name] = min(best[name], time.perf_counter() - start)
    rates = {name: args.images / s for name, s in best.items()}
    print(f"{date.today()}; {vector_units()}; torch {torch.__version__}; {args.model} at 299 px on "
          f"{classes.backend} {classes.precision}; {args.images} 500x375 JPEGs, best of {args.rounds} rounds\n")  # fmt: skip
    print("| path | img/s | vs predict |\n|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} | {rate / rates['predict']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": vector_units(), "img_per_s": rates}, indent=2))


if __name__ == "__main__":
    main()
