"""The KServe v2 protocol over HTTP, driven by tritonclient's stock client as its documentation uses
it: health and metadata, infer with binary and JSON data and the classification extension, answers
equal predict()'s; the exported Triton client.py against our server; each bad request its error."""

import base64
import http.client
import importlib.util
import json
import struct
import time
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch

from inceptionv4.data import Preprocessing
from inceptionv4.data.decode import load_rgb
from inceptionv4.data.views import normalize_views, protocol_pixels
from inceptionv4.infer.predict import predict
from inceptionv4.serve import InferenceServer

from .conftest import noisy_pngs

http_client = pytest.importorskip("tritonclient.http")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return noisy_pngs(tmp_path_factory.mktemp("v2"), 5, seed=3)


@pytest.fixture(scope="module")
def server(small_model):
    with InferenceServer(small_model, port=0, access_log=False, max_images=8) as running:
        yield running


def client(server):
    return http_client.InferenceServerClient(urlsplit(server.url).netloc)


def predicted(model, paths) -> np.ndarray:
    """predict()'s probabilities of every class, in class order."""
    rows = [r["top"] for r in predict(model, [str(p) for p in paths], topk=3, batch_size=1)]
    return np.array([[t["prob"] for t in sorted(row, key=lambda t: t["index"])] for row in rows])


def test_health_and_metadata_as_tritonclient_reads_them(server, small_model):
    c = client(server)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready(small_model.model_name) and c.is_model_ready(small_model.model_name, "1")
    assert not c.is_model_ready("resnet50")
    meta = c.get_server_metadata()
    assert meta["name"] == "inceptionv4" and "binary_tensor_data" in meta["extensions"]
    model = c.get_model_metadata(small_model.model_name)
    inputs = {i["name"]: (i["datatype"], i["shape"]) for i in model["inputs"]}
    assert inputs == {"image_bytes": ("BYTES", [-1]), "images": ("FP32", [-1, 3, 75, 75])}
    assert {o["name"]: o["shape"] for o in model["outputs"]} == {"probabilities": [-1, 3], "logits": [-1, 3]}


@pytest.mark.parametrize("binary", [True, False])
def test_infer_of_encoded_images_equals_predict(server, small_model, images, binary):
    blobs = [p.read_bytes() for p in images[:3]]
    data = np.array(blobs if binary else [base64.b64encode(b) for b in blobs], dtype=object)
    inp = http_client.InferInput("image_bytes", [3], "BYTES")
    inp.set_data_from_numpy(data, binary_data=binary)
    out = http_client.InferRequestedOutput("probabilities", binary_data=binary)
    got = client(server).infer(small_model.model_name, [inp], outputs=[out]).as_numpy("probabilities")
    assert got.shape == (3, 3) and got.dtype == np.float32
    assert np.abs(got - predicted(small_model, images[:3])).max() < 1e-5


def test_classification_and_preprocessed_views(server, small_model, images):
    pre = Preprocessing.of(small_model)
    views = torch.cat([normalize_views(protocol_pixels(load_rgb(p), pre, 1), pre) for p in images[:4]]).numpy()
    inp = http_client.InferInput("images", list(views.shape), "FP32")
    inp.set_data_from_numpy(views)
    c = client(server)
    probs = c.infer(small_model.model_name, [inp]).as_numpy("probabilities")
    assert np.abs(probs - predicted(small_model, images[:4])).max() < 1e-5
    top = c.infer(small_model.model_name, [inp], outputs=[http_client.InferRequestedOutput("probabilities",
                                                                                           class_count=2)])  # fmt: skip
    rows = top.as_numpy("probabilities")
    assert rows.shape == (4, 2)
    for row, p in zip(rows, probs, strict=True):
        value, index, label = row[0].decode().split(":")
        assert int(index) == int(p.argmax()) and label == small_model.class_names[int(index)]
        assert abs(float(value) - p.max()) < 1e-5


def test_the_exported_triton_client_works_against_our_server(server, small_model, images, tmp_path):
    from inceptionv4.tools.triton import export_triton

    export_triton(small_model, tmp_path / "repo", openvino=False)
    spec = importlib.util.spec_from_file_location("exported_client", tmp_path / "repo" / "client.py")
    exported = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exported)
    answers = exported.classify(urlsplit(server.url).netloc, [str(p) for p in images[:2]], top=3)
    want = predicted(small_model, images[:2])
    for rows, p in zip(answers, want, strict=True):
        assert [int(r.split(":")[1]) for r in rows] == list(np.argsort(-p, kind="stable"))


def _post(url, path, body, headers):
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    conn.close()
    return out


def test_each_bad_v2_request_gets_its_error(server, small_model, images):
    name = small_model.model_name
    jpeg = images[0].read_bytes()
    binary = struct.pack("<I", len(jpeg)) + jpeg

    def header(**fields):
        spec = {"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                "parameters": {"binary_data_size": len(binary)}, **fields}  # fmt: skip
        return json.dumps({"inputs": [spec]}).encode()

    cases = [
        (f"/v2/models/{name}/infer", header(datatype="FP32"), 400, "input image_bytes is BYTES, not FP32"),
        (f"/v2/models/{name}/infer", header(shape=[2]), 400, "1 elements for a shape of 2"),
        ("/v2/models/resnet50/infer", header(), 404, f"unknown model 'resnet50': this server serves {name}"),
        (f"/v2/models/{name}/versions/7/infer", header(), 404, "has version 1 only, not '7'"),
        (f"/v2/models/{name}/infer", header(parameters={"binary_data_size": len(binary) + 9}), 400,
         "binary_data_size"),
    ]  # fmt: skip
    for path, head, status, message in cases:
        got = _post(server.url, path, head + binary, {"Inference-Header-Content-Length": str(len(head))})
        assert got[0] == status and message in got[1]["error"], (path, got)
    bad_length = _post(server.url, f"/v2/models/{name}/infer", header() + binary,
                       {"Inference-Header-Content-Length": "99999999"})  # fmt: skip
    assert bad_length[0] == 400 and "Inference-Header-Content-Length must be" in bad_length[1]["error"]
    cut = header()
    assert _post(server.url, f"/v2/models/{name}/infer", cut + binary[:-10],
                 {"Inference-Header-Content-Length": str(len(cut))})[0] == 400  # fmt: skip
    views = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [0.0] * 192}]}
    status, body = _post(server.url, f"/v2/models/{name}/infer", json.dumps(views), {"Content-Type": "application/json"})
    assert status == 400 and "shape must be [N, 3, 75, 75]" in body["error"]
    status, body = _post(server.url, f"/v2/models/{name}/infer", b"{", {"Content-Type": "application/json"})
    assert status == 400 and "not valid JSON" in body["error"]
    # and the server still answers, and counted each protocol apart
    inp = http_client.InferInput("image_bytes", [1], "BYTES")
    inp.set_data_from_numpy(np.array([jpeg], dtype=object))
    assert client(server).infer(name, [inp]).as_numpy("probabilities").shape == (1, 3)
    assert client(server).is_server_ready()
    u = urlsplit(server.url)
    for _ in range(50):  # a request is counted as its answer goes out: poll for the last one's count
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
        conn.close()
        if 'endpoint="/v2/infer",status="400"' in metrics and 'endpoint="/v2",status="200"' in metrics:
            break
        time.sleep(0.05)
    assert 'endpoint="/v2/infer",status="400"' in metrics and 'endpoint="/v2",status="200"' in metrics, metrics


grpc_client = pytest.importorskip("tritonclient.grpc")


@pytest.fixture(scope="module")
def grpc_server(small_model):
    with InferenceServer(small_model, port=0, grpc_port=0, access_log=False, max_images=8,
                         max_body_bytes=200_000) as running:  # fmt: skip
        yield running


def test_grpc_speaks_the_same_protocol_with_the_same_answers(grpc_server, small_model, images):
    c = grpc_client.InferenceServerClient(f"127.0.0.1:{grpc_server.grpc_port}")
    try:
        assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(small_model.model_name)
        assert not c.is_model_ready(small_model.model_name, "7")
        assert c.get_server_metadata().name == "inceptionv4"
        meta = c.get_model_metadata(small_model.model_name)
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
            ("image_bytes", "BYTES", [-1]), ("images", "FP32", [-1, 3, 75, 75])]
        inp = grpc_client.InferInput("image_bytes", [3], "BYTES")
        inp.set_data_from_numpy(np.array([p.read_bytes() for p in images[:3]], dtype=object))
        probs = c.infer(small_model.model_name, [inp]).as_numpy("probabilities")
        assert np.abs(probs - predicted(small_model, images[:3])).max() < 1e-5
        top = c.infer(small_model.model_name, [inp], outputs=[grpc_client.InferRequestedOutput("probabilities",
                                                                                               class_count=1)])  # fmt: skip
        assert [int(r[0].decode().split(":")[1]) for r in top.as_numpy("probabilities")] == list(probs.argmax(1))
        for call, code, message in (
            (lambda: c.infer("resnet50", [inp]), "NOT_FOUND", "unknown model 'resnet50'"),
            (lambda: c.infer(small_model.model_name, [inp], model_version="7"), "NOT_FOUND", "version 1 only"),
        ):
            with pytest.raises(grpc_client.InferenceServerException, match=message) as err:
                call()
            assert code in str(err.value.status())
        wrong = grpc_client.InferInput("image_bytes", [3], "FP32")
        wrong.set_data_from_numpy(np.zeros(3, dtype=np.float32))
        with pytest.raises(grpc_client.InferenceServerException, match="input image_bytes is BYTES, not FP32"):
            c.infer(small_model.model_name, [wrong])
        big = grpc_client.InferInput("image_bytes", [1], "BYTES")  # over the server's 200 kB message limit
        big.set_data_from_numpy(np.array([b"\xff" * 300_000], dtype=object))
        with pytest.raises(grpc_client.InferenceServerException, match="RESOURCE_EXHAUSTED|larger than max"):
            c.infer(small_model.model_name, [big])
        assert c.is_server_ready()  # still serving
    finally:
        c.close()


def test_sigterm_drains_http_and_grpc_without_cutting_a_request(small_model, images, tmp_path):
    """Requests waiting for their batch when SIGTERM arrives are all answered; the server says it is
    not ready at once, takes no new call, and exits 0."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import threading

    import inceptionv4 as iv

    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights, class_names=small_model.class_names)
    cmd = [sys.executable, "-m", "inceptionv4", "serve", "--weights", str(weights), "--backend", "torch", "--port", "0",
           "--grpc-port", "0", "--max-wait-ms", "2000", "--max-batch", "16", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        lines = []
        while not (lines and lines[-1].startswith("serving")):
            lines.append(proc.stderr.readline())
            assert lines[-1], f"server exited: {lines}"
        url = re.search(r" at (http://[\d.]+:\d+): ", lines[-1]).group(1)
        grpc_port = int(re.search(r"gRPC on port (\d+)", lines[-1]).group(1))
        name, jpeg = small_model.model_name, images[0].read_bytes()
        answers, errors = [], []

        def over_http():
            try:
                inp = http_client.InferInput("image_bytes", [1], "BYTES")
                inp.set_data_from_numpy(np.array([jpeg], dtype=object))
                c = http_client.InferenceServerClient(urlsplit(url).netloc, network_timeout=60)
                answers.append(c.infer(name, [inp]).as_numpy("probabilities").shape)
            except Exception as err:  # noqa: BLE001 - the test reports any
                errors.append(repr(err))

        def over_grpc():
            c = grpc_client.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            try:
                inp = grpc_client.InferInput("image_bytes", [1], "BYTES")
                inp.set_data_from_numpy(np.array([jpeg], dtype=object))
                answers.append(c.infer(name, [inp]).as_numpy("probabilities").shape)
            except Exception as err:  # noqa: BLE001
                errors.append(repr(err))
            finally:
                c.close()

        threads = [threading.Thread(target=f) for f in (over_http, over_grpc) * 3]
        for t in threads:
            t.start()
        time.sleep(1.0)  # all six wait in the batcher (2 s for company)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        _, err = proc.communicate(timeout=60)
        assert errors == [] and answers == [(1, 3)] * 6, (errors, err[-2000:])
        assert proc.returncode == 0 and "stopped" in err
        with pytest.raises(OSError):  # nothing listens any more
            http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=5).request("GET", "/v2")
    finally:
        proc.kill()


def test_readiness_turns_false_when_draining(small_model):
    server = InferenceServer(small_model, port=0, grpc_port=0, access_log=False, warm_up=False).start()
    try:
        c = http_client.InferenceServerClient(urlsplit(server.url).netloc)
        g = grpc_client.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        assert c.is_server_ready() and g.is_server_ready()
        server.draining.set()  # what SIGTERM does first
        assert not c.is_server_ready() and not c.is_model_ready(small_model.model_name)
        assert not g.is_server_ready() and c.is_server_live()
        g.close()
    finally:
        server.close()


def test_workers_share_the_http_and_the_grpc_port(small_model, images, tmp_path):
    import os
    import re
    import signal
    import socket
    import subprocess
    import sys

    import inceptionv4 as iv

    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights, class_names=small_model.class_names)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        grpc_port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "inceptionv4", "serve", "--weights", str(weights), "--backend", "torch", "--port", "0",
           "--precision", "fp32", "--grpc-port", str(grpc_port), "--workers", "2", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = ""
        while not line.startswith("serving"):
            line = proc.stderr.readline()
            assert line, "server exited"
        url = re.search(r" at (http://[\d.]+:\d+): ", line).group(1)
        inp = http_client.InferInput("image_bytes", [1], "BYTES")
        inp.set_data_from_numpy(np.array([images[0].read_bytes()], dtype=object))
        want = predicted(small_model, images[:1])
        c = http_client.InferenceServerClient(urlsplit(url).netloc)
        for _ in range(60):  # the workers load their models after the port is announced
            if c.is_server_ready():
                break
            time.sleep(0.5)
        assert np.abs(c.infer(small_model.model_name, [inp]).as_numpy("probabilities") - want).max() < 1e-5
        g = grpc_client.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        try:
            for _ in range(60):
                try:
                    if g.is_server_ready():
                        break
                except grpc_client.InferenceServerException:
                    pass
                time.sleep(0.5)
            ginp = grpc_client.InferInput("image_bytes", [1], "BYTES")
            ginp.set_data_from_numpy(np.array([images[0].read_bytes()], dtype=object))
            for _ in range(4):  # whichever worker takes the call answers alike
                got = g.infer(small_model.model_name, [ginp]).as_numpy("probabilities")
                assert np.abs(got - want).max() < 1e-5
        finally:
            g.close()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    finally:
        proc.kill()
