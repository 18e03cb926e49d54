"""What request batching buys a server: `inceptionv4 serve`'s settings under concurrent clients.

    python benchmarks/serve.py [--model inception_v4] [--clients 16] [--requests 64]
                               [--backends torch onnxruntime openvino] [--precision fp32] [--json out.json]

For each backend (every one installed, by default) it starts `InferenceServer`s in this process,
one answering one image per forward pass (--max-batch 1) and one batching whatever is waiting (up
to --max-batch), all up at once. In each round, every server in turn (the order reversed every other round) gets --requests
posts of a 500x375 JPEG from --clients concurrent clients (a separate process: their HTTP work
does not hold this process's GIL). Prints the median images per second over rounds, the median of
each round's ratio to the same backend unbatched, and the clients' latency over all rounds (p50,
p90: the wall time of one request, queueing included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date

import numpy as np
import torch
from PIL import Image

import inceptionv4 as iv
from inceptionv4.infer.serve import InferenceServer
from inceptionv4.infer.session import installed, open_session, vector_units

CLIENTS = r"""
import http.client, json, sys, threading, time
from urllib.parse import urlsplit
url, clients, requests, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
body = open(path, "rb").read()
u = urlsplit(url)
lock, todo, times, errors = threading.Lock(), [requests], [], []
def client():
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    while True:
        with lock:
            if todo[0] == 0:
                return
            todo[0] -= 1
        t = time.perf_counter()
        conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": "image/jpeg"})
        resp = conn.getresponse()
        resp.read()
        with lock:
            (times if resp.status == 200 else errors).append(time.perf_counter() - t)
threads = [threading.Thread(target=client) for _ in range(clients)]
start = time.perf_counter()
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps({"wall": time.perf_counter() - start, "times": times, "errors": len(errors)}))
"""


def photo(path: str) -> None:
    """A 500x375 JPEG (ImageNet's typical size) of smooth noise: real decoding work."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (47, 63, 3), dtype=np.uint8)
    Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(path, quality=90)


def measure(server: InferenceServer, clients: int, requests: int, image: str) -> dict:
    """One burst of ``requests`` from ``clients`` concurrent clients: wall time and per-request times."""
    out = subprocess.run(
        [sys.executable, "-c", CLIENTS, server.url, str(clients), str(requests), image],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    r = json.loads(out.stdout)
    return {"img_per_s": len(r["times"]) / r["wall"], "times": r["times"], "errors": r["errors"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="inception_v4")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=32, help="requests per setting and round, over all clients")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--backends", nargs="+", choices=("torch", "onnxruntime", "openvino"),
                    default=[b for b in ("torch", "onnxruntime", "openvino") if installed(b)])  # fmt: skip
    ap.add_argument("--precision", default="fp32", help="fp32, or bf16 (torch, OpenVINO) where the CPU has it")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = iv.create_model(args.model).eval()
    settings = [(b, 1) for b in args.backends] + [(b, args.max_batch) for b in args.backends]
    servers, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        image = os.path.join(tmp, "photo.jpg")
        photo(image)
        try:
            for backend, max_batch in settings:  # every server up at once: the rounds interleave them
                start = time.perf_counter()
                session = open_session(model, backend=backend, precision=args.precision)
                servers.append(InferenceServer(session, port=0, max_batch=max_batch).start())
                measure(servers[-1], args.clients, 2 * args.clients, image)  # warm the path and the clients
                servers[-1].classifier.batches = servers[-1].classifier.images = 0
                rows.append({"path": f"{backend} {args.precision}", "max_batch": max_batch,
                             "setup_s": time.perf_counter() - start, "rounds": []})  # fmt: skip
            for k in range(args.rounds):
                order = list(range(len(servers)))[:: 1 if k % 2 == 0 else -1]  # reversed every other round
                for i in order:
                    time.sleep(0.1)
                    rows[i]["rounds"].append(measure(servers[i], args.clients, args.requests, image))
                print(f"round {k + 1}/{args.rounds}: " + ", ".join(f"{r['rounds'][-1]['img_per_s']:.2f}" for r in rows),
                      file=sys.stderr, flush=True)  # fmt: skip
            for row, server in zip(rows, servers, strict=True):
                served = server.classifier.describe()["served"]
                row["mean_batch"] = served["images"] / max(served["batches"], 1)
        finally:
            for server in servers:
                server.close()
    base = {r["path"]: r for r in rows if r["max_batch"] == 1}
    for r in rows:
        b = base[r["path"]]
        times = sorted(t for x in r["rounds"] for t in x["times"])
        r["img_per_s"] = statistics.median(x["img_per_s"] for x in r["rounds"])
        r["vs_unbatched"] = statistics.median(
            x["img_per_s"] / y["img_per_s"] for x, y in zip(r["rounds"], b["rounds"], strict=True)
        )
        r["p50_ms"], r["p90_ms"] = 1000 * statistics.median(times), 1000 * times[int(0.9 * (len(times) - 1))]
        r["errors"] = sum(x["errors"] for x in r["rounds"])
        for x in r["rounds"]:
            del x["times"]
    print(f"\n{args.model}, {args.clients} concurrent clients, {args.rounds} rounds of {args.requests} requests, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()} ({vector_units()}), "
          f"torch {torch.__version__}, {date.today()}\n")  # fmt: skip
    print("| path | max batch | img/s | vs same path, max batch 1 | p50 ms | p90 ms | mean batch | errors | setup s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['max_batch']} | {r['img_per_s']:.2f} | {r['vs_unbatched']:.2f}x | "
              f"{r['p50_ms']:.0f} | {r['p90_ms']:.0f} | {r['mean_batch']:.1f} | {r['errors']} | {r['setup_s']:.1f} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "clients": args.clients, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
