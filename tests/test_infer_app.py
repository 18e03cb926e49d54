"""infer.app and infer.serve on uvicorn: many clients, slow clients, every refusal with its reason,
/metrics, the OpenAPI docs, and several worker processes."""

import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import pytest

import inceptionv4 as iv
from inceptionv4.infer.predict import predict
from inceptionv4.serve.server import InferenceServer

from .conftest import noisy_pngs, torch_session


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Ten distinct PNG files around the model's 75 px."""
    return noisy_pngs(tmp_path_factory.mktemp("app"), 10, seed=7)


@pytest.fixture(scope="module")
def server(small_model):
    with InferenceServer(small_model, port=0, topk=3, max_batch=8, max_body_bytes=200_000, max_images=4,
                         header_timeout_s=1.5, body_timeout_s=1.5, access_log=False) as s:  # fmt: skip
        yield s


def request(url, method, path, body=None, headers=None, timeout=30):
    """(status, parsed JSON or text, lower-cased headers) of one request on a fresh connection."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    kind = resp.getheader("content-type", "")
    return resp.status, json.loads(raw) if "json" in kind else raw.decode(), {k.lower(): v for k, v in resp.getheaders()}


def read_all(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends on ``sock`` until it closes the connection (or resets it)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:
        pass
    return data


def multipart(files: list[tuple[str, str, bytes]], fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body as curl -F makes it: (body, content type)."""
    boundary = "----inceptionv4test"
    parts = []
    for name, value in (fields or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for field, filename, data in files:
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n")  # fmt: skip
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def want(small_model, paths, topk=3):
    return [[t["index"] for t in r["top"]] for r in predict(small_model, [str(p) for p in paths], topk=topk)]


def test_fifty_concurrent_clients_each_get_their_own_answer(server, small_model, images):
    expected = want(small_model, images)
    results = [None] * 50
    barrier = threading.Barrier(50)

    def client(i):
        barrier.wait()
        results[i] = request(server.url, "POST", "/v1/predict", images[i % 10].read_bytes(),
                             {"Content-Type": "image/png"}, timeout=120)  # fmt: skip

    before = server.classifier.describe()["served"]
    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    after = server.classifier.describe()["served"]
    for i, (status, body, _) in enumerate(results):
        assert status == 200, body
        assert [t["index"] for t in body["results"][0]["top"]] == expected[i % 10]
    assert after["images"] - before["images"] == 50
    assert after["batches"] - before["batches"] < 50  # they shared forward passes


def test_slow_clients_do_not_hold_up_the_others_and_are_cut_off(server, images):
    """Twenty clients send one header byte a second; a normal client is answered within 2 s all
    the while, and the slow ones get a 408 once the 1.5 s header deadline passes."""
    u = urlsplit(server.url)
    slow = [socket.create_connection((u.hostname, u.port)) for _ in range(20)]
    request_line = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n"
    try:
        for k in range(3):  # three seconds of trickling, a normal request each second
            for s in slow:
                try:
                    s.sendall(request_line[k : k + 1])
                except OSError:
                    pass  # already cut off
            t = time.perf_counter()
            status, body, _ = request(server.url, "POST", "/v1/predict", images[0].read_bytes(),
                                      {"Content-Type": "image/png"})  # fmt: skip
            assert status == 200 and body["results"][0]["ok"] and time.perf_counter() - t < 2.0
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - t)))
        answers = [read_all(s, 5) for s in slow]
        assert all(a.startswith(b"HTTP/1.1 408 ") and b"request headers not complete within 1.5 s" in a for a in answers)
    finally:
        for s in slow:
            s.close()


def test_a_body_that_trickles_gets_a_408(server):
    u = urlsplit(server.url)
    with socket.create_connection((u.hostname, u.port)) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\nab")
        data = read_all(s, 10)
    assert data.startswith(b"HTTP/1.1 408 ") and b"the body did not arrive within 1.5 s" in data


def test_a_request_that_is_not_http_gets_a_json_400(server):
    u = urlsplit(server.url)
    for junk in (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 70_000):
        with socket.create_connection((u.hostname, u.port)) as s:
            s.sendall(junk)
            data = read_all(s, 10)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ") and b"application/json" in head
        assert json.loads(body)["error"].startswith("not a valid HTTP/1.1 request (")
    assert request(server.url, "GET", "/health")[0] == 200


def test_hostile_numbers_and_lengths_get_a_400_naming_why(server, images):
    """The old server dropped the connection with no reply on these: a Content-Length in non-ASCII
    digits or of 5,000 digits, topk 1e999 / Infinity, a JSON number of 5,000 digits; and deeply
    nested JSON was a 500 (RecursionError)."""
    u = urlsplit(server.url)
    for length in ("\u0663".encode(), b"1" * 5000):  # ARABIC-INDIC DIGIT THREE
        with socket.create_connection((u.hostname, u.port)) as s:
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\nabc")
            head, _, body = read_all(s, 10).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), head
        assert json.loads(body)["error"] == "not a valid HTTP/1.1 request (bad Content-Length)"
    png = base64.b64encode(images[0].read_bytes()).decode()
    cases = {
        '{"images": ["%s"], "topk": 1e999}' % png: "body is not valid JSON (1e999 is out of range)",
        '{"images": ["%s"], "topk": Infinity}' % png: "body is not valid JSON (Infinity is not a JSON number)",
        '{"images": ["%s"], "topk": NaN}' % png: "body is not valid JSON (NaN is not a JSON number)",
        '{"images": ["%s"], "topk": %s}' % (png, "9" * 5000): "body is not valid JSON (a number of 5,000 digits)",
        '{"images": ["%s"], "topk": 2.5}' % png: "topk must be an integer, got 2.5",
        '{"images": ["%s"], "topk": true}' % png: "topk must be an integer, got True",
        "[" * 100_000 + "]" * 100_000: "body is not valid JSON (nested too deeply)",
    }
    for body, error in cases.items():
        status, answer, _ = request(server.url, "POST", "/v1/predict", body.encode(),
                                    {"Content-Type": "application/json"})  # fmt: skip
        assert (status, answer) == (400, {"error": error}), body[:60]
    assert request(server.url, "POST", "/v1/predict?topk=" + "9" * 5000, images[0].read_bytes())[:2] == (
        400, {"error": "topk of 5000 digits is too large"})  # fmt: skip
    assert request(server.url, "GET", "/health")[0] == 200


def test_every_refusal_has_its_status_and_reason_and_metrics_count_them(server, images):
    good = images[1].read_bytes()
    png = {"Content-Type": "image/png"}
    js = {"Content-Type": "application/json"}
    b64 = base64.b64encode(good).decode()
    cases = [  # (body, headers, status, start of the error message, metrics reason)
        (b"", png, 400, "body: empty", "not_an_image"),
        (good[:80], png, 400, "body: corrupt or truncated image", "not_an_image"),
        (b"x" * 200_001, png, 413, "body of 200,001 bytes is over the 200,000-byte limit", "too_large"),
        (b"[1", js, 400, "body is not valid JSON", "bad_json"),
        (b'{"images": "abc"}', js, 400, '"images" must be a non-empty list of base64 strings', "bad_json"),
        (b'{"images": ["@@@"]}', js, 400, "images[0] is not valid base64", "bad_base64"),
        (json.dumps({"images": [b64] * 5}).encode(), js, 400, "5 images is over the 4-per-request limit",
         "too_many_images"),
        (*multipart([], {"note": "no file here"})[:1], {"Content-Type": multipart([])[1]}, 400,
         "multipart form has no file: send the image as a file field (curl -F file=@photo.jpg)", "no_file"),
        (b"--x\r\nbroken", {"Content-Type": "multipart/form-data"}, 400, "multipart form: ", "bad_multipart"),
    ]  # fmt: skip
    before = metrics(server.url)
    for body, headers, status, message, _ in cases:
        got, answer, hdrs = request(server.url, "POST", "/v1/predict", body, headers)
        assert got == status and answer["error"].startswith(message), (message, answer)
        if status == 413:
            assert hdrs.get("connection") == "close"  # the body was never read
    assert request(server.url, "POST", "/v1/predict?topk=0", good, png)[1] == {"error": "topk must be >= 1, got 0"}
    status, answer, hdrs = request(server.url, "GET", "/v1/predict")
    assert status == 405 and answer["error"] == "GET is not served at /v1/predict: use POST" and hdrs["allow"] == "POST"
    assert request(server.url, "GET", "/nowhere")[:2] == (404, {"error": "no such endpoint: /nowhere"})
    after = metrics(server.url)
    for reason in {c[4] for c in cases}:
        n = sum(c[4] == reason for c in cases)
        assert after[f'inceptionv4_errors_total{{reason="{reason}"}}'] - before.get(
            f'inceptionv4_errors_total{{reason="{reason}"}}', 0) == n, reason  # fmt: skip
    for label, n in (('endpoint="/v1/predict",status="400"', 9), ('endpoint="/v1/predict",status="413"', 1),
                     ('endpoint="other",status="404"', 1)):  # fmt: skip
        key = f"inceptionv4_requests_total{{{label}}}"
        assert after[key] - before.get(key, 0) == n, key


def test_multipart_uploads_are_answered_in_order(server, small_model, images):
    body, ctype = multipart([("file", "a.png", images[2].read_bytes()), ("file", "junk.png", b"junk"),
                             ("file", "c.png", images[3].read_bytes())])  # fmt: skip
    status, answer, _ = request(server.url, "POST", "/v1/predict?topk=2", body, {"Content-Type": ctype})
    assert status == 200 and [r["ok"] for r in answer["results"]] == [True, False, True]
    assert answer["results"][1]["error"] == "file[1] (junk.png): not an image (unrecognised format)"
    expected = want(small_model, [images[2], images[3]], topk=2)
    assert [[t["index"] for t in r["top"]] for r in answer["results"] if r["ok"]] == expected


def test_chunked_bodies_are_read_up_to_the_limit(server, images):
    u = urlsplit(server.url)

    def chunked(data: bytes) -> bytes:
        with socket.create_connection((u.hostname, u.port)) as s:
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                      b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")  # fmt: skip
            try:
                for i in range(0, len(data), 50_000):
                    piece = data[i : i + 50_000]
                    s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                s.sendall(b"0\r\n\r\n")
            except OSError:  # the server answered 413 and closed while the body was still coming
                pass
            return read_all(s, 30)

    assert chunked(images[4].read_bytes()).startswith(b"HTTP/1.1 200 ")
    key = 'inceptionv4_errors_total{reason="too_large"}'
    before = metrics(server.url).get(key, 0)
    answer = chunked(b"\x89PNG" + b"0" * 260_000)
    # the 413 closes a connection the client is still sending on: its answer may be lost to the
    # reset that follows, but the refusal is counted either way
    assert b"is over the 200,000-byte limit" in answer or not answer
    assert metrics(server.url)[key] - before == 1
    assert request(server.url, "GET", "/health")[0] == 200


def test_metrics_page_model_card_and_openapi(server):
    request(server.url, "POST", "/v1/predict", b"", {"Content-Type": "image/png"})
    status, text, hdrs = request(server.url, "GET", "/metrics")
    assert status == 200 and hdrs["content-type"].startswith("text/plain")
    for name in ("inceptionv4_requests_total", "inceptionv4_errors_total", "inceptionv4_images_total",
                 "inceptionv4_request_seconds_bucket", "inceptionv4_batch_images_bucket",
                 "inceptionv4_queue_wait_seconds_bucket", "inceptionv4_queue_depth"):  # fmt: skip
        assert name in text, name
    status, card, _ = request(server.url, "GET", "/v1/model")
    assert status == 200 and card["class_names"] == ["red", "green", "blue"] and card["backend"] == "torch"
    assert card["topk"] == 3 and card["preprocessing"]["crop_pct"] > 0
    status, schema, _ = request(server.url, "GET", "/openapi.json")
    assert status == 200 and {"/v1/predict", "/v1/model", "/health", "/metrics"} <= set(schema["paths"])
    assert set(schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]) == {
        "image/*", "application/json", "multipart/form-data"}  # fmt: skip
    status, page, _ = request(server.url, "GET", "/docs")
    assert status == 200 and "/docs-assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
    assert request(server.url, "GET", "/docs-assets/swagger-ui-bundle.js")[0] == 200  # offline: shipped, no CDN
    status, page, hdrs = request(server.url, "GET", "/")
    assert status == 200 and hdrs["content-type"].startswith("text/html") and "/static/app.js" in page
    for asset in ("app.js", "style.css"):
        assert request(server.url, "GET", f"/static/{asset}")[0] == 200
    assert "//" not in re.sub(r"https?://(127\.0\.0\.1|localhost)", "", page.split("<body>")[0].replace("://", ""))


def test_an_unexpected_failure_is_a_json_500_without_a_traceback(small_model, images, monkeypatch):
    with InferenceServer(small_model, port=0, access_log=False) as server:
        def broken():
            raise KeyError("the card")

        monkeypatch.setattr(server.classifier, "describe", broken)
        status, body, headers = request(server.url, "GET", "/v1/model")
        assert status == 500 and body == {"error": "internal error (KeyError); the server logged it"}
        assert headers["connection"] == "close"  # the server closes it after a 500: said, not silent
        assert request(server.url, "POST", "/v1/predict", images[0].read_bytes(), {"Content-Type": "image/png"})[0] == 200


def test_a_keep_alive_connection_survives_every_refusal_and_head_is_answered(server, images):
    """Each refusal on one keep-alive connection, then a good request on the same connection
    (issue 34: a client's next request failed after an error); HEAD /health and HEAD / are 200."""
    u = urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    good = images[0].read_bytes()
    refusals = [("POST", "/v1/predict", b"not an image", 400), ("GET", "/nope", None, 404),
                ("DELETE", "/health", None, 405), ("POST", "/v1/predict?topk=abc", good, 400),
                ("POST", "/v1/predict", b"", 400), ("PUT", "/v1/predict", good + bytes(50_000), 405)]  # fmt: skip
    for method, path, body, want in refusals:
        conn.request(method, path, body=body, headers={"Content-Type": "image/png"})
        answer = conn.getresponse()
        answer.read()
        assert answer.status == want and answer.getheader("connection") != "close", (method, path)
        conn.request("POST", "/v1/predict", body=good, headers={"Content-Type": "image/png"})
        after = conn.getresponse()
        assert after.status == 200 and json.loads(after.read())["results"][0]["ok"], (method, path)
    for path in ("/health", "/"):
        conn.request("HEAD", path)
        head = conn.getresponse()
        assert head.status == 200 and head.read() == b"", path
    conn.close()


def metrics(url) -> dict[str, float]:
    text = request(url, "GET", "/metrics")[1]
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_cli_workers_share_one_port_and_their_metrics(small_model, images, tmp_path):
    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights, class_names=small_model.class_names)
    cmd = [sys.executable, "-m", "inceptionv4", "serve", "--weights", str(weights), "--backend", "torch",
           "--port", "0", "--workers", "2", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = ""
        while "worker processes at" not in line:
            line = proc.stderr.readline()
            assert line, "server exited"
        url = re.search(r" at (http://[\d.]+:\d+): ", line).group(1)
        deadline = time.time() + 120
        while True:  # the workers warm up after the port is bound
            try:
                if request(url, "GET", "/health", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline, "no worker answered"
            time.sleep(0.2)
        expected = want(small_model, images[:6])
        for i in range(6):
            status, body, _ = request(url, "POST", "/v1/predict", images[i].read_bytes(), {"Content-Type": "image/png"})
            assert status == 200 and [t["index"] for t in body["results"][0]["top"]] == expected[i]
        text = request(url, "GET", "/metrics")[1]
        counted = sum(float(m) for m in re.findall(r'^inceptionv4_images_total (\S+)$', text, re.M))
        assert counted == 6  # whichever worker answers, it sums every worker's figures
        # a worker killed as the out-of-memory killer kills: the log says which, why, and that it is replaced
        workers = _worker_pids(proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.time() + 120
        while not (set(_worker_pids(proc.pid)) - set(workers)) or len(_worker_pids(proc.pid)) < 2:
            assert time.time() < deadline, "the killed worker was not replaced"
            time.sleep(0.2)
        for i in range(4):  # whichever worker answers, the answers are right
            status, body, _ = request(url, "POST", "/v1/predict", images[i].read_bytes(), {"Content-Type": "image/png"})
            assert status == 200 and [t["index"] for t in body["results"][0]["top"]] == expected[i]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "stopped" in err, err[-2000:]
        assert re.search(rf"serve worker [12] \(pid {workers[0]}\) died: killed by SIGKILL \(most often the "
                         r"out-of-memory killer\).*; a new one started", err), err[-2000:]  # fmt: skip
    finally:
        proc.kill()


def _worker_pids(parent: int) -> list[int]:
    """The serve worker processes (multiprocessing children) of ``parent``, from /proc."""
    try:
        children = open(f"/proc/{parent}/task/{parent}/children").read().split()
    except OSError:
        return []
    pids = []
    for pid in map(int, children):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            pids.append(pid)
    return pids


def test_setup_errors_are_clear(small_model):
    for kwargs, message in (({"max_images": 0}, "max_images must be an integer of 1-100000; got 0"),
                            ({"header_timeout_s": 0}, r"header_timeout_s must be a finite number > 0 and <= 3600 \(seconds\); got 0"),
                            ({"queue_size": 0}, "queue_size must be an integer of 1-1000000; got 0")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            InferenceServer(torch_session(small_model), port=0, warm_up=False, **kwargs)
