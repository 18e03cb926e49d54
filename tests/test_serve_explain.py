"""serve.explain: POST /v1/explain on a running server: the overlay of the class asked for, the
maps explain() makes, /v1/predict's limits, and what it cannot do said as JSON."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

import inceptionv4 as iv
from inceptionv4.infer.explain import explain
from inceptionv4.serve.server import InferenceServer

from .test_infer_app import request


def png(seed: int, shape=(90, 120)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(small_model):
    with InferenceServer(small_model, port=0, max_body_bytes=200_000, max_images=3, access_log=False,
                         warm_up=False) as s:  # fmt: skip
        yield s


def overlay_of(result: dict) -> Image.Image:
    head, _, data = result["overlay"].partition(",")
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_explain_answers_the_class_asked_for_with_the_map_explain_makes(server, small_model):
    body = png(1)
    status, r, _ = request(server.url, "POST", "/v1/explain", body, {"Content-Type": "image/png"})
    assert status == 200, r
    (result,) = r["results"]
    want = explain(small_model, Image.open(io.BytesIO(body)))[0]
    assert result["ok"] and result["explained"]["index"] == want.index == result["top1"]["index"]
    assert result["explained"]["prob"] == pytest.approx(want.prob, abs=1e-5)
    assert result["box"] == list(want.box) and result["size"] == [120, 90]
    assert (result["method"], result["layer"]) == ("hirescam", "stage_c")
    assert overlay_of(result).size == (120, 90)  # under 512 px: the image's own size
    # a class by name in the query, by index in JSON; several images, one of them not an image
    status, r, _ = request(server.url, "POST", "/v1/explain?target=blue", body, {"Content-Type": "image/png"})
    assert status == 200 and r["results"][0]["explained"]["name"] == "blue"
    payload = {"images": [base64.b64encode(body).decode(), base64.b64encode(b"nope").decode()], "target": 1}
    status, r, _ = request(server.url, "POST", "/v1/explain", json.dumps(payload), {"Content-Type": "application/json"})
    assert status == 200 and r["results"][0]["explained"]["name"] == "green"
    assert r["results"][1] == {"ok": False, "error": "images[1]: not an image (unrecognised format)"}
    status, card, _ = request(server.url, "GET", "/v1/model")
    assert card["explain"] == {"available": True, "method": "hirescam", "layer": "last stage"}


def test_explain_has_predicts_limits_and_says_every_refusal(server):
    body = png(2)
    cases = [
        ("/v1/explain?target=purple", body, {"Content-Type": "image/png"}, 400, "target 'purple' is not one of"),
        ("/v1/explain?target=7", body, {"Content-Type": "image/png"}, 400, "target class 7 is outside 0-2"),
        ("/v1/explain", b"not an image", {"Content-Type": "image/png"}, 400, "not an image"),
        ("/v1/explain", b"x" * 300_000, {"Content-Type": "image/png"}, 413, "200,000"),
        ("/v1/explain", json.dumps({"images": [base64.b64encode(body).decode()] * 4}),
         {"Content-Type": "application/json"}, 400, "over the 3-per-request limit"),
        ("/v1/explain", "{", {"Content-Type": "application/json"}, 400, "not valid JSON"),
    ]  # fmt: skip
    for path, data, headers, code, reason in cases:
        status, r, _ = request(server.url, "POST", path, data, headers)
        assert status == code and reason in r["error"], (path, status, r)
    status, r, _ = request(server.url, "GET", "/v1/explain")
    assert status == 405 and "use POST" in r["error"]
    status, text, _ = request(server.url, "GET", "/metrics")
    assert 'endpoint="/v1/explain"' in text
    status, r, _ = request(server.url, "POST", "/v1/explain", body, {"Content-Type": "image/png"})
    assert status == 200  # still answering


@pytest.mark.skipif(not iv.extras.installed("onnxruntime"), reason="needs onnxruntime")
def test_an_int8_server_without_its_fp32_weights_says_what_to_pass(small_model, tmp_path):
    from inceptionv4.engines.open import open_session

    from .conftest import int8_onnx

    weights, q = int8_onnx(small_model, tmp_path)
    weights.unlink()
    with InferenceServer(open_session(q), port=0, access_log=False, warm_up=False) as s:
        status, r, _ = request(s.url, "POST", "/v1/explain", png(3), {"Content-Type": "image/png"})
        assert status == 501 and "fp32 weights it was quantized from" in r["error"] and "--explain-weights" in r["error"]
        assert request(s.url, "GET", "/v1/model")[1]["explain"]["available"] is False  # the page hides "why"
        status, r, _ = request(s.url, "POST", "/v1/predict", png(3), {"Content-Type": "image/png"})
        assert status == 200 and r["results"][0]["ok"]  # predicting is unaffected
