"""WebDataset shards: the writer round-trips, ranks and workers read disjoint streams that cover
the epoch, a killed run resumes to the same bytes, and bad shards get one clear error."""

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from inceptionv4.data import build_dataset
from inceptionv4.data.datasets import ImageFolder
from inceptionv4.data.shards import ShardBatches, ShardDataset, expand_shards, write_shards

PROBE = Path(__file__).parent / "scripts" / "train_probe.py"


def _folder(root: Path, per_class: int, seed: int = 0) -> Path:
    """red/green/blue class folders of noisy images, PNG and JPEG alternately."""
    rng = np.random.default_rng(seed)
    for c, colour in (("red", (220, 30, 30)), ("green", (30, 220, 30)), ("blue", (30, 30, 220))):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            px = np.clip(np.array(colour) + rng.normal(0, 25, (80, 90, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / c / (f"{i}.jpg" if i % 2 else f"{i}.png"))
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("wds")
    train, val = _folder(root / "src" / "train", 16), _folder(root / "src" / "val", 4, seed=1)
    written = write_shards(train, root / "train", shard_size=12_000)
    write_shards(val, root / "val")
    return root, written


def test_the_shard_writer_round_trips_images_labels_and_classes(shards, tmp_path):
    root, written = shards
    source = ImageFolder(root / "src" / "train")
    assert written["samples"] == len(source) == 48 and len(written["shards"]) >= 4 and not written["skipped"]
    assert written["classes"] == source.classes == ["blue", "green", "red"]
    back = ShardDataset(root / "train")
    assert back.classes == source.classes and len(back) == len(source)
    by_source = {}
    for i in range(len(back)):
        data, name, _ = back.read_sample(i)
        by_source[hashlib.sha256(data).hexdigest()] = back.samples[i][1]
        img, label = back.load(i)
        assert img.size == (90, 80) and label == back.samples[i][1]
    want = {hashlib.sha256(Path(p).read_bytes()).hexdigest(): label for p, label in source.samples}
    assert by_source == want  # every file's bytes, each with its label
    # without index.json the tars' own headers give the same samples
    bare = tmp_path / "bare"
    bare.mkdir()
    for s in written["shards"]:
        (bare / Path(s).name).write_bytes(Path(s).read_bytes())
    scanned = ShardDataset(bare)
    assert [(m.key, m.offset, m.size, label) for m, label in scanned.samples] == [
        (m.key, m.offset, m.size, label) for m, label in back.samples]  # fmt: skip
    assert scanned.classes == source.classes  # from each sample's .json
    with tarfile.open(written["shards"][0]) as tar:
        names = tar.getnames()
    assert {n.split(".", 1)[1] for n in names} >= {"cls", "json"}


def test_every_shard_file_stays_within_the_size_limit(tmp_path):
    """Counted as tar lays a file out (headers, blocks, the end padding): no shard passes the limit,
    and the shards are about as full as it allows; a sample larger than the limit gets a shard alone."""
    src = _folder(tmp_path / "src", 12)
    written = write_shards(src, tmp_path / "s", shard_size="40kB")
    sizes = [Path(p).stat().st_size for p in written["shards"]]
    assert written["samples"] == 36 and len(sizes) > 3 and max(sizes) <= 40_000
    assert sum(sizes[:-1]) / len(sizes[:-1]) > 40_000 - 2 * 23_000  # none closed far too early (a sample is ~11-23 kB)
    alone = write_shards(src, tmp_path / "t", shard_size="1kB")
    assert len(alone["shards"]) == 36 and ShardDataset(tmp_path / "t").shard_sizes == [1] * 36


def test_shard_holds_out_a_validation_part_by_class(tmp_path, capsys):
    from inceptionv4.cli import main

    src = _folder(tmp_path / "src", 10)
    assert main(["shard", str(src), str(tmp_path / "out"), "--val-fraction", "0.2"]) == 0
    out = capsys.readouterr().out
    train, val = ShardDataset(tmp_path / "out" / "train"), ShardDataset(tmp_path / "out" / "val")
    assert (len(train), len(val)) == (24, 6) and train.classes == val.classes == ["blue", "green", "red"]
    assert sorted(label for _, label in val.samples) == [0, 0, 1, 1, 2, 2]  # 2 of each class's 10
    images = lambda ds: {hashlib.sha256(ds.read_sample(i)[0]).hexdigest() for i in range(len(ds))}  # noqa: E731
    assert len(images(train) | images(val)) == 30  # every image once, in one part
    assert "wrote 24 train samples" in out and "wrote 6 val samples" in out
    assert f"--val-data '{tmp_path / 'out' / 'val'}/shard-{{000000..000000}}.tar'" in out


def test_a_pattern_names_its_shards_and_matching_nothing_is_one_error(shards):
    root, written = shards
    n = len(written["shards"])
    pattern = f"{root}/train/shard-{{000000..{n - 1:06d}}}.tar"
    assert [str(p) for p in expand_shards(pattern)] == written["shards"]
    assert len(expand_shards(f"{root}/train/shard-00000[01].tar")) == 2
    with pytest.raises(ValueError, match=r"no shard matches '.*/nothing-\*\.tar'"):
        build_dataset("wds", "train", root=f"{root}/nothing-*.tar")
    with pytest.raises(ValueError, match=r"1 of \d+ shards are missing"):
        expand_shards(f"{root}/train/shard-{{000000..{n:06d}}}.tar")


def _rank_main(rank: int, port: int, pattern: str, out: str) -> None:
    """One of 2 gloo processes: what its rank reads in one epoch, gathered to rank 0."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    ds = ShardDataset(pattern)
    batches = ShardBatches(ds, 8, seed=3, epoch=1, accum=1, world=SimpleNamespace(rank=rank, size=2), workers=2,
                           buffer=5)  # fmt: skip
    mine = [list(b) for b in batches]
    gathered: list = [None, None]
    dist.all_gather_object(gathered, mine)
    if rank == 0:
        Path(out).write_text(json.dumps(gathered))
    dist.destroy_process_group()


def test_two_gloo_processes_over_four_shards_read_disjoint_samples_covering_the_epoch(tmp_path):
    src = _folder(tmp_path / "src", 8)  # 24 images -> 4 shards of 6
    written = write_shards(src, tmp_path / "s", shard_size=10**9)
    assert len(written["shards"]) == 1
    # four equal shards by hand: the writer's order split in four tars
    shards = tmp_path / "four"
    shards.mkdir()
    members = []
    with tarfile.open(written["shards"][0]) as tar:
        for info in tar:
            members.append((info, tar.extractfile(info).read()))
    per = len(members) // 4
    for k in range(4):
        with tarfile.open(shards / f"part-{k:06d}.tar", "w") as tar:
            for info, data in members[k * per : (k + 1) * per]:
                tar.addfile(info, io.BytesIO(data))
    ds = ShardDataset(f"{shards}/part-{{000000..000003}}.tar")
    assert ds.shard_sizes == [6, 6, 6, 6]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "seen.json"
    torch.multiprocessing.start_processes(_rank_main, args=(port, f"{shards}/part-{{000000..000003}}.tar", str(out)),
                                          nprocs=2, start_method="spawn")  # fmt: skip
    rank0, rank1 = json.loads(out.read_text())
    a, b = [i for batch in rank0 for i in batch], [i for batch in rank1 for i in batch]
    assert len(rank0) == len(rank1) == 24 // 8  # the same number of steps on both ranks
    assert not set(a) & set(b) and sorted(a + b) == list(range(24))  # disjoint, and the whole epoch
    shard_of = [m.shard for m, _ in ds.samples]
    assert not {shard_of[i] for i in a} & {shard_of[i] for i in b}  # shards are split by rank
    # within a rank, micro-batch k comes from the stream of loader worker k % 2: its own shard
    first, second = ({shard_of[i] for i in batch} for batch in rank0[:2])
    assert len(first) == len(second) == 1 and first != second


def test_a_resumed_stream_lands_on_the_same_sample():
    ds = type("D", (), {"shard_sizes": [7, 5, 9, 3], "__len__": lambda self: 24})()
    world = SimpleNamespace(rank=0, size=1)
    full = list(ShardBatches(ds, 4, seed=1, epoch=2, accum=2, world=world, workers=3, buffer=4))
    later = list(ShardBatches(ds, 4, seed=1, epoch=2, accum=2, world=world, workers=3, buffer=4, start_step=2))
    assert later == full[4:] and len(full) == 24 // 4 * 2
    other = list(ShardBatches(ds, 4, seed=1, epoch=3, accum=2, world=world, workers=3, buffer=4))
    assert other != full and sorted(sum(other, [])) == sorted(sum(full, [])) == list(range(24))


def _probe(out_dir, *settings, env=None, wait=True):
    cmd = [sys.executable, str(PROBE), str(out_dir), *[f"{k}={json.dumps(v)}" for k, v in settings]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})  # fmt: skip
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return next(json.loads(line[8:]) for line in out.splitlines() if line.startswith("SUMMARY "))


def test_kill_9_during_a_webdataset_run_then_resume_gives_the_same_weights(shards, tmp_path):
    root, written = shards
    common = [("dataset", "wds"), ("data", f"{root}/train"), ("val_data", f"{root}/val"), ("batch_size", 8),
              ("max_steps", 5), ("save_every", 1), ("deterministic", True), ("workers", 2), ("shuffle_buffer", 10),
              ("lr", 0.05), ("warmup_epochs", 0)]  # fmt: skip
    reference = _probe(tmp_path / "ref", *common)
    proc = _probe(tmp_path / "killed", *common, env={"PROBE_KILL": "checkpoint:3"}, wait=False)
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    resumed = _probe(tmp_path / "killed", *common, ("resume", True))
    assert resumed["resumed_from"].endswith("step-00000002.pt") and resumed["steps"] == 5
    assert resumed["weights_digest"] == reference["weights_digest"]
    digest = [hashlib.sha256((tmp_path / d / "model.safetensors").read_bytes()).hexdigest() for d in ("ref", "killed")]
    assert digest[0] == digest[1]


def test_a_corrupt_member_is_skipped_and_counted_and_a_damaged_tar_is_read_to_the_damage(shards, tmp_path, caplog):
    from inceptionv4.train import train

    root, written = shards
    broken = tmp_path / "broken"
    broken.mkdir()
    for s in written["shards"]:
        (broken / Path(s).name).write_bytes(Path(s).read_bytes())
    ds = ShardDataset(root / "train")
    victim = ds.samples[3][0]
    path = broken / Path(written["shards"][victim.shard]).name
    data = bytearray(path.read_bytes())
    data[victim.offset : victim.offset + victim.size] = b"\x00" * victim.size  # the image's bytes zeroed
    path.write_bytes(bytes(data))
    (broken / "index.json").write_bytes((root / "train" / "index.json").read_bytes())
    summary = train(model="inception_resnet_v1", dataset="wds", data=str(broken), val_data=str(root / "val"),
                    input_size=75, batch_size=8, epochs=1, workers=0, progress=False, plots=False, recipe="finetune", from_scratch=True,
                    out_dir=str(tmp_path / "run"))  # fmt: skip
    named = ShardDataset(broken).name_of(3)
    assert summary["status"] == "finished" and [s.split(": ")[0] for s in summary["skipped_files"]] == [named]
    # a tar cut short: the samples before the cut are read, the shard named once
    one = write_shards(root / "src" / "train", tmp_path / "one", shard_size=10**9)["shards"][0]
    cut = tmp_path / "cut"
    cut.mkdir()
    whole = Path(one).read_bytes()
    (cut / "shard-000000.tar").write_bytes(whole[: len(whole) // 2])
    caplog.clear()
    with caplog.at_level("WARNING"):
        part = ShardDataset(cut)
    assert 10 < len(part) < 48
    assert caplog.text.count("shard-000000.tar is damaged after") == 1


def test_the_shard_command_takes_a_folder_or_a_list_file_and_trains_decoded_on_the_device(tmp_path, capsys):
    from inceptionv4.cli import main
    from inceptionv4.train import train

    src = _folder(tmp_path / "src", 6)
    assert main(["shard", str(src), str(tmp_path / "a"), "--shard-size", "40kB"]) == 0
    out = capsys.readouterr().out
    assert "wrote 18 samples of 3 classes in" in out and "--dataset wds --data '" in out
    pattern = out.split("--data '")[1].split("'")[0]
    assert len(expand_shards(pattern)) == len(list((tmp_path / "a").glob("*.tar"))) > 1
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p} {c}\n" for c in ("blue", "red") for p in sorted((src / c).iterdir())))
    assert main(["shard", str(listing), str(tmp_path / "b")]) == 0
    assert ShardDataset(tmp_path / "b").classes == ["blue", "red"] and len(ShardDataset(tmp_path / "b")) == 12
    assert main(["shard", str(src), str(tmp_path / "a")]) == 2  # shards there already: refused, nothing replaced
    assert "already holds shard-*.tar shards" in capsys.readouterr().err
    summary = train(model="inception_resnet_v1", dataset="wds", data=pattern, val_data=str(tmp_path / "b"),
                    input_size=75, batch_size=6, max_steps=2, workers=1, decode="device", progress=False,
                    plots=False, recipe="finetune", from_scratch=True, out_dir=str(tmp_path / "run"))  # fmt: skip
    assert summary["status"] == "finished" and summary["steps"] == 2 and summary["val_images"] == 12
    val = ShardDataset(tmp_path / "b", classes=["blue", "green", "red"])  # its red is the training set's red
    assert sorted({label for _, label in val.samples}) == [0, 2]


def test_a_cls_label_that_is_not_a_class_index_is_one_error(tmp_path):
    """A .cls of 999999999 made a class list that long (issue 34)."""
    import webdataset as wds

    png = io.BytesIO()
    Image.new("RGB", (80, 80)).save(png, "PNG")
    with wds.TarWriter(str(tmp_path / "s-000000.tar")) as sink:
        for key, label in (("a", b"0"), ("b", b"999999999")):
            sink.write({"__key__": key, "png": png.getvalue(), "cls": label})
    with pytest.raises(ValueError, match=r"label 999999999 is not a class index below 100,000"):
        ShardDataset(tmp_path)


def test_shards_pickle_without_their_open_files_and_read_after(tmp_path):
    """A dataset that has read (so holds an open shard file) still pickles, as Ray sends it to its
    tasks, and the copy reads the same bytes."""
    import pickle

    from inceptionv4.data.shards import ShardDataset

    with tarfile.open(tmp_path / "s-000000.tar", "w") as tar:
        for name, data in (("a.png", b"one"), ("b.png", b"two")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ds = ShardDataset(tmp_path / "s-000000.tar", labelled=False)
    assert [label for _, label in ds.samples] == [-1, -1] and ds.read_sample(1)[0] == b"two"
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.read_sample(0)[:2] == (b"one", "s-000000.tar:a.png") and copy.read_sample(1)[0] == b"two"
    with pytest.raises(ValueError, match="hold no samples with an image and a .cls label"):
        ShardDataset(tmp_path / "s-000000.tar")
