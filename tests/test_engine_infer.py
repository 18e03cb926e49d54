"""eval protocols, predict, export parity, BN folding and bench, on small inputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import inceptionv4 as iv
from inceptionv4.cli import main
from inceptionv4.data import ImageFolder, Preprocessing
from inceptionv4.tools.bench import benchmark
from inceptionv4.infer.predict import expand_inputs, predict
from inceptionv4.data.views import crop_views, cut_views, protocol_pieces, protocol_pixels, scales_for
from inceptionv4.infer.evaluate import evaluate_protocol, label_map
from inceptionv4.infer.session import Session
from .conftest import colour_folders, torch_session
from inceptionv4.models import count_flops
from inceptionv4.weights import imagenet1k


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    colour_folders(root, 2, (90, 120), 20)
    (root / "blue" / "corrupt.jpg").write_bytes(b"\xff\xd8\xffnot really")
    return root


@pytest.mark.parametrize("crops", [1, 10, 12, 144])
def test_crop_protocols_make_the_stated_number_of_views(crops):
    img = Image.new("RGB", (400, 300), (1, 2, 3))
    pre = Preprocessing(input_size=75)
    views = crop_views(img, pre, crops)
    assert views.shape == (crops, 3, 75, 75)
    if crops == 144:
        assert scales_for(pre, 144) == [86, 96, 107, 118]  # GoogLeNet's 256..352 for 224, scaled to 75
        assert scales_for(Preprocessing(), 144) == [342, 384, 427, 470]  # at 299
    if crops >= 10:
        assert torch.allclose(views[1], views[0].flip(-1))  # every crop comes with its mirror


def test_evaluate_protocol_and_ensemble(small_model, folder):
    ds = ImageFolder(folder)
    single = evaluate_protocol(torch_session([small_model], 1), ds, batch_size=4)
    assert single["n"] == 6 and len(single["skipped"]) == 1 and "corrupt.jpg" in single["skipped"][0]
    assert 0 <= single["top1"] <= 100 and single["top5"] == 100.0  # 3 classes: top-5 always hits
    assert sum(map(sum, single["confusion"])) == 6
    ten = evaluate_protocol(torch_session([small_model, small_model], 10), ds, batch_size=4)
    assert ten["models"] == 2 and ten["n"] == 6


def test_protocol_pixels_are_the_views_before_normalising():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 130, 3), dtype=np.uint8))
    pre = Preprocessing(input_size=75, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    for crops in (1, 10, 12, 144):
        pixels = protocol_pixels(img, pre, crops)
        assert pixels.dtype == torch.uint8 and pixels.shape == (crops, 3, 75, 75)
        want = torch.stack([(v.float() / 255 - torch.tensor(pre.mean)[:, None, None]) / torch.tensor(pre.std)[:, None, None]
                            for v in pixels])  # fmt: skip
        assert (crop_views(img, pre, crops) - want).abs().max().item() < 1e-6
    # the single view is PIL's own bicubic resize (shorter side to resize_size) and centre crop, as bytes
    assert pre.interpolation == "bicubic"
    resized = img.resize((int(130 * pre.resize_size / 90), pre.resize_size), Image.Resampling.BICUBIC)
    left, top = round((resized.width - 75) / 2), round((resized.height - 75) / 2)
    want = np.array(resized.crop((left, top, left + 75, top + 75)))
    assert torch.equal(protocol_pixels(img, pre, 1)[0], torch.from_numpy(want).permute(2, 0, 1))


def reference_views(img: Image.Image, pre: Preprocessing, crops: int) -> torch.Tensor:
    """The protocols written the plain way: every view cropped and mirrored by PIL itself."""
    from torchvision.transforms.v2 import functional as TF

    s, interp = pre.input_size, TF.InterpolationMode(pre.interpolation)
    views = []
    for side in scales_for(pre, crops):
        resized = TF.resize(img, side, interpolation=interp, antialias=True)
        if crops == 1:
            views.append(TF.center_crop(resized, [s, s]))
            continue
        if crops == 10:
            five = list(TF.five_crop(resized, [s, s]))
            views += five + [TF.hflip(v) for v in five]
            continue
        w, h = resized.size
        q = min(w, h)
        offsets = [0, (max(w, h) - q) // 2, max(w, h) - q] if crops == 144 else [(max(w, h) - q) // 2]
        for o in offsets:
            square = resized.crop((o, 0, o + q, q) if w >= h else (0, o, q, o + q))
            for v in [*TF.five_crop(square, [s, s]), TF.resize(square, [s, s], interpolation=interp, antialias=True)]:
                views += [v, TF.hflip(v)]
    return torch.stack([TF.pil_to_tensor(v) for v in views])


@pytest.mark.parametrize("shape", [(100, 140), (141, 97), (96, 96)])
def test_protocol_views_are_bit_identical_to_pil_cropping_every_view(shape):
    img = Image.fromarray(np.random.default_rng(4).integers(0, 256, (*shape, 3), dtype=np.uint8))
    for pre in (Preprocessing(input_size=75), Preprocessing(input_size=75, crop_pct=1.0, interpolation="bilinear")):
        for crops in (1, 10, 12, 144):
            assert torch.equal(protocol_pixels(img, pre, crops), reference_views(img, pre, crops)), (pre, crops)


def test_144_crops_are_cut_from_16_pictures_where_pil_puts_them():
    """The worker resamples (4 scales, 12 squares resized whole); the crops and mirrors are cut
    later. Views checked one by one against PIL's own resize, crop and mirror."""
    img = Image.fromarray(np.random.default_rng(3).integers(0, 256, (100, 140, 3), dtype=np.uint8))
    pre = Preprocessing(input_size=75)
    counts = {c: len(protocol_pieces(img, pre, c).pictures) for c in (1, 10, 12, 144)}
    assert counts == {1: 1, 10: 1, 12: 2, 144: 16}
    pieces = protocol_pieces(img, pre, 144)
    views = cut_views(pieces)
    assert views.shape == (144, 3, 75, 75) and pieces.plan.shape == (144, 4)
    assert torch.equal(views, protocol_pixels(img, pre, 144))

    def pil(picture: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(picture)).permute(2, 0, 1)

    bicubic = Image.Resampling.BICUBIC
    first = img.resize((int(140 * 86 / 100), 86), bicubic)  # scale 86 (256 of 224, at 75): 120x86
    assert torch.equal(views[0], pil(first.crop((0, 0, 75, 75))))  # left square, top-left corner
    assert torch.equal(views[1], views[0].flip(-1))
    assert torch.equal(views[9], pil(first.crop((6, 6, 81, 81))).flip(-1))  # its centre (86-75)/2 -> 6, mirrored
    assert torch.equal(views[10], pil(first.crop((0, 0, 86, 86)).resize((75, 75), bicubic)))  # the square, whole
    last = img.resize((int(140 * 118 / 100), 118), bicubic)  # scale 118 (352 of 224): 165x118
    assert torch.equal(views[143], pil(last.crop((165 - 118, 0, 165, 118)).resize((75, 75), bicubic)).flip(-1))
    assert torch.equal(views[132], pil(last.crop((165 - 118, 0, 165 - 118 + 75, 75))))  # right square, top-left


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
    with pytest.raises(ValueError, match=r"unknown precision 'fp8': choose one of fp32, bf16, fp16, int8"):
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


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    """red/green/blue JPEGs (smooth colours, odd sizes), one PNG, a truncated JPEG and a non-image."""
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(5)
    for c, (r, g, b) in (("red", (200, 40, 40)), ("green", (40, 200, 40)), ("blue", (40, 40, 200))):
        (root / c).mkdir()
        for i in range(2):
            base = np.clip(np.array((r, g, b)) + rng.normal(0, 40, (11, 13, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(base).resize((101 + 9 * i, 83 + 5 * i), Image.BICUBIC).save(
                root / c / f"{i}.jpg", quality=92
            )
    Image.open(root / "red" / "0.jpg").save(root / "green" / "as.png")
    (root / "blue" / "cut.jpg").write_bytes((root / "blue" / "0.jpg").read_bytes()[:300])
    (root / "blue" / "corrupt.jpg").write_bytes(b"\xff\xd8\xffnot really")
    return root


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
    from inceptionv4.data import device_augment

    monkeypatch.setattr(device_augment, "decode_payloads", _payloads_failing_on("0.jpg"))
    odd = list(predict(small_model, [str(jpeg_folder / "red")], topk=1, batch_size=4, decode="device"))
    assert [(Path(r["file"]).name, r["ok"]) for r in odd] == [("0.jpg", False), ("1.jpg", True)]
    assert odd[0]["error"] == "no decoder read it"
    with pytest.raises(ValueError, match="decode must be 'workers' or 'device', got 'gpu'"):
        next(predict(small_model, inputs, decode="gpu"))


def _payloads_failing_on(name):
    """decode_payloads, with the file called ``name`` failing as an unreadable JPEG would."""
    from inceptionv4.data.device_augment import pixels_of

    def decode(payloads, names, device):
        return [f"{n}: no decoder read it" if n.endswith(name) else pixels_of(Image.open(n).convert("RGB"))
                for p, n in zip(payloads, names, strict=True)]  # fmt: skip

    return decode


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
    with pytest.raises(ValueError, match=r"crops must be one of \(1, 10, 12, 144\), got 7"):
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
    with pytest.raises(ValueError, match="unknown form 'optimize': choose one of eager, compile"):
        torch_session(small_model, form="optimize")


def test_export_cli(tmp_path, capsys):
    assert main(["export", str(tmp_path / "v4.onnx"), "--model", "inception_v4", "--input-size", "75"]) == 0
    assert "max |diff| vs eager" in capsys.readouterr().out


def test_bench_reports_ratio_against_timm():
    pytest.importorskip("timm")
    r = benchmark("inception_v4", batch_size=1, input_size=75, warmup=1, iters=2, compare="timm")
    assert r["ours"]["img_per_s"] > 0 and r["timm"]["img_per_s"] > 0
    assert r["speedup_vs_timm"] == pytest.approx(r["ours"]["img_per_s"] / r["timm"]["img_per_s"])
    with torch.device("meta"):
        assert r["gflops_per_image"] == pytest.approx(count_flops(iv.create_model("inception_v4"), 75) / 1e9)
    t = benchmark("inception_resnet_v1", batch_size=2, input_size=75, warmup=1, iters=1, mode="train")
    assert t["ours"]["latency_p50_ms"] > 0
    with pytest.raises(ValueError, match="timm has no inception_resnet_v2_paper"):
        benchmark("inception_resnet_v2_paper", batch_size=1, input_size=75, iters=1, warmup=0, compare="timm")


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
    assert "give --data" in capsys.readouterr().err
    args = ["eval", "--weights", str(tmp_path / "m.safetensors"), "--data", str(folder), "--decode", "device",
            "--channels-last", "--workers", "0", "--report", str(report), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "6 images, 1 crop(s), 1 model(s) on cpu: top-1" in capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["decode"] == "device" and len(data["images"]) == 6 and len(data["skipped"]) == 1


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
