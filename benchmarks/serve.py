"""`inceptionv4 serve` under concurrent clients: this checkout's server against another revision's.

    python benchmarks/serve.py --against REV [--model inception_v4] [--backend openvino]
                               [--clients 16] [--requests 32] [--rounds 3] [--json out.json]

Each server is a real `inceptionv4 serve` process on its own port, started from this checkout
and (``--against``) from a git worktree of REV, on the same random weights and backend. This
checkout's server runs twice, batching up to --max-batch images per pass and one image per pass;
the first is measured over each protocol it speaks, with the same image: ``/v1/predict`` (the
JPEG as the body), KServe v2 with binary tensor data over HTTP, and v2 over gRPC (tritonclient).
In each round, every server in turn (the order reversed every other round) gets --requests posts
of a 500x375 JPEG from --clients concurrent clients (a separate process, so their HTTP work does
not share a GIL with anything measured). Prints each server's median images per second over
rounds, its median per-round ratio to the first server, and the clients' latency over all rounds
(p50 / p90: one request's wall time, queueing included).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import inceptionv4 as iv
from inceptionv4.devices import vector_units

ROOT = Path(__file__).resolve().parents[1]

CLIENTS = r"""
import http.client, json, struct, sys, threading, time
from urllib.parse import urlsplit
url, clients, requests, path, protocol, model, grpc_port = sys.argv[1:8]
clients, requests = int(clients), int(requests)
body = open(path, "rb").read()
u = urlsplit(url)
lock, todo, times, errors = threading.Lock(), [requests], [], []
if protocol == "v2 binary":  # the encoded image as a BYTES tensor, the answer as binary data
    header = json.dumps({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": 4 + len(body)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    v2_body = header + struct.pack("<I", len(body)) + body
    v2_headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
def http_call(conn):
    if protocol == "v1":
        conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": "image/jpeg"})
    else:
        conn.request("POST", f"/v2/models/{model}/infer", body=v2_body, headers=v2_headers)
    resp = conn.getresponse()
    resp.read()
    return resp.status == 200
def client():
    if protocol == "v2 gRPC":
        import numpy as np
        import tritonclient.grpc as g
        c = g.InferenceServerClient(f"{u.hostname}:{grpc_port}")
        inp = g.InferInput("image_bytes", [1], "BYTES")
        inp.set_data_from_numpy(np.array([body], dtype=object))
        def call(_):
            c.infer(model, [inp])
            return True
    else:
        conn, call = http.client.HTTPConnection(u.hostname, u.port, timeout=600), http_call
    while True:
        with lock:
            if todo[0] == 0:
                return
            todo[0] -= 1
        t = time.perf_counter()
        try:
            ok = call(None if protocol == "v2 gRPC" else conn)
        except Exception:
            ok = False
        with lock:
            (times if ok else errors).append(time.perf_counter() - t)
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


def start_server(src: Path, weights: str, backend: str, max_batch: int, *flags: str) -> tuple[subprocess.Popen, str, str]:
    """`inceptionv4 serve` from the package in ``src``, on a free port, with more ``flags``: (process,
    url, its gRPC port or "")."""
    cmd = [sys.executable, "-m", "inceptionv4", "serve", "--weights", weights, "--backend", backend, "--port", "0",
           "--max-batch", str(max_batch), "--quiet", *flags]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=src.parent)
    lines = []
    while True:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError(f"the server from {src} exited: {''.join(lines)[-2000:]}")
        lines.append(line)
        found = re.search(r" at (http://[\d.]+:\d+)", line)
        if line.startswith("serving") and found:
            grpc = re.search(r"gRPC on port (\d+)", line)
            return proc, found.group(1), grpc.group(1) if grpc else ""


def measure(row: dict, clients: int, requests: int, image: str) -> dict:
    """One burst of ``requests`` from ``clients`` concurrent clients of the row's server and
    protocol: wall time and per-request times."""
    out = subprocess.run([sys.executable, "-c", CLIENTS, row["url"], str(clients), str(requests), image,
                          row["protocol"], row["model"], row["grpc_port"]], capture_output=True, text=True, check=True)  # fmt: skip
    r = json.loads(out.stdout)
    return {"img_per_s": len(r["times"]) / r["wall"], "times": r["times"], "errors": r["errors"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", metavar="REV", help="a git revision whose server to measure beside this one's")
    ap.add_argument("--model", default="inception_v4")
    ap.add_argument("--backend", default="openvino", help="the backend both servers run (default: openvino)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=32, help="requests per server and round, over all clients")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    procs, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        weights, image = os.path.join(tmp, "w.safetensors"), os.path.join(tmp, "photo.jpg")
        iv.save_weights(iv.create_model(args.model).eval(), weights, label_set="imagenet-1k")
        photo(image)
        servers = [("this checkout", ROOT / "src", args.max_batch), ("this checkout", ROOT / "src", 1)]
        if args.against:
            tree = Path(tmp, "against")
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.against],
                           check=True, capture_output=True)  # fmt: skip
            rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, check=True).stdout.strip()  # fmt: skip
            servers.insert(1, (f"{rev} ({args.against})" if rev != args.against else rev, tree / "src", args.max_batch))
        try:
            for n, (label, src, max_batch) in enumerate(servers):  # every server up at once: the rounds interleave
                t = time.perf_counter()
                proc, url, grpc_port = start_server(src, weights, args.backend, max_batch,
                                                    *(["--grpc-port", "0"] if n == 0 else []))  # fmt: skip
                procs.append(proc)
                protocols = ["v1", "v2 binary", "v2 gRPC"] if n == 0 else ["v1"]  # this checkout's first speaks all
                for protocol in protocols:
                    row = {"server": label, "protocol": protocol, "max_batch": max_batch, "url": url,
                           "grpc_port": grpc_port, "model": args.model, "setup_s": time.perf_counter() - t,
                           "rounds": []}  # fmt: skip
                    measure(row, args.clients, 2 * args.clients, image)  # warm the path and the clients
                    rows.append(row)
            for k in range(args.rounds):
                order = list(range(len(rows)))[:: 1 if k % 2 == 0 else -1]  # reversed every other round
                for i in order:
                    time.sleep(0.2)
                    rows[i]["rounds"].append(measure(rows[i], args.clients, args.requests, image))
                print(f"round {k + 1}/{args.rounds}: " + ", ".join(f"{r['rounds'][-1]['img_per_s']:.2f}" for r in rows),
                      file=sys.stderr, flush=True)  # fmt: skip
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)
            if args.against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    first = rows[0]
    for r in rows:
        times = sorted(t for x in r["rounds"] for t in x["times"])
        r["img_per_s"] = statistics.median(x["img_per_s"] for x in r["rounds"])
        r["vs_first"] = statistics.median(
            x["img_per_s"] / y["img_per_s"] for x, y in zip(r["rounds"], first["rounds"], strict=True)
        )
        r["p50_ms"], r["p90_ms"] = 1000 * statistics.median(times), 1000 * times[int(0.9 * (len(times) - 1))]
        r["errors"] = sum(x["errors"] for x in r["rounds"])
        for x in r["rounds"]:
            del x["times"]
    print(f"\n{args.model} ({args.backend}), {args.clients} concurrent clients, {args.rounds} rounds of "
          f"{args.requests} requests, {os.cpu_count()} cores ({vector_units()}), torch {torch.__version__}, "
          f"{date.today()}\n")  # fmt: skip
    print("| server | protocol | max batch | img/s | vs first row | p50 ms | p90 ms | errors | start s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['server']} | {r['protocol']} | {r['max_batch']} | {r['img_per_s']:.2f} | {r['vs_first']:.2f}x | "
              f"{r['p50_ms']:.0f} | {r['p90_ms']:.0f} | {r['errors']} | {r['setup_s']:.1f} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "backend": args.backend, "clients": args.clients, "rows": rows}, f,
                      indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
