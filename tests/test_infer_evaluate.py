"""evaluate_protocol and the eval CLI: protocols, ensembles, workers, device decoding, torchrun, label maps."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import inceptionv4 as iv
from inceptionv4.cli import main
from inceptionv4.data import ImageFolder, Preprocessing
from inceptionv4.data.views import crop_views, protocol_pixels
from inceptionv4.infer.evaluate import evaluate_protocol, label_map
from inceptionv4.engines.session import Session
from inceptionv4.weights import imagenet1k

from .conftest import torch_session


def test_evaluate_protocol_and_ensemble(small_model, folder):
    ds = ImageFolder(folder)
    single = evaluate_protocol(torch_session([small_model], 1), ds, batch_size=4)
    assert single["n"] == 6 and len(single["skipped"]) == 1 and "corrupt.jpg" in single["skipped"][0]
    assert 0 <= single["top1"] <= 100 and single["top5"] == 100.0  # 3 classes: top-5 always hits
    assert sum(map(sum, single["confusion"])) == 6
    ten = evaluate_protocol(torch_session([small_model, small_model], 10), ds, batch_size=4)
    assert ten["models"] == 2 and ten["n"] == 6


def test_session_normalises_pixels_where_the_model_runs(small_model):
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (80, 100, 3), dtype=np.uint8))
    pre = Preprocessing.of(small_model)
    pixels = torch.cat([protocol_pixels(img, pre, 10), protocol_pixels(img.rotate(90), pre, 10)])
    floats = torch.cat([crop_views(img, pre, 10), crop_views(img.rotate(90), pre, 10)])
    with torch.no_grad():
        want = torch.softmax(small_model(floats), 1).view(2, 10, 3).mean(1)
    session = torch_session(small_model, 10)
    assert (session(floats) - want).abs().max().item() < 1e-6
    session.chunk = 3  # passes of any size give the same
    assert (session(pixels) - want).abs().max().item() < 1e-6
    bf16 = torch_session(small_model, 10, precision="bf16")(pixels)
    assert 0 < (bf16 - want).abs().max().item() < 0.05  # bf16 really ran, and is close
    with pytest.raises(ValueError, match=r"views must be \(N\*10, 3, S, S\)"):
        session(pixels[:7])
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16, int8; got .fp8."):
        torch_session(small_model, 10, precision="fp8")


def test_evaluate_protocol_with_workers_matches_one_image_at_a_time(small_model, folder):
    """Loader workers, passes of any size and channels_last change nothing: every image's prediction
    equals one computed here from crop_views, image by image."""
    ds = ImageFolder(folder)
    pre = Preprocessing.of(small_model)
    want, confusion = [], torch.zeros(3, 4, dtype=torch.long)
    for i in range(len(ds)):
        try:
            img, y = ds.load(i)
        except iv.data.DecodeError:
            continue
        with torch.no_grad():
            p = torch.softmax(small_model(crop_views(img, pre, 12)), 1).mean(0)
        name = small_model.class_names[p.argmax()]
        want.append((ds.name_of(i), ds.classes[y], name, p.max().item()))
        confusion[y, ds.classes.index(name)] += 1
    base = evaluate_protocol(torch_session([small_model], 12), ds, batch_size=16)
    assert base["confusion"] == confusion.tolist() and base["device"] == "cpu" and base["precision"] == "fp32"
    for options, chunk, layout in (({}, 64, {}), ({"workers": 2, "batch_size": 3}, 5, {}),
                                   ({"workers": 1}, 64, {"channels_last": True})):  # fmt: skip
        session = torch_session([small_model], 12, **layout)
        session.chunk = chunk
        got = evaluate_protocol(session, ds, **options)
        assert got["confusion"] == base["confusion"] and got["skipped"] == base["skipped"], options
        assert len(got["images"]) == len(want) == 6
        for image, (file, label, predicted, prob) in zip(got["images"], want, strict=True):
            assert (image["file"], image["label"], image["predicted"]) == (file, label, predicted), options
            assert abs(image["prob"] - prob) < 1e-6, options
    batches, call = [], Session.__call__
    record = lambda self, v: batches.append(len(v)) or call(self, v)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Session, "__call__", record)
        evaluate_protocol(torch_session([small_model], 12), ds)
        session = torch_session([small_model], 10)
        session.chunk = 4
        evaluate_protocol(session, ds)
    # by default a batch's views fill whole passes: 16 files x 12 crops = 3 passes of 64 (here all 7
    # files, 6 readable); 2 files x 10 crops = 5 passes of 4 (the corrupt file and the 7th: 10 views)
    assert batches == [72, 20, 10, 20, 10]
    for bad, message in (({"workers": -1}, "workers >= 0"), ({"batch_size": 0}, "batch_size must be >= 1"),
                         ({"decode": "gpu"}, "decode must be")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            evaluate_protocol([small_model], ds, **bad)
    with pytest.raises(ValueError, match="crops must be one of"):
        torch_session(small_model, 5)


def test_device_decoded_views_are_within_two_levels_of_pil(small_model, jpeg_folder):
    from inceptionv4.data.decode import load_rgb
    from inceptionv4.data.views import DeviceViews, EncodedFiles, collate_items, normalize_views

    ds = ImageFolder(jpeg_folder)
    pre = Preprocessing.of(small_model)
    batch = collate_items([EncodedFiles(ds)[i] for i in range(len(ds))])
    for crops in (1, 144):
        out = DeviceViews(pre, crops, "cpu")(dict(batch))
        readable = out["indices"]
        assert len(readable) == 7 and out["images"].shape == (7 * crops, 3, 75, 75)  # 6 JPEGs + the PNG
        want = torch.cat(
            [normalize_views(protocol_pixels(load_rgb(ds.samples[i][0]), pre, crops), pre) for i in readable]
        )
        levels = (out["images"] - want).abs() * 255 * torch.tensor(pre.std).view(1, 3, 1, 1)
        assert levels.max().item() <= 2.01 and levels.mean().item() < 0.1, (crops, levels.max(), levels.mean())
        assert out["labels"].tolist() == [ds.samples[i][1] for i in readable]
    reasons = " ".join(out["skipped"])
    assert len(out["skipped"]) == 2 and "corrupt.jpg" in reasons and "cut.jpg" in reasons


def test_evaluate_protocol_decoding_on_the_device_agrees_with_pil(small_model, jpeg_folder):
    ds = ImageFolder(jpeg_folder)
    pil = evaluate_protocol(torch_session([small_model], 12), ds)
    for workers in (0, 2):
        device = evaluate_protocol(torch_session([small_model], 12), ds, decode="device", workers=workers)
        assert device["decode"] == "device" and sorted(device["skipped"]) == sorted(pil["skipped"])
        assert device["confusion"] == pil["confusion"] and device["n"] == pil["n"] == 7
        for a, b in zip(pil["images"], device["images"], strict=True):
            assert (a["file"], a["predicted"]) == (b["file"], b["predicted"]) and abs(a["prob"] - b["prob"]) < 2e-3
    with pytest.raises(ValueError, match="decode must be 'workers' or 'device', got 'gpu'"):
        evaluate_protocol([small_model], ds, decode="gpu")


def test_eval_under_torchrun_gives_the_one_process_report(small_model, jpeg_folder, tmp_path, capsys):
    """Two gloo processes each take every other image; rank 0 writes the merged report, which
    equals one process's: every image's prediction, in dataset order, and the skipped files."""
    import socket

    iv.save_weights(small_model, tmp_path / "m.safetensors", class_names=small_model.class_names)
    common = ["eval", "--weights", str(tmp_path / "m.safetensors"), "--data", str(jpeg_folder), "--crops", "10",
              "--device", "cpu", "--workers", "1", "--no-progress"]  # fmt: skip
    assert main([*common, "--report", str(tmp_path / "one.json")]) == 0
    capsys.readouterr()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(port), "-m", "inceptionv4", *common, "--report", str(tmp_path / "two.json")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("7 images, 10 crop(s), 1 model(s) on cpu x 2 processes: top-1") == 1  # rank 0 alone
    one, two = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("one", "two"))
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["confusion"] == one["confusion"] and two["top5"] == one["top5"] and two["skipped"] == one["skipped"]
    assert [(x["file"], x["predicted"]) for x in two["images"]] == [(x["file"], x["predicted"]) for x in one["images"]]
    assert max(abs(a["prob"] - b["prob"]) for a, b in zip(one["images"], two["images"], strict=True)) < 1e-6
    assert len(two["skipped"]) == 2 and len(two["images"]) == 7


def test_evaluating_nothing_readable_is_an_error(small_model, tmp_path):
    (tmp_path / "red").mkdir()
    (tmp_path / "red" / "a.jpg").write_bytes(b"\xff\xd8\xffnot really")
    (tmp_path / "red" / "b.png").write_text("text")
    with pytest.raises(ValueError, match=r"no image of the 2 in the dataset could be read: .*a.jpg.*; .*b.png"):
        evaluate_protocol(torch_session([small_model], 1), ImageFolder(tmp_path), batch_size=4)


def test_imagenet_folders_map_by_wordnet_id(small_model):
    model = iv.create_model("inception_v4", num_classes=1000)
    model.label_set = "imagenet-1k"
    assert label_map(["n01443537", "n01440764"], model) == [1, 0]  # goldfish, tench
    assert imagenet1k()[1].name == "goldfish"
    with pytest.raises(ValueError, match="do not match the model's 3 outputs"):
        label_map(["a", "b"], small_model)
    # a list file's integer labels (``img.jpg 1``) are output indices, also when the top ones are unused
    assert label_map(["0", "1"], small_model) == [0, 1]
    assert label_map([str(i) for i in range(1000)], model) == list(range(1000))
    with pytest.raises(ValueError, match="do not match the model's 3 outputs"):
        label_map(["0", "1", "2", "3"], small_model)  # more indices than outputs


def test_eval_cli_writes_report_and_confusion_png(small_model, folder, tmp_path, capsys):
    iv.save_weights(small_model, tmp_path / "m.safetensors", class_names=small_model.class_names)
    report = tmp_path / "out" / "report.json"
    args = ["eval", "--ensemble", str(tmp_path / "m.safetensors"), str(tmp_path / "m.safetensors"), "--data", str(folder),
            "--crops", "10", "--report", str(report), "--no-progress", "--workers", "2"]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "6 images, 10 crop(s), 2 model(s) on cpu: top-1" in captured.out and "corrupt.jpg" in captured.err
    data = json.loads(report.read_text())
    assert set(data["per_class_top1"]) == {"red", "green", "blue"} and len(data["confusion"]) == 3
    assert (tmp_path / "out" / "report.confusion.png").stat().st_size > 1000
    assert f"wrote {report} (the report) and {report.with_suffix('.confusion.png')} (its confusion matrix)" in captured.out
    assert data["confusion_columns"] == [*data["classes"], "(a class outside the dataset)"]
    assert all(len(row) == 4 for row in data["confusion"])
    assert main(["eval", "--weights", str(tmp_path / "m.safetensors")]) == 2  # no data given: one clear line
    assert "give one of --data" in capsys.readouterr().err
    args = ["eval", "--weights", str(tmp_path / "m.safetensors"), "--data", str(folder), "--decode", "device",
            "--channels-last", "--workers", "0", "--report", str(report), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "6 images, 1 crop(s), 1 model(s) on cpu: top-1" in capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["decode"] == "device" and len(data["images"]) == 6 and len(data["skipped"]) == 1


def test_tally_counts_against_a_loop_with_outputs_outside_the_dataset():
    """3 dataset classes on 6 outputs (mapping 4, 0, 2): predictions of outputs 1, 3, 5 land in
    the OUTSIDE column; top-1, top-5, loss and confusion equal a per-image count."""
    from inceptionv4.infer.evaluate import OUTSIDE, Tally

    gen = torch.Generator().manual_seed(0)
    mapping, keys = [4, 0, 2], [f"k{i}" for i in range(6)]
    tally = Tally(["a", "b", "c"], mapping, keys)
    want, top5, nll = torch.zeros(3, 4, dtype=torch.long), 0, 0.0
    for _ in range(3):
        probs = torch.softmax(torch.randn(50, 6, generator=gen) * 3, 1)
        labels = torch.randint(0, 3, (50,), generator=gen).tolist()
        tally.add(probs, labels, list(range(50)))
        for p, y in zip(probs, labels, strict=True):
            out = int(p.argmax())
            want[y, mapping.index(out) if out in mapping else 3] += 1
            top5 += int(mapping[y] in p.topk(5).indices.tolist())
            nll -= float(p[mapping[y]].log())
    report = tally.report()
    assert report["confusion"] == want.tolist() and want[:, 3].sum() > 0 and report["confusion_columns"][-1] == OUTSIDE
    assert report["n"] == 150 and report["top1"] == pytest.approx(100 * want.diag().sum().item() / 150)
    assert report["top5"] == pytest.approx(100 * top5 / 150) and report["loss"] == pytest.approx(nll / 150, rel=1e-5)
