"""Augmentation on the device: the workers' share, the batched decode, and equality with torchvision."""

import numpy as np
import pytest
import torch
import torchvision.io
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from inceptionv4.data import (
    DeviceAugment,
    DeviceBatches,
    EncodedImages,
    ImageFolder,
    Preprocessing,
    Synthetic,
    collate_encoded,
)
from inceptionv4.data.base import Item, Skipped
from inceptionv4.data.device_augment import _color_jitter, sample_crop
from inceptionv4.data.device_decode import device_decodable
from inceptionv4.data.views import DeviceViews
from inceptionv4.train import train

# the reference decodes with torchvision's own decoder, deprecated in 0.29 for TorchCodec
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def _photo(rng, w=120, h=90) -> Image.Image:
    """Smooth random colours: JPEG-like content, not noise."""
    return Image.fromarray(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)


@pytest.fixture
def jpeg_folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "photos" / c).mkdir(parents=True)
        for i in range(3):
            _photo(rng, 100 + 20 * i, 80 + 10 * i).save(tmp_path / "photos" / c / f"{i}.jpg", quality=90)
    return tmp_path / "photos"


def _reference(payload, box, flip, pre, interpolation):
    """torchvision's tensor ops on the same decoded image and crop, in float."""
    img = torchvision.io.decode_jpeg(payload, mode=torchvision.io.ImageReadMode.RGB) if payload.dim() == 1 else payload
    x = TF.resized_crop(img.float(), *box, [pre.input_size] * 2, interpolation=interpolation, antialias=True)
    x = x.clamp(0, 255)
    if flip:
        x = x.flip(-1)
    return TF.normalize(x / 255, list(pre.mean), list(pre.std))


def test_crops_follow_the_inception_distribution_as_torchvision_draws_it():
    gen = torch.Generator().manual_seed(0)
    ours = [sample_crop(375, 500, gen, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(3000)]
    for top, left, h, w in ours:
        assert 0 <= top and top + h <= 375 and 0 <= left and left + w <= 500
        assert 3 / 4 - 0.02 < w / h < 4 / 3 + 0.02
    area = np.array([h * w / (375 * 500) for _, _, h, w in ours])
    assert area.min() > 0.075 and area.max() <= 1.0
    torch.manual_seed(0)
    theirs = [v2.RandomResizedCrop.get_params(torch.empty(3, 375, 500), [0.08, 1.0], [3 / 4, 4 / 3])
              for _ in range(3000)]  # fmt: skip
    area_tv = np.array([h * w / (375 * 500) for _, _, h, w in theirs])
    assert abs(area.mean() - area_tv.mean()) < 0.02 and abs(np.median(area) - np.median(area_tv)) < 0.03
    aspect, aspect_tv = (np.log([w / h for *_, h, w in crops]).mean() for crops in (ours, theirs))
    assert abs(aspect - aspect_tv) < 0.02  # log-uniform, skewed alike by the misses of wide crops
    # a strip far outside the aspect range: the largest centred crop of aspect 4/3
    assert sample_crop(10, 1000, torch.Generator().manual_seed(0), (0.9, 1.0), (3 / 4, 4 / 3)) == (0, 493, 10, 13)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_device_augment_equals_torchvision_on_the_same_crops(jpeg_folder, interpolation):
    pre = Preprocessing(input_size=64, interpolation=interpolation)
    ds = EncodedImages(ImageFolder(jpeg_folder), hflip=0.5, seed=3)
    batch = collate_encoded([ds[i] for i in range(len(ds))])
    assert all(p.dim() == 1 for p in batch["payloads"])  # every file goes to the device decoder as bytes
    assert batch["flips"].any() and not batch["flips"].all()
    out = DeviceAugment(pre, "cpu", channels_last=True)(batch)
    x = out["images"]
    assert x.shape == (6, 3, 64, 64) and x.is_contiguous(memory_format=torch.channels_last)
    assert out["labels"].tolist() == [0, 0, 0, 1, 1, 1] and out["skipped"] == []
    mode = getattr(v2.InterpolationMode, interpolation.upper())
    for k in range(6):
        ref = _reference(batch["payloads"][k], batch["boxes"][k].tolist(), batch["flips"][k], pre, mode)
        assert (x[k] - ref).abs().max().item() < 1e-4
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_the_draws_depend_only_on_seed_epoch_index(jpeg_folder):
    ds = EncodedImages(ImageFolder(jpeg_folder), seed=5)
    first = [ds[i].params for i in range(len(ds))]
    assert [ds[i].params for i in reversed(range(len(ds)))][::-1] == first  # order does not matter
    ds.set_epoch(1)
    assert [ds[i].params for i in range(len(ds))] != first


def test_files_the_device_cannot_take_arrive_as_pixels_and_bad_ones_are_skipped(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "c"
    d.mkdir()
    photo = _photo(rng, 64, 48)
    photo.save(d / "rgb.jpg")
    photo.convert("L").save(d / "gray.jpg")
    photo.convert("CMYK").save(d / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    photo.save(d / "rotated.jpg", exif=exif.tobytes())
    photo.save(d / "png.png")
    (d / "truncated.jpg").write_bytes((d / "rgb.jpg").read_bytes()[:300])
    (d / "text.jpg").write_text("not an image")
    ds = EncodedImages(ImageFolder(tmp_path), seed=0)
    items = {ds.base.name_of(i).rsplit("/", 1)[1]: ds[i] for i in range(len(ds))}
    shapes = {name: tuple(item.data.shape) for name, item in items.items() if isinstance(item, Item)}
    assert shapes["rgb.jpg"] == ((d / "rgb.jpg").stat().st_size,)  # the file's bytes, for the device
    assert shapes["gray.jpg"] == ((d / "gray.jpg").stat().st_size,)
    assert shapes["cmyk.jpg"] == (3, 48, 64) and shapes["png.png"] == (3, 48, 64)
    assert shapes["rotated.jpg"] == (3, 64, 48)  # upright, as load_rgb gives it
    assert isinstance(items["text.jpg"], Skipped) and isinstance(items["truncated.jpg"], Skipped)
    assert "corrupt or truncated" in items["truncated.jpg"].reason and "not an image" in items["text.jpg"].reason
    assert device_decodable((d / "rgb.jpg").read_bytes()) == (48, 64)
    batch = collate_encoded(list(items.values()))
    assert len(batch["skipped"]) == 2
    out = DeviceAugment(Preprocessing(input_size=32), "cpu")(batch)
    assert out["images"].shape == (5, 3, 32, 32) and torch.isfinite(out["images"]).all()
    gray = out["images"][batch["names"].index(str(d / "gray.jpg"))]
    assert (gray[0] - gray[1]).abs().max() < 1e-6 and (gray[1] - gray[2]).abs().max() < 1e-6


def test_a_batch_the_decoder_refuses_is_decoded_one_by_one(jpeg_folder, monkeypatch, caplog):
    ds = EncodedImages(ImageFolder(jpeg_folder), seed=0)
    batch = collate_encoded([ds[i] for i in range(len(ds))])
    expected = DeviceAugment(Preprocessing(input_size=32), "cpu")(dict(batch))["images"]
    batch["payloads"][4] = batch["payloads"][4][:-200]  # damaged after the worker's checks
    real = torchvision.io.decode_jpeg

    def picky(data, **kw):  # refuses a batch, and the damaged file
        if isinstance(data, list) or data.numel() == batch["payloads"][4].numel():
            raise RuntimeError("nvjpeg: bad bitstream")
        return real(data, **kw)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", picky)
    with caplog.at_level("WARNING"):
        out = DeviceAugment(Preprocessing(input_size=32), "cpu")(batch)
    assert out["labels"].tolist() == [0, 0, 0, 1, 1] and out["indices"].tolist() == [0, 1, 2, 3, 5]
    (reason,) = out["skipped"]
    assert reason.startswith(str(jpeg_folder / "b" / "1.jpg") + ": corrupt or truncated image")
    assert f"skipping {reason}" in caplog.text
    keep = torch.tensor([0, 1, 2, 3, 5])
    assert (out["images"] - expected[keep]).abs().max().item() < 1e-6


def test_prefetching_changes_when_a_batch_is_made_not_what_it_holds(jpeg_folder):
    ds = EncodedImages(ImageFolder(jpeg_folder), seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_encoded)
    augment = DeviceAugment(Preprocessing(input_size=32), "cpu")
    plain = [augment(b) for b in loader]
    made = []
    counting = lambda b: made.append(b) or augment(b)
    batches = DeviceBatches(loader, counting)
    first = next(batches)
    assert len(made) == 1 and batches.prefetch() and len(made) == 2  # the second is ready early
    rest = list(batches)
    assert not batches.prefetch() and len(made) == 3
    for a, b in zip(plain, [first, *rest], strict=True):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])


def test_color_jitter_matches_torchvision_per_image():
    x = torch.rand(3, 3, 16, 16) * 255
    factors = torch.tensor([[1.0, 1.0, 1.0], [1.3, 0.7, 1.2], [0.6, 1.4, 0.0]])
    ours = _color_jitter(x.clone(), factors)
    for k in range(3):
        b, c, s = factors[k].tolist()
        ref = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[k] / 255, b), c), s) * 255
        assert (ours[k] - ref).abs().max().item() < 1e-3
    assert torch.equal(ours[0], x[0])
    assert (ours[2][0] - ours[2][1]).abs().max() < 1e-4  # saturation 0: grey


def test_in_memory_datasets_go_through_as_pixels():
    ds = EncodedImages(Synthetic(num_samples=4, size=40), color_jitter=0.4, seed=0)
    batch = collate_encoded([ds[i] for i in range(4)])
    assert [tuple(p.shape) for p in batch["payloads"]] == [(3, 40, 40)] * 4
    assert ((batch["jitter"] - 1).abs() <= 0.4 + 1e-6).all() and (batch["jitter"] != 1).all()
    out = DeviceAugment(Preprocessing(input_size=48), "cpu")(batch)
    assert out["images"].shape == (4, 3, 48, 48)


def test_training_with_device_augmentation_learns(tmp_path, monkeypatch):
    for name, color in (("red", (210, 40, 40)), ("blue", (40, 40, 210))):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(12):
            noise = np.random.default_rng(i).integers(-40, 40, (48, 60 + i, 3))
            pixels = np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / name / f"{i}.jpg")
    (tmp_path / "photos" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff nothing")
    settings = {"model": "inception_resnet_v1", "data": str(tmp_path / "photos"), "input_size": 75, "batch_size": 8,
                "workers": 0, "progress": False, "plots": False, "recipe": "finetune", "from_scratch": True, "decode": "device",
                "epochs": 4, "lr": 0.01}  # fmt: skip
    validated = []  # validation goes through the device too: DeviceViews, one centre crop per image
    call = DeviceViews.__call__
    monkeypatch.setattr(DeviceViews, "__call__", lambda self, b: validated.append(self.crops) or call(self, b))
    s = train(**settings, out_dir=str(tmp_path / "run"))
    assert s["status"] == "finished" and s["val_top1"] == 100.0 and s["val_loss"] < 0.1  # chance: 50%, 0.69
    assert len(validated) >= 4 and set(validated) == {1}  # a validation batch or more per epoch
    assert s["skipped_files"] == [f"{tmp_path / 'photos' / 'red' / 'broken.jpg'}: not an image (unrecognised format)"]
    with pytest.raises(ValueError, match="decode must be one of workers, device; got 'gpu'"):
        train(**{**settings, "decode": "gpu"}, out_dir=str(tmp_path / "bad"))


def test_a_device_augmented_run_does_not_depend_on_the_worker_count(jpeg_folder, tmp_path):
    settings = {"model": "inception_resnet_v1", "data": str(jpeg_folder), "input_size": 75, "batch_size": 4,
                "progress": False, "plots": False, "recipe": "finetune", "from_scratch": True, "decode": "device", "max_steps": 2}  # fmt: skip
    runs = [train(**settings, workers=w, out_dir=str(tmp_path / f"w{w}")) for w in (0, 2)]
    assert runs[0]["steps"] == runs[1]["steps"] == 2  # 4 training images: a batch per epoch, two epochs
    assert runs[0]["classes"] == ["a", "b"]
    assert runs[0]["weights_digest"] == runs[1]["weights_digest"]
