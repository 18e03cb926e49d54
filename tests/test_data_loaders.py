"""The one batch path of inference (data/loaders.py): threads, processes and the device decoder
give the same batches, in order, with the unreadable files named; an early stop leaves nothing running."""

import threading

import pytest
import torch

from inceptionv4.data import build_dataset
from inceptionv4.data.loaders import protocol_batches
from inceptionv4.data.views import normalize_views
from inceptionv4.models.preprocessing import Preprocessing

PRE = Preprocessing(input_size=75, crop_pct=0.875)


def _collect(dataset, **options):
    images, labels, indices, skipped = [], [], [], {}
    for batch in protocol_batches(dataset, PRE, 10, torch.device("cpu"), **options):
        if batch["images"] is not None:
            x = batch["images"]
            images.append(normalize_views(x, PRE) if x.dtype == torch.uint8 else x)
        labels += batch["labels"].tolist()
        indices += [int(i) for i in batch["indices"]]
        skipped.update(zip(batch["skipped_indices"], batch["skipped"], strict=True))
    return torch.cat(images), labels, indices, skipped


def test_threads_processes_and_the_device_decoder_give_the_same_batches(jpeg_folder):
    dataset = build_dataset("folder", "val", root=jpeg_folder)
    threads = _collect(dataset, batch_size=3, threads=2)
    one = _collect(dataset, batch_size=3, threads=1)
    procs = _collect(dataset, batch_size=4, workers=2)
    device = _collect(dataset, batch_size=3, decode="device")
    assert len(dataset) == 9 and threads[2] == sorted(threads[2]) and len(threads[2]) == 7
    assert threads[0].shape == (7 * 10, 3, 75, 75)
    assert {dataset.name_of(i).rsplit("/", 1)[-1] for i in threads[3]} == {"cut.jpg", "corrupt.jpg"}
    for other in (one, procs):
        assert torch.equal(other[0], threads[0]) and other[1:] == threads[1:]
    assert device[1:3] == threads[1:3] and device[3].keys() == threads[3].keys()
    assert (device[0] - threads[0]).abs().max().item() <= 2.5 / 255 / 0.5  # within two levels (and rounding)


def test_a_subset_order_is_kept_and_an_early_stop_cancels_the_decoding(jpeg_folder):
    dataset = build_dataset("folder", "val", root=jpeg_folder)
    order = [8, 0, 4, 2]
    batches = list(protocol_batches(dataset, PRE, 1, torch.device("cpu"), batch_size=2, order=order))
    seen = [int(i) for b in batches for i in [*b["indices"], *b["skipped_indices"]]]
    assert sorted(seen) == sorted(order)
    read = [int(i) for b in batches for i in b["indices"]]
    assert read == [i for i in order if i in read] and len(read) >= 3  # the readable ones, in the order given
    batches = protocol_batches(dataset, PRE, 1, torch.device("cpu"), batch_size=1, threads=2)
    next(batches)
    batches.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("inceptionv4-decode")]


def test_bad_settings_are_refused_before_anything_is_read(jpeg_folder):
    dataset = build_dataset("folder", "val", root=jpeg_folder)
    for options, message in (({"batch_size": 0}, "batch_size and threads must be >= 1"),
                             ({"batch_size": 2, "threads": 0}, "batch_size and threads must be >= 1"),
                             ({"batch_size": 2, "decode": "gpu"}, "decode must be 'workers' or 'device'")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            next(protocol_batches(dataset, PRE, 1, torch.device("cpu"), **options))


def test_large_jpegs_are_decoded_reduced_unless_asked_not_to(tmp_path):
    """The batch path passes reduce_to to the dataset: a 1400x1050 JPEG's view is made from its
    700x525 reduced decode, and reduce_to=None makes it from the full one."""
    from PIL import Image

    from inceptionv4.data.decode import load_rgb
    from inceptionv4.data.views import decode_side, protocol_pixels

    (tmp_path / "a").mkdir()
    rng = torch.Generator().manual_seed(0)
    field = torch.randint(0, 256, (30, 40, 3), generator=rng, dtype=torch.uint8).numpy()
    Image.fromarray(field).resize((1400, 1050), Image.BICUBIC).save(tmp_path / "a" / "x.jpg", quality=90)
    dataset = build_dataset("folder", "val", root=tmp_path)
    side = decode_side(PRE, 1)
    assert side == 85  # int(75 / 0.875)
    for reduce_to, size in ((side, (175, 132)), (None, (1400, 1050))):
        (batch,) = protocol_batches(dataset, PRE, 1, torch.device("cpu"), batch_size=1, reduce_to=reduce_to)
        img = load_rgb(tmp_path / "a" / "x.jpg", reduce_to=reduce_to)
        assert img.size == size
        assert torch.equal(batch["images"], protocol_pixels(img, PRE, 1))
