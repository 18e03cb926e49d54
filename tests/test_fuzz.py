"""The fuzz suite: over 1,000 generated malformed and odd inputs (tests/fuzz_corpus.py) through
predict (API and CLI), eval and the server. For every input: no traceback, no hang, bounded
memory, a named reason for each bad one, and every good one mixed in answered as its clean copy."""

import base64
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import torch

import inceptionv4 as iv
from inceptionv4.infer.predict import predict

from .conftest import randomize_bn
from .fuzz_corpus import build

#: The CLI's peak resident memory over the whole corpus. The guards let through images of up to
#: 16,384 x 16,384 pixels, which PIL allocates (up to 4 bytes a pixel) before it finds a damaged
#: file's data short; the thin PNG this suite was written for needed 22 GB.
MAX_RSS_BYTES = 6 * 2**30
CLASSES = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(entries, weights file, reference answers of the good inputs from clean copies)."""
    root = tmp_path_factory.mktemp("fuzz")
    entries = build(root / "corpus")
    assert len(entries) >= 1000
    torch.manual_seed(0)
    model = randomize_bn(iv.create_model("inception_resnet_v1", num_classes=3)).eval()
    model.pretrained_cfg = model.pretrained_cfg.at_input_size(75)
    weights = iv.save_weights(model, root / "w.safetensors", class_names=CLASSES)
    clean = root / "clean"
    clean.mkdir()
    copies = []
    for i, e in enumerate(x for x in entries if x.expect == "good"):
        copies.append(clean / f"{i}{e.path.suffix or '.png'}")
        shutil.copyfile(e.path, copies[-1])
    answers = list(predict(model, [str(c) for c in copies], topk=3))
    assert all(a["ok"] for a in answers), [a for a in answers if not a["ok"]]
    reference = {str(e.path): a["top"] for e, a in zip([x for x in entries if x.expect == "good"], answers, strict=True)}
    yield entries, weights, reference, model
    shutil.rmtree(root, ignore_errors=True)


def _check(entry, result: dict, reference: dict, tol: float) -> None:
    """One input's answer against its expectation."""
    assert set(result) in ({"file", "ok", "top"}, {"file", "ok", "error"}), result
    if entry.expect == "bad":
        assert not result["ok"], (entry.why, entry.path.name)
    if not result["ok"]:
        assert result["error"] and "Traceback" not in result["error"], result
        assert entry.expect != "good", (entry.why, entry.path.name, result["error"])
    if entry.expect == "good":
        got, want = result["top"], reference[str(entry.path)]
        assert [t["name"] for t in got] == [t["name"] for t in want], entry.path.name
        assert max(abs(a["prob"] - b["prob"]) for a, b in zip(got, want, strict=True)) < tol, entry.path.name


def test_predict_api_answers_every_input_in_order(corpus):
    entries, _, reference, model = corpus
    results = list(predict(model, [str(e.path) for e in entries], topk=3, batch_size=16))
    assert [r["file"] for r in results] == [str(e.path) for e in entries]
    for entry, result in zip(entries, results, strict=True):
        _check(entry, result, reference, 1e-5)
    refused = sum(not r["ok"] for r in results)
    assert refused >= sum(e.expect == "bad" for e in entries)


def test_predict_cli_over_the_corpus_folder(corpus):
    """The whole corpus folder and its special files by name, text mode, under a strict UTF-8
    stdout: one line per input (an answer or `name: error: reason`), no traceback, no raw control
    character, and bounded peak memory, within a time limit."""
    entries, weights, reference, _ = corpus
    root = entries[0].path.parent
    specials = [str(e.path) for e in entries if e.special]
    cmd = [sys.executable, "-m", "inceptionv4.cli", "predict", "--weights", str(weights), "--topk", "3", str(root),
           *specials]  # fmt: skip
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    with open(root.parent / "out.txt", "wb") as out, open(root.parent / "err.txt", "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        deadline = time.time() + 600
        while time.time() < deadline:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.1)
        else:
            proc.kill()
            pytest.fail("predict hung on the corpus")
    code = os.waitstatus_to_exitcode(status)
    stdout = (root.parent / "out.txt").read_bytes().decode("utf-8")
    stderr = (root.parent / "err.txt").read_bytes().decode("utf-8")
    assert code == 1, stderr[-3000:]  # some inputs failed, and nothing else went wrong
    assert "Traceback" not in stderr and usage.ru_maxrss * 1024 < MAX_RSS_BYTES, usage.ru_maxrss
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", stdout + stderr)  # names escaped: one input, one line
    answered, refused = stdout.splitlines(), stderr.splitlines()
    # the folder's regular files (the folder walk lists the links too), then the specials by name
    walked = [e for e in entries if e.special and not e.path.is_dir()]  # links and the FIFO; a folder is entered
    assert len(answered) + len(refused) == len(entries) + len(walked)
    assert all(": error: " in line for line in refused), [x for x in refused if ": error: " not in x][:5]
    good_lines = {line.split(": ")[0] for line in answered}
    from inceptionv4.cli import printable

    for e in entries:
        if e.expect == "good":
            assert printable(str(e.path)) in good_lines, e.path.name
    for e in entries:
        if e.expect == "bad":
            assert any(line.startswith(printable(str(e.path)) + ": error: ") for line in refused), e.path.name


def test_eval_passes_over_every_bad_file_and_counts_it(corpus, tmp_path):
    entries, weights, reference, model = corpus
    data = tmp_path / "data"
    build(data / "red", seed=1)
    for c in ("green", "blue"):  # every class has a few plain images
        (data / c).mkdir()
        for i in range(2):
            shutil.copyfile(next(e.path for e in entries if e.expect == "good"), data / c / f"{i}.png")
    report = tmp_path / "r.json"
    run = subprocess.run([sys.executable, "-m", "inceptionv4.cli", "eval", "--weights", str(weights), "--data", str(data),
                          "--report", str(report)], capture_output=True, timeout=600,
                         env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})  # fmt: skip
    err = run.stderr.decode()
    assert run.returncode == 0 and "Traceback" not in err, err[-3000:]
    r = json.loads(report.read_text())
    listed = sum(1 for _ in (data / "red").iterdir() if _.is_file() and _.suffix.lower() in (
        ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"))  # fmt: skip
    assert r["n"] + len(r["skipped"]) == listed + 4
    assert len(r["skipped"]) >= sum(e.expect == "bad" and not e.special for e in entries)
    assert all(": " in s for s in r["skipped"])
    assert err.count("skipped: ") == len(r["skipped"])


def test_the_server_answers_every_upload_with_a_reason_or_a_result(corpus):
    """Every regular file of the corpus uploaded by 8 concurrent clients: each gets a JSON 200
    with its answer or a JSON 4xx with its reason, none is dropped, and the good ones mixed in
    get their clean copy's answer."""
    from inceptionv4.serve.server import InferenceServer

    entries, _, reference, model = corpus
    uploads = [e for e in entries if not e.special]
    with InferenceServer(model, port=0, topk=3, max_batch=8, access_log=False) as server:
        u = urlsplit(server.url)

        def post(entry):
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
            body = json.dumps({"images": [base64.b64encode(entry.path.read_bytes()).decode()]}).encode()
            conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = (resp.status, resp.getheader("content-type", ""), resp.read())
            conn.close()
            return answer

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, uploads))
        health = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        health.request("GET", "/health")
        assert health.getresponse().status == 200
    statuses = {}
    for entry, (status, kind, raw) in zip(uploads, answers, strict=True):
        assert "application/json" in kind, (entry.path.name, status, raw[:200])
        body = json.loads(raw)
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            (result,) = body["results"]
            _check(entry, {"file": str(entry.path), **result}, reference, 1e-4)
        else:
            assert 400 <= status < 500 and body["error"], (entry.path.name, status, body)
            assert entry.expect != "good", (entry.path.name, body)
    assert set(statuses) <= {200, 400, 413, 422}, statuses
