"""predict: files, folders, globs and PIL images in order; bad inputs one error each; workers; device decoding."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import inceptionv4 as iv
from inceptionv4.cli import main
from inceptionv4.infer.predict import expand_inputs, predict

from .conftest import payloads_failing_on, torch_session


def test_predict_decoding_on_the_device_answers_as_pil_in_order(small_model, jpeg_folder, tmp_path, monkeypatch):
    inputs = [str(jpeg_folder), str(tmp_path / "nope.jpg")]
    pil = list(predict(torch_session(small_model, 10), inputs, topk=3, batch_size=3))
    device = list(predict(torch_session(small_model, 10), inputs, topk=3, batch_size=3, decode="device", workers=1))
    assert [(r["file"], r["ok"], r.get("error")) for r in device] == [(r["file"], r["ok"], r.get("error")) for r in pil]
    assert sum(r["ok"] for r in pil) == 7 and len(pil) == 10  # 6 JPEGs + a PNG; truncated, corrupt, missing
    for a, b in zip(pil, device, strict=True):
        if a["ok"]:
            assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
            assert max(abs(x["prob"] - y["prob"]) for x, y in zip(a["top"], b["top"], strict=True)) < 2e-3
    # a JPEG whose header passes but which no decoder reads gets its reason in its place, not a crash
    from inceptionv4.data import device_decode

    monkeypatch.setattr(device_decode, "decode_payloads", payloads_failing_on("0.jpg"))
    odd = list(predict(small_model, [str(jpeg_folder / "red")], topk=1, batch_size=4, decode="device"))
    assert [(Path(r["file"]).name, r["ok"]) for r in odd] == [("0.jpg", False), ("1.jpg", True)]
    assert odd[0]["error"] == "no decoder read it"
    with pytest.raises(ValueError, match="decode must be 'workers' or 'device', got 'gpu'"):
        next(predict(small_model, inputs, decode="gpu"))


def mixed_inputs(folder, tmp_path) -> list[str]:
    """A folder, a corrupt file, a missing file and a glob."""
    return [
        str(folder / "red"),
        str(folder / "blue" / "corrupt.jpg"),
        str(tmp_path / "nope.png"),
        str(folder / "g*" / "*.png"),
    ]


def test_predict_reports_bad_files_and_keeps_going(small_model, folder, tmp_path):
    inputs = mixed_inputs(folder, tmp_path)
    files = [f for f, _, _ in expand_inputs(inputs)]
    assert len(files) == 6  # 2 red, the corrupt file, the missing one, 2 green
    results = list(predict(small_model, inputs, topk=2, batch_size=2))
    assert [r["ok"] for r in results] == [True, True, False, False, True, True]
    assert results[2]["error"].startswith("not an image") and results[3]["error"] == "no such file"
    top = results[0]["top"]
    assert len(top) == 2 and top[0]["name"] in small_model.class_names and top[0]["prob"] >= top[1]["prob"]
    for bad, message in (({"topk": 0}, "topk and batch_size must be >= 1"),
                         ({"batch_size": 0}, "topk and batch_size must be >= 1")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            next(predict(small_model, inputs, **bad))
    with pytest.raises(ValueError, match="crops must be one of 1, 10, 12, 144; got 7"):
        torch_session(small_model, 7)


def test_predict_takes_one_name_pil_images_and_folders_with_unreadable_parts(small_model, folder, tmp_path):
    one = str(folder / "red" / "0.png")
    by_name = list(predict(small_model, one, topk=3))  # a str, not a list: one file, not its characters
    assert [r["file"] for r in by_name] == [one] and by_name[0]["ok"]
    opened, made = Image.open(one), Image.fromarray(np.full((90, 120, 4), 200, np.uint8), "RGBA")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((folder / "green" / "0.png").read_bytes()[:400])
    in_memory = [opened, made, Image.open(truncated)]
    for decode in ("workers", "device"):
        results = list(predict(small_model, in_memory, topk=3, decode=decode))
        assert [r["file"] for r in results] == [one, "<image 1>", str(truncated)]
        assert [r["ok"] for r in results] == [True, True, False]
        assert results[2]["error"].startswith("corrupt or truncated image")
        got, want = results[0]["top"], by_name[0]["top"]  # the same pixels as from the file (other batch sizes)
        assert [t["index"] for t in got] == [t["index"] for t in want]
        assert max(abs(a["prob"] - b["prob"]) for a, b in zip(got, want, strict=True)) < 1e-5


def test_a_folder_with_parts_that_cannot_be_read_gives_the_rest(folder, tmp_path, monkeypatch):
    """``predict("/")`` met /proc/1/cwd, whose stat fails even for root, and Path.rglob's is_file
    raised a PermissionError from deep inside pathlib. Root reads past chmod, so the refusals are
    simulated where the walk meets them: a folder that cannot be listed is one entry with its
    reason, and an entry that cannot be examined is still listed (reading it says why)."""
    one = folder / "red" / "0.png"
    tree = tmp_path / "tree"
    (tree / "locked").mkdir(parents=True)
    for path in (tree / "a.png", tree / "c.png", tree / "locked" / "b.png"):
        path.write_bytes(one.read_bytes())
    scandir, stat = os.scandir, os.stat

    def refuse_listing(path=".", *args):
        if Path(path) == tree / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path, *args)

    def refuse_stat(path, *args, **kwargs):
        if Path(path) == tree / "c.png":
            raise PermissionError(13, "Permission denied", str(path))
        return stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", refuse_listing)
    monkeypatch.setattr(os, "stat", refuse_stat)
    assert [(f, e) for f, e, _ in expand_inputs([tree])] == [
        (str(tree / "a.png"), None), (str(tree / "c.png"), None),
        (str(tree / "locked"), "folder cannot be listed (Permission denied); skipped")]  # fmt: skip


def test_predict_with_workers_gives_the_same_answers_in_the_same_order(small_model, folder, tmp_path):
    inputs = mixed_inputs(folder, tmp_path)
    plain = list(predict(torch_session(small_model, 10), inputs, topk=3, batch_size=2))
    loaded = list(predict(torch_session(small_model, 10), inputs, topk=3, batch_size=2, workers=2))
    assert [(r["file"], r["ok"], r.get("error")) for r in loaded] == [
        (r["file"], r["ok"], r.get("error")) for r in plain
    ]
    for a, b in zip(plain, loaded, strict=True):
        if a["ok"]:
            assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
            assert max(abs(x["prob"] - y["prob"]) for x, y in zip(a["top"], b["top"], strict=True)) < 1e-6
    with pytest.raises(ValueError, match="workers >= 0"):
        next(predict(small_model, inputs, workers=-1))
    with pytest.raises(ValueError, match="int8 runs a calibrated artefact: write one with `inceptionv4 quantize"):
        torch_session(small_model, precision="int8")


def test_retired_torch_forms_say_what_to_use_instead(small_model, folder, tmp_path, capsys):
    iv.save_weights(small_model, tmp_path / "m.safetensors", class_names=small_model.class_names)
    for command in (["predict", "--weights", str(tmp_path / "m.safetensors"), str(folder / "red")],
                    ["serve", "--weights", str(tmp_path / "m.safetensors")], ["bench", "inception_v4"]):  # fmt: skip
        for flag in ("--optimize", "--fuse", "--parallel"):
            with pytest.raises(SystemExit) as stop:
                main([*command, flag])
            assert stop.value.code == 2
            err = capsys.readouterr().err
            assert f"{flag} was retired: the ONNX engines are faster on a CPU" in err and "--compile" in err
            assert "Traceback" not in err
    with pytest.raises(ValueError, match="form must be one of eager, compile; got .optimize."):
        torch_session(small_model, form="optimize")


def test_one_input_that_cannot_be_examined_is_one_error_among_the_answers(small_model, folder, tmp_path):
    """A path that could not be examined (an unsearchable parent; here a name over the 255-byte
    limit, which fails the same way even for root) stopped predict before any file was read. A
    FIFO hung it and a link to /dev/zero read without bound. Each is now one error, in its place."""
    good = [str(folder / "red" / "0.png"), str(folder / "green" / "1.png")]
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    long_name = str(tmp_path / ("x" * 300 + ".png"))
    inputs = [good[0], long_name, str(fifo), str(tmp_path / "zero.png"), good[1]]
    out = list(predict(small_model, inputs, topk=1))
    assert [r["file"] for r in out] == inputs and [r["ok"] for r in out] == [True, False, False, False, True]
    assert out[1]["error"] == "cannot be examined (File name too long)"
    assert out[2]["error"] == "not a regular file (a FIFO), not read"
    assert out[3]["error"] == "not a regular file (a character device), not read"
    assert [r["top"][0]["name"] for r in (out[0], out[4])] == [r["top"][0]["name"] for r in predict(small_model, good, topk=1)]


def test_large_jpegs_are_predicted_from_a_reduced_decode_and_full_decode_is_one_flag_away(small_model, tmp_path, capsys):
    """A 1200x900 JPEG for the 75-pixel network is decoded at 1/8 (150x113): the answer is within
    a few hundredths of the full decode's; ``--full-decode`` gives the full decode's exactly."""
    import json

    import numpy as np

    from inceptionv4.cli import main
    from inceptionv4.data.decode import load_rgb

    rng = np.random.default_rng(3)
    for i in range(3):
        field = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(field).resize((1200, 900), Image.BICUBIC).save(tmp_path / f"{i}.jpg", quality=90)
    files = sorted(str(p) for p in tmp_path.glob("*.jpg"))
    reduced = list(predict(torch_session(small_model), files, topk=3))
    full = list(predict(torch_session(small_model, full_decode=True), files, topk=3))
    in_memory = list(predict(torch_session(small_model), [load_rgb(f) for f in files], topk=3))  # decoded in full
    for r, f, m in zip(reduced, full, in_memory, strict=True):
        assert [t["index"] for t in f["top"]] == [t["index"] for t in m["top"]]
        assert all(abs(a["prob"] - b["prob"]) < 1e-6 for a, b in zip(f["top"], m["top"], strict=True))
        drift = {t["index"]: t["prob"] for t in r["top"]}
        assert max(abs(drift[t["index"]] - t["prob"]) for t in f["top"]) < 0.03
    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights, class_names=small_model.class_names)
    for flags in ([], ["--full-decode"]):
        assert main(["predict", "--weights", str(weights), "--backend", "torch", "--precision", "fp32", "--json", *flags,
                     *files]) == 0  # fmt: skip
        got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        want = full if flags else reduced
        assert [g["top"][0]["index"] for g in got] == [w["top"][0]["index"] for w in want]
        assert max(abs(g["top"][0]["prob"] - w["top"][0]["prob"]) for g, w in zip(got, want, strict=True)) < 1e-5


def test_predict_names_what_runs_on_a_terminal(small_model, tmp_path, capsys, monkeypatch):
    """On a terminal, predict's first stderr line names the backend and the precision --precision
    auto chose (eval and serve print theirs in their banners); in a log file it prints none."""
    import sys

    from inceptionv4.engines.open import auto_precision

    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights, class_names=small_model.class_names)
    img = tmp_path / "x.png"
    Image.new("RGB", (90, 90), (200, 30, 30)).save(img)
    assert main(["predict", "--weights", str(weights), "--backend", "torch", "--json", str(img)]) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["predict", "--weights", str(weights), "--backend", "torch", "--json", str(img)]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first == (f"inception_resnet_v1 on torch {auto_precision('torch')} (auto), 1 crop(s), "
                     "JPEG decoding reduced (shorter side >= 85 px)")  # fmt: skip
