"""The HTTP server: answers equal predict()'s, requests share batches, bad requests get clear errors."""

import base64
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import pytest
import torch
from PIL import Image

import inceptionv4 as iv
from inceptionv4.cli import main
from inceptionv4.data import Preprocessing, decode_rgb
from inceptionv4.infer.predict import predict
from inceptionv4.data.views import crop_views
from inceptionv4.serve.server import Classifier, InferenceServer
from .conftest import noisy_pngs, torch_session


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Eight distinct PNG files (noisy colours, sizes around the model's 75 px)."""
    return noisy_pngs(tmp_path_factory.mktemp("serve"), 8, seed=1)


def call(url, path, body=None, ctype="image/png", method=None, headers=None):
    """(status, JSON body, headers with lower-case names) of one request on a fresh connection."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    hdrs = {"Content-Type": ctype} if body is not None else {}
    conn.request(
        method or ("POST" if body is not None else "GET"), path, body=body, headers={**hdrs, **(headers or {})}
    )
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read()), {k.lower(): v for k, v in resp.getheaders()}
    conn.close()
    return out


def expected(model, paths, topk=3):
    return [r["top"] for r in predict(model, [str(p) for p in paths], topk=topk, batch_size=1)]


def assert_same_top(got, want):
    assert [t["name"] for t in got] == [t["name"] for t in want]
    assert max(abs(a["prob"] - b["prob"]) for a, b in zip(got, want, strict=True)) < 1e-5


def test_answers_equal_predict_raw_and_json(small_model, images):
    want = expected(small_model, images[:3])
    with InferenceServer(small_model, port=0, topk=3) as server:
        assert call(server.url, "/health")[:2] == (200, {"status": "ok"})
        status, body, headers = call(server.url, "/v1/predict", images[0].read_bytes())
        assert status == 200 and headers["content-type"] == "application/json" and body["results"][0]["ok"]
        assert_same_top(body["results"][0]["top"], want[0])
        status, body, _ = call(server.url, "/v1/predict?topk=1", images[1].read_bytes(), ctype="image/jpeg")
        assert status == 200 and len(body["results"][0]["top"]) == 1  # the query's topk wins
        assert body["results"][0]["top"][0]["name"] == want[1][0]["name"]
        blobs = [base64.b64encode(p.read_bytes()).decode() for p in images[:3]]
        status, body, _ = call(server.url, "/v1/predict", json.dumps({"images": blobs, "topk": 3}), "application/json")
        assert status == 200 and len(body["results"]) == 3
        for got, w in zip(body["results"], want, strict=True):
            assert_same_top(got["top"], w)
        info = call(server.url, "/v1/model")[1]
        assert info["architecture"] == "inception_resnet_v1" and info["num_classes"] == 3
        assert info["input_size"] == 75 and info["form"] == "eager" and info["served"] == {"batches": 3, "images": 5}


def test_concurrent_requests_share_forward_passes(small_model, images):
    want = expected(small_model, images)
    with InferenceServer(small_model, port=0, topk=3, max_batch=4, max_wait_ms=200) as server:
        results = [None] * 16
        barrier = threading.Barrier(16)

        def client(i):
            barrier.wait()
            results[i] = call(server.url, "/v1/predict", images[i % 8].read_bytes())

        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        served = server.classifier.describe()["served"]
    for i, (status, body, _) in enumerate(results):
        assert status == 200
        assert_same_top(body["results"][0]["top"], want[i % 8])  # each answer is its own image's
    assert served["images"] == 16 and 4 <= served["batches"] < 16  # batched, never over max_batch (4)


def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(small_model, images):
    good = images[0].read_bytes()
    with InferenceServer(small_model, port=0, max_body_bytes=2 * len(good)) as server:
        url = server.url

        def err(path, body=None, **kw):
            status, payload, headers = call(url, path, body, **kw)
            return status, payload.get("error", ""), headers

        status, msg, _ = err("/v1/predict", b"this is not an image")
        assert status == 400 and msg == "body: not an image (unrecognised format)"
        status, msg, _ = err("/v1/predict", good[:60])
        assert status == 400 and msg.startswith("body: corrupt or truncated image")
        status, msg, _ = err("/v1/predict", b"")
        assert status == 400 and "empty" in msg
        status, msg, headers = err("/v1/predict", good * 3)
        assert status == 413 and "byte limit" in msg and headers.get("connection") == "close"
        status, msg, _ = err("/v1/predict?topk=0", good)
        assert status == 400 and msg == "topk must be >= 1, got 0"
        status, msg, _ = err("/v1/predict?topk=two", good)
        assert status == 400 and msg == "topk must be an integer, got 'two'"
        status, msg, _ = err("/v1/predict", "[1", ctype="application/json")
        assert status == 400 and msg.startswith("body is not valid JSON")
        status, msg, _ = err("/v1/predict", '{"images": []}', ctype="application/json")
        assert status == 400 and "non-empty list of base64" in msg
        status, msg, _ = err("/v1/predict", '{"images": ["@@@"]}', ctype="application/json")
        assert status == 400 and msg == "images[0] is not valid base64"
        status, msg, headers = err("/v1/predict", None, method="GET")
        assert status == 405 and headers["allow"] == "POST"
        status, msg, headers = err("/health", b"x")
        assert status == 405 and headers["allow"] == "GET"
        assert err("/v2/anything")[:2] == (404, "no such endpoint: /v2/anything")
        # one bad image in a JSON request: the others are still answered, in order
        blobs = [base64.b64encode(good).decode(), base64.b64encode(b"junk").decode()]
        status, body, _ = call(url, "/v1/predict", json.dumps({"images": blobs}), "application/json")
        assert status == 200 and [r["ok"] for r in body["results"]] == [True, False]
        assert body["results"][1]["error"] == "images[1]: not an image (unrecognised format)"
        assert call(url, "/v1/predict", good)[0] == 200


def test_a_failing_forward_pass_is_a_500_and_a_full_queue_a_503(small_model, images):
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            raise RuntimeError("out of memory (simulated)")

    with InferenceServer(small_model, port=0, max_batch=1, queue_size=1) as server:
        good = server.classifier.session.runners
        server.classifier.session.runners = [Broken()]
        status, body, _ = call(server.url, "/v1/predict", images[0].read_bytes())
        assert status == 500 and body["error"] == "inference failed: RuntimeError: out of memory (simulated)"
        server.classifier.session.runners = good
        assert call(server.url, "/v1/predict", images[0].read_bytes())[0] == 200
        # a full request queue: one request in the forward pass (held there), one waiting (the
        # queue holds one), and the next is told to come back
        release, running = threading.Event(), threading.Event()

        def held(x):
            running.set()
            release.wait(60)
            return good[0](x)

        server.classifier.session.runners = [held]
        answers = []
        first = threading.Thread(target=lambda: answers.append(call(server.url, "/v1/predict", images[0].read_bytes())))
        first.start()
        assert running.wait(30)
        second = threading.Thread(target=lambda: answers.append(call(server.url, "/v1/predict", images[1].read_bytes())))
        second.start()
        deadline = time.monotonic() + 30
        while server.classifier.queued < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        status, body, headers = call(server.url, "/v1/predict", images[2].read_bytes())
        release.set()
        first.join()
        second.join()
        server.classifier.session.runners = good
        assert status == 503 and headers["retry-after"] == "1" and "busy" in body["error"]
        assert [a[0] for a in answers] == [200, 200]  # the two it took are answered


def test_close_answers_the_requests_in_flight(small_model, images):
    server = InferenceServer(small_model, port=0, max_wait_ms=1500).start()  # a request waits 1.5 s for company
    url, answer = server.url, []
    client = threading.Thread(target=lambda: answer.append(call(url, "/v1/predict", images[0].read_bytes())))
    client.start()
    while server.in_flight == 0:  # the request is in flight
        time.sleep(0.01)
    server.close()
    client.join()
    assert answer[0][0] == 200 and answer[0][1]["results"][0]["ok"]
    with pytest.raises(OSError):  # the port is released: nothing listens
        call(url, "/health")


def test_setup_errors_are_clear(small_model):
    with pytest.raises(ValueError, match="topk must be an integer >= 1; got 0"):
        InferenceServer(small_model, port=0, topk=0)
    with pytest.raises(ValueError, match="max_batch must be an integer of 1-4096; got 0"):
        Classifier(small_model, max_batch=0)
    with pytest.raises(ValueError, match="port must be an integer of 0-65535; got 99999"):
        InferenceServer(small_model, port=99999, warm_up=False)
    with InferenceServer(small_model, port=0, warm_up=False) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{port}: "):
            InferenceServer(small_model, port=port, warm_up=False)


def test_a_request_larger_than_max_batch_runs_in_passes_of_max_batch(small_model, images):
    classifier = Classifier(torch_session(small_model, 10), max_batch=2)
    try:
        views = torch.cat([classifier.views(p.read_bytes()) for p in images[:5]])
        assert [len(c) for c in classifier._chunks(views)] == [20, 20, 10]  # 10 crops per image
        probs = classifier.submit(views)
        assert classifier.batches == 1 and classifier.images == 5 and probs.shape == (5, 3)
        want = [r["top"][0] for r in predict(torch_session(small_model, 10), [str(p) for p in images[:5]], topk=1)]
        assert probs.argmax(1).tolist() == [t["index"] for t in want]
        assert max(abs(probs[i, t["index"]].item() - t["prob"]) for i, t in enumerate(want)) < 1e-5
    finally:
        classifier.close()


def test_cli_serves_until_sigterm(small_model, images, tmp_path):
    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights, class_names=small_model.class_names)
    assert main(["serve", "--weights", str(tmp_path / "missing.safetensors")]) == 2
    cmd = [sys.executable, "-m", "inceptionv4", "serve", "--weights", str(weights), "--port", "0", "--topk", "2"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        lines = []
        while not (lines and lines[-1].startswith("serving")):
            lines.append(proc.stderr.readline())
            assert lines[-1], f"server exited: {lines}"
        url = re.search(r" at (http://[\d.]+:\d+): ", lines[-1]).group(1)
        status, body, _ = call(url, "/v1/predict", images[0].read_bytes())
        assert status == 200 and [t["name"] for t in body["results"][0]["top"]] == [
            t["name"] for t in expected(small_model, images[:1], topk=2)[0]
        ]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "stopped" in err
        assert '"POST /v1/predict HTTP/1.1" 200' in err  # the access log
    finally:
        proc.kill()


def test_pixels_and_normalised_views_share_a_batch(small_model, images):
    """views() hands the worker uint8 pixels (normalised where the model runs); a caller's float
    views, already normalised, may wait in the same batch: each gets its own image's answer."""
    classifier = Classifier(small_model, max_batch=8, max_wait_ms=500)
    try:
        pre = Preprocessing.of(small_model)
        pixels = classifier.views(images[0].read_bytes())
        assert pixels.dtype == torch.uint8 and pixels.shape == (1, 3, 75, 75)
        floats = crop_views(decode_rgb(images[1].read_bytes()), pre)
        with torch.no_grad():
            want = torch.softmax(
                small_model(torch.cat([crop_views(decode_rgb(images[0].read_bytes()), pre), floats])), 1
            )
        got: dict[int, torch.Tensor] = {}
        threads = [threading.Thread(target=lambda k, v: got.__setitem__(k, classifier.submit(v)), args=(k, v))
                   for k, v in enumerate((pixels, floats))]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert classifier.batches == 1  # both waited in one batch
        assert (torch.cat([got[0], got[1]]) - want).abs().max().item() < 1e-6
        info = classifier.describe()
        assert info["device"] == "cpu" and info["backend"] == "torch" and info["precision"] == "fp32"
    finally:
        classifier.close()
    with pytest.raises(ValueError, match="decode must be one of workers, device; got 'gpu'"):
        Classifier(small_model, decode="gpu")


@pytest.fixture(scope="module")
def jpegs(images):
    """The first four images as JPEG bytes (the device decoder's format)."""
    out = []
    for p in images[:4]:
        buf = io.BytesIO()
        Image.open(p).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def test_device_decoding_answers_as_the_connection_threads_do(small_model, images, jpegs, monkeypatch):
    """decode="device": the connection threads only check the JPEG header and the worker decodes
    and resamples the batch where the model runs; the answers are PIL's within the two levels the
    tensor resize may differ by. A PNG is decoded on its thread as before; a bad upload is a 400."""
    bodies = [*jpegs, images[5].read_bytes()]
    blobs = json.dumps({"images": [base64.b64encode(b).decode() for b in bodies], "topk": 3})
    answers = {}
    for decode in ("workers", "device"):
        with InferenceServer(torch_session(small_model, 12), port=0, topk=3, decode=decode) as server:
            status, body, _ = call(server.url, "/v1/predict", blobs, "application/json")
            assert status == 200 and all(r["ok"] for r in body["results"])
            answers[decode] = body["results"]
            status, single, _ = call(server.url, "/v1/predict", jpegs[0], ctype="image/jpeg")
            assert status == 200
            assert_same_top(single["results"][0]["top"], body["results"][0]["top"])  # batch of 1 or of 5
            status, bad, _ = call(server.url, "/v1/predict", jpegs[1][:100], ctype="image/jpeg")
            assert status == 400 and bad["error"].startswith("body: corrupt or truncated image")
            info = call(server.url, "/v1/model")[1]
            assert info["decode"] == decode and info["served"] == {"batches": 2, "images": 6}  # warm-up not counted
            shapes = [tuple(server.classifier.prepare(b).shape) for b in (jpegs[0], bodies[-1])]
            if decode == "device":  # the JPEG's bytes travel; the PNG is decoded on its thread
                assert shapes == [(len(jpegs[0]),), (3, *Image.open(images[5]).size[::-1])]
            else:
                assert shapes == [(12, 3, 75, 75)] * 2  # the 12-crop views, cut on the thread
    for a, b in zip(answers["workers"], answers["device"], strict=True):
        assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
        assert max(abs(x["prob"] - y["prob"]) for x, y in zip(a["top"], b["top"], strict=True)) < 2e-3
    # a JPEG whose header passes but which no decoder reads: that image gets its reason, the rest answers
    from inceptionv4.data import device_decode

    real = device_decode.decode_payloads

    def failing_second(payloads, names, device):
        out = real(payloads, names, device)
        return [f"{n}: no decoder read it" if n == "images[1]" else img for img, n in zip(out, names, strict=True)]

    monkeypatch.setattr(device_decode, "decode_payloads", failing_second)
    with InferenceServer(torch_session(small_model, 12), port=0, topk=3, decode="device") as server:
        status, body, _ = call(server.url, "/v1/predict", blobs, "application/json")
    assert status == 200 and [r["ok"] for r in body["results"]] == [True, False, True, True, True]
    assert body["results"][1] == {"ok": False, "error": "images[1]: no decoder read it"}
    for i in (0, 2, 3, 4):  # the others are their own images' answers
        assert [t["index"] for t in body["results"][i]["top"]] == [t["index"] for t in answers["device"][i]["top"]]
    with pytest.raises(ValueError, match="decode must be one of workers, device; got 'gpu'"):
        Classifier(small_model, decode="gpu")


def test_the_decoding_budget_makes_large_uploads_wait_or_refuses_them_with_the_reason(small_model, images):
    """Two to eight 9000 x 9000 palette PNGs at once got a worker killed for memory (issue 34): the
    uploads being decoded hold their estimated memory of a budget; one that would pass it waits,
    and one larger than all of it gets a 503 saying so, while small images are still answered."""
    from inceptionv4.data.decode import decode_cost
    from inceptionv4.serve.batching import DecodeBudget, ServerBusy

    budget = DecodeBudget(100, wait_s=0.3)
    order, release = [], threading.Event()

    def second():
        with budget.hold(50, "b"):
            order.append("b")
            release.wait(10)

    with budget.hold(60, "a"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        assert order == [] and budget.used == 60  # b waits while a holds 60 of 100
        order.append("a done")
    for _ in range(100):
        if order[-1] == "b":
            break
        time.sleep(0.02)
    assert order == ["a done", "b"] and budget.used == 50
    with pytest.raises(ServerBusy, match=r"c: the server's decoding budget \(0 MB\) stayed taken by other uploads"):
        with budget.hold(60, "c"):
            pass
    release.set()
    thread.join(5)
    assert budget.used == 0
    with pytest.raises(ServerBusy, match="over the server's decoding budget"):
        with budget.hold(101, "d"):
            pass
    big = io.BytesIO()
    img = Image.new("P", (3000, 3000), 1)
    img.putpalette([255, 0, 0, 0, 128, 255] + [0] * 762)
    img.save(big, "PNG", transparency=0)
    cost = decode_cost(big.getvalue())
    assert cost == 3000 * 3000 * 6
    with InferenceServer(small_model, port=0, access_log=False, decode_memory_bytes=cost - 1) as server:
        status, body, headers = call(server.url, "/v1/predict", big.getvalue())
        assert status == 503 and "over the server's decoding budget" in body["error"] and headers["retry-after"] == "1"
        assert call(server.url, "/v1/predict", images[0].read_bytes())[0] == 200
    with InferenceServer(small_model, port=0, access_log=False, decode_memory_bytes=cost) as server:
        status, body, _ = call(server.url, "/v1/predict", big.getvalue())
        assert status == 200 and body["results"][0]["ok"]


def test_the_decoding_budget_admits_the_largest_image_a_decode_takes():
    from inceptionv4.data.decode import MAX_DECODE_BYTES
    from inceptionv4.serve import ServeSettings

    assert ServeSettings().decode_memory_bytes == MAX_DECODE_BYTES

