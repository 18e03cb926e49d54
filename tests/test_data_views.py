"""The crop protocols' geometry: view counts, pixels bit-identical to PIL's cropping, where the 144 crops are cut."""


import numpy as np
import pytest
import torch
from PIL import Image

from inceptionv4.data import Preprocessing
from inceptionv4.data.views import crop_views, cut_views, protocol_pieces, protocol_pixels, scales_for


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
