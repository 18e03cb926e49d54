"""infer.explain: class-activation maps against a Grad-CAM written out by hand, on every network, at
any size, in channels_last; mapped back onto the image; from any session; and, on digits placed at
random on a canvas, peaking on the digit."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import inceptionv4 as iv
from inceptionv4.cli import main
from inceptionv4.data.views import crop_views
from inceptionv4.engines.open import open_session
from inceptionv4.infer.explain import Explainer, crop_box, explain

from .conftest import randomize_bn


def centred(cam: np.ndarray, stride: int, height: int, width: int) -> np.ndarray:
    """A (h, w) map onto (height, width): cell i's centre at ``(L - 1 - (n - 1) * stride) / 2 + i * stride``,
    linear between centres, constant beyond (np.interp, one axis then the other)."""

    def centres(n, length):
        return (length - 1 - (n - 1) * stride) / 2 + stride * np.arange(n)

    cy, cx = centres(cam.shape[0], height), centres(cam.shape[1], width)
    rows = np.stack([np.interp(np.arange(width), cx, r) for r in cam])  # (h, W)
    return np.stack([np.interp(np.arange(height), cy, c) for c in rows.T], 1)  # (H, W)


def reference_gradcam(net, layer: str, x: torch.Tensor, target: torch.Tensor, hires: bool = False) -> torch.Tensor:
    """Grad-CAM (or HiResCAM) as the papers define it, with a hook and autograd: (N, H, W) in [0, 1]."""
    seen = {}
    handle = net.get_submodule(layer).register_forward_hook(lambda m, i, out: seen.update(a=out))
    try:
        logits = net(x)
    finally:
        handle.remove()
    a = seen["a"]
    (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), a)
    cam = ((g * a).sum(1) if hires else (g.mean((2, 3), keepdim=True) * a).sum(1)).clamp_min(0).detach()
    stride = next(f.reduction for f in net.feature_info if f.module == layer)
    cam = torch.from_numpy(np.stack([centred(c.double().numpy(), stride, *x.shape[-2:]) for c in cam])).float()
    return (cam / cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)).clamp(0, 1)


@pytest.mark.parametrize("name", iv.list_models())
def test_every_network_at_any_size_and_channels_last_matches_the_definition(name):
    torch.manual_seed(0)
    net = randomize_bn(iv.create_model(name, num_classes=4)).eval()
    drawn = 0
    for size, channels_last, method in (((110, 150), False, "gradcam"), ((160, 160), True, "hirescam")):
        x = torch.randn(2, 3, *size)
        got = explain(net, x, target=[1, 3], method=method, channels_last=channels_last)
        want = reference_gradcam(net, net.feature_info[-1].module, x, torch.tensor([1, 3]), hires=method == "hirescam")
        for e, w, cls in zip(got, want, (1, 3), strict=True):
            assert e.heatmap.shape == size and e.index == cls and e.layer == net.feature_info[-1].module
            assert e.heatmap.max() in (0.0, pytest.approx(1.0)) and e.heatmap.min() >= 0  # Grad-CAM may be all < 0
            assert np.abs(e.heatmap - w.numpy()).max() < 1e-4, (name, size, method)
            drawn += e.heatmap.max() > 0
    assert drawn >= 2
    # a finer stage, named as feature_info names it
    x = torch.randn(1, 3, 120, 120)
    (e,) = explain(net, x, target="top1", layer="stage_b")
    w = reference_gradcam(net, "stage_b", x, torch.tensor([e.top1["index"]]), hires=True)  # the default method
    assert e.index == e.top1["index"] and np.abs(e.heatmap - w[0].numpy()).max() < 1e-4


def test_the_map_lies_on_the_part_of_the_image_the_network_saw(small_model):
    """An image coding each pixel's column in red and row in green: the view predict classifies
    starts where crop_box says, and the map is 0 outside that box, at the image's size."""
    width, height = 240, 180
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    image = Image.fromarray(np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.uint8))
    pre = iv.models.Preprocessing.of(small_model)
    left, top, right, bottom = crop_box(image.size, pre)
    assert (right - left) == (bottom - top) and bottom - top == round(height * pre.input_size / pre.resize_size)
    view = crop_views(image, pre)[0] * torch.tensor(pre.std).view(3, 1, 1) + torch.tensor(pre.mean).view(3, 1, 1)
    assert abs(255 * view[0, :, 0].mean().item() - left) < 2 and abs(255 * view[1, 0, :].mean().item() - top) < 2
    assert abs(255 * view[0, :, -1].mean().item() - (right - 1)) < 2
    (e,) = explain(small_model, image)
    assert e.heatmap.shape == (height, width) and e.box == (left, top, right, bottom)
    inside = np.zeros_like(e.heatmap, dtype=bool)
    inside[top:bottom, left:right] = True
    assert e.heatmap[~inside].max() == 0 and e.heatmap[inside].max() == pytest.approx(1.0)


def test_targets_by_name_and_index_and_what_is_refused(small_model, tmp_path):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 90, 3), dtype=np.uint8))
    by_name, by_index, top = explain(small_model, [image, image, image], target=["blue", 1, "top1"])
    assert (by_name.index, by_name.name, by_index.name) == (2, "blue", "green")
    assert top.index == top.top1["index"] and top.prob == pytest.approx(top.top1["prob"])
    probs = F.softmax(small_model(crop_views(image, iv.models.Preprocessing.of(small_model))), 1)[0]
    assert by_name.prob == pytest.approx(probs[2].item(), abs=1e-5)
    with pytest.raises(ValueError, match="target 'purple' is not one of the network's classes"):
        explain(small_model, image, target="purple")
    with pytest.raises(ValueError, match="target class 3 is outside 0-2"):
        explain(small_model, image, target=3)
    with pytest.raises(ValueError, match="layer must be one of inception_resnet_v1's stages .*stage_b.*got 'head'"):
        explain(small_model, image, layer="head")
    with pytest.raises(ValueError, match="method must be one of hirescam, gradcam"):
        explain(small_model, image, method="lime")
    with pytest.raises(ValueError, match="give one target per image: 2 for 1"):
        explain(small_model, image, target=[0, 1])
    features = iv.create_model("inception_resnet_v1", num_classes=3, features_only=True)
    with pytest.raises(ValueError, match="no classifier"):
        explain(features, image)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(iv.data.decode.DecodeError, match="broken.jpg"):
        explain(small_model, tmp_path / "broken.jpg")


def test_a_session_is_explained_from_its_fp32_weights_whatever_engine_runs_it(small_model, tmp_path):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (100, 140, 3), dtype=np.uint8))
    want = explain(small_model, image)[0]
    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights)
    for session in (open_session(weights, backend="onnxruntime"), open_session(weights, backend="torch",
                                                                                precision="bf16", channels_last=True)):  # fmt: skip
        got = explain(session, image)[0]
        assert got.index == want.index and np.abs(got.heatmap - want.heatmap).max() < 1e-5, session.backend
    ensemble = explain(open_session([weights, weights], backend="torch"), image)[0]
    assert np.abs(ensemble.heatmap - want.heatmap).max() < 1e-5  # two equal models: the same map
    explainer = Explainer.of(open_session(small_model, backend="torch"))
    assert explainer.networks[0] is not small_model  # its own copy: hooks and gradients stay away from serving


@pytest.mark.skipif(not iv.extras.installed("onnxruntime"), reason="needs onnxruntime")
def test_an_int8_artefact_is_explained_with_the_fp32_weights_its_report_names(small_model, tmp_path):
    from .conftest import int8_onnx

    weights, q = int8_onnx(small_model, tmp_path)
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (90, 90, 3), dtype=np.uint8))
    want = explain(small_model, image, target=0)[0]
    got = explain(open_session(q), image, target=0)[0]
    assert np.abs(got.heatmap - want.heatmap).max() < 1e-5
    moved = tmp_path / "elsewhere.safetensors"
    weights.rename(moved)
    with pytest.raises(ValueError, match=r"q.onnx is an int8 artefact: .* report names .*fp32.safetensors, which is "
                                         r"not here; give them with --explain-weights FILE"):  # fmt: skip
        explain(open_session(q), image)
    assert np.abs(explain(open_session(q), image, target=0, weights=moved)[0].heatmap - want.heatmap).max() < 1e-5
    other = tmp_path / "other.safetensors"
    torch.manual_seed(5)
    iv.save_weights(randomize_bn(iv.create_model("inception_resnet_v1", num_classes=3)), other,
                    class_names=["red", "green", "blue"])  # fmt: skip
    with pytest.raises(ValueError, match="are not the fp32 weights q.onnx was quantized from"):
        explain(open_session(q), image, weights=other)


def _colour_images(folder, rng, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (70 + 10 * i, 96, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


def test_predict_explain_writes_one_overlay_per_image(small_model, tmp_path, capsys):
    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights)
    _colour_images(tmp_path / "in", np.random.default_rng(3))
    (tmp_path / "in" / "notes.png").write_text("not an image")
    code = main(["predict", str(tmp_path / "in"), "--weights", str(weights), "--explain", str(tmp_path / "why"),
                 "--json", "--backend", "torch"])  # fmt: skip
    assert code == 1  # the unreadable file
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    overlays = [r for r in lines if "overlay" in r]
    predicted = {r["file"]: r["top"][0] for r in lines if r.get("ok")}
    assert len(overlays) == 3 and sorted(p.name for p in (tmp_path / "why").iterdir()) == ["img0.png", "img1.png",
                                                                                           "img2.png"]  # fmt: skip
    for r in overlays:
        assert r["index"] == predicted[r["file"]]["index"] and r["method"] == "hirescam" and r["layer"] == "stage_c"
        png = Image.open(r["overlay"])
        assert png.width >= 96 and png.height > 70  # the image, and the title above it
    code = main(["predict", str(tmp_path / "in" / "img0.png"), "--weights", str(weights), "--explain",
                 str(tmp_path / "why2"), "--explain-method", "gradcam", "--explain-layer", "stage_b"])  # fmt: skip
    assert code == 0 and (tmp_path / "why2" / "img0.png").is_file()
    assert "wrote 1 overlay(s) into" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", "x.png", "--weights", str(weights), "--explain", "d", "--explain-method", "lime"])


def test_eval_explain_errors_writes_the_worst_mistakes_first(small_model, tmp_path, capsys):
    from .conftest import colour_folders

    (tmp_path / "data").mkdir()
    colour_folders(tmp_path / "data", 3, (80, 96), 25)
    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights)
    report = tmp_path / "r.json"
    code = main(["eval", "--data", str(tmp_path / "data"), "--weights", str(weights), "--report", str(report),
                 "--explain-errors", str(tmp_path / "errors"), "--explain-limit", "4", "--backend", "torch"])  # fmt: skip
    assert code == 0
    r = json.loads(report.read_text())
    wrong = sorted((e for e in r["images"] if e["label"] != e["predicted"]), key=lambda e: -e["prob"])
    written = sorted(p.name for p in (tmp_path / "errors").iterdir())
    assert len(written) == min(4, len(wrong)) > 0
    for rank, (name, entry) in enumerate(zip(written, wrong, strict=False), 1):
        assert name == f"{rank:04d}-{entry['file'].rsplit('/', 1)[-1].rsplit('.', 1)[0]}.png"
    assert f"of the {len(wrong)} misclassified image(s)" in capsys.readouterr().out


def _views(dataset, indices) -> torch.Tensor:
    """The canvases as normalised views (mean and std 0.5), as they are: no resize, no crop."""
    pixels = torch.stack([torch.from_numpy(np.array(dataset.load(i)[0])).permute(2, 0, 1) for i in indices])
    return (pixels.float() / 255 - 0.5) / 0.5


def test_on_digits_placed_at_random_the_map_falls_on_the_digit():
    """Inception-ResNet-v1 trained briefly on 128 px canvases with a 48 px digit somewhere
    (data.DigitCanvas): on held-out digits, at least 90% of the correctly classified images have
    most of their map's mass inside the digit's box (the default method, at stage_b: 6x6 cells at
    128 px, as the last stage is 8x8 at 299). docs/explain.md gives the figures of both methods."""
    from inceptionv4.data import DigitCanvas

    train, held = DigitCanvas("train"), DigitCanvas("val", samples=160)
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    net = iv.create_model("inception_resnet_v1", num_classes=10).train()
    steps = 110
    opt = torch.optim.AdamW(net.parameters(), 2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps, pct_start=0.15)
    for _ in range(steps):
        picks = rng.integers(0, len(train), 32).tolist()
        loss = F.cross_entropy(net(_views(train, picks)), torch.tensor([train.samples[i][1] for i in picks]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    net.eval()
    maps = explain(net, _views(held, range(len(held))), layer="stage_b")
    right = [i for i, e in enumerate(maps) if e.index == held.samples[i][1]]
    assert len(right) >= 32, f"only {len(right)} of 160 right: too few to judge the maps"
    inside = 0
    for i in right:
        (left, top, r, b), h = held.box_of(i), maps[i].heatmap
        inside += h[top:b, left:r].sum() > 0.5 * h.sum()
    assert maps[0].method == "hirescam" and maps[0].heatmap.shape == (128, 128)
    assert inside / len(right) >= 0.9, f"{inside} of {len(right)}"
