"""The native bundle: round trip, metadata, strict checks, backbone-only loading, labels."""

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import inceptionv4 as iv
from inceptionv4.weights import class_names, imagenet1k, read_bundle_metadata

from .conftest import randomize_bn


@pytest.fixture(scope="module")
def v1_bundle(tmp_path_factory):
    torch.manual_seed(0)
    model = randomize_bn(iv.create_model("inception_resnet_v1", num_classes=3, residual_scale=0.25)).eval()
    path = tmp_path_factory.mktemp("w") / "v1.safetensors"
    iv.save_weights(model, path, class_names=["cat", "dog", "fox"], source="unit test", epochs=3)
    return model, path


def test_round_trip_gives_identical_outputs(v1_bundle):
    model, path = v1_bundle
    loaded = iv.load_weights(path).eval()
    x = torch.randn(2, 3, 80, 80)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.model_name == "inception_resnet_v1"
    assert loaded.class_names == ["cat", "dog", "fox"]
    assert loaded.stage_a[0].scale == 0.25  # build options travel with the weights


def test_metadata(v1_bundle):
    _, path = v1_bundle
    meta = read_bundle_metadata(path)
    assert meta["architecture"] == "inception_resnet_v1" and meta["num_classes"] == 3
    assert meta["preprocessing"] == {
        "input_size": [3, 299, 299],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bicubic",
        "crop_pct": 0.875,
    }
    assert meta["source"] == "unit test" and meta["meta"] == {"epochs": 3}


def test_load_into_existing_model(v1_bundle):
    model, path = v1_bundle
    target = iv.create_model("inception_resnet_v1", num_classes=3, residual_scale=0.25)
    iv.load_weights(path, model=target)
    assert torch.equal(target.head.fc.weight, model.head.fc.weight)


def test_other_architecture_is_refused_naming_both(v1_bundle):
    _, path = v1_bundle
    with pytest.raises(ValueError, match="holds inception_resnet_v1 weights, but the model is inception_v4"):
        iv.load_weights(path, model=iv.create_model("inception_v4", num_classes=3))


def test_other_class_count_needs_backbone_only(v1_bundle):
    model, path = v1_bundle
    target = iv.create_model("inception_resnet_v1", num_classes=10, residual_scale=0.25)
    with pytest.raises(ValueError, match="has 3 classes but the model has 10; pass backbone_only=True"):
        iv.load_weights(path, model=target)
    fresh_head = target.head.fc.weight.clone()
    iv.load_weights(path, model=target, backbone_only=True)
    assert torch.equal(target.stem.conv1a.conv.weight, model.stem.conv1a.conv.weight)
    assert torch.equal(target.head.fc.weight, fresh_head)


def test_pretrained_local_file_with_new_head(v1_bundle):
    model, path = v1_bundle
    tuned = iv.create_model("inception_resnet_v1", pretrained=str(path), num_classes=7, residual_scale=0.25)
    assert tuned.num_classes == 7
    assert torch.equal(tuned.stage_b[3].expand.weight, model.stage_b[3].expand.weight)
    same = iv.create_model("inception_resnet_v1", pretrained=str(path))
    assert same.num_classes == 3 and same.class_names == ["cat", "dog", "fox"]
    with pytest.raises(ValueError, match="holds inception_resnet_v1 weights, not inception_v4"):
        iv.create_model("inception_v4", pretrained=str(path))


def test_features_only_backbone_loads_a_full_bundle(v1_bundle):
    model, path = v1_bundle
    backbone = iv.create_model("inception_resnet_v1", features_only=True, out_indices=(2,))
    iv.load_weights(path, model=backbone)
    assert torch.equal(backbone.stage_a[4].expand.weight, model.stage_a[4].expand.weight)


def test_incomplete_file_is_named(tmp_path):
    model = iv.create_model("inception_v4", num_classes=2)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("stage_c.2")}
    save_file(sd, tmp_path / "partial.safetensors")
    with pytest.raises(ValueError, match=r"does not fit inception_v4: \d+ missing \(e.g. \['stage_c.2"):
        iv.load_weights(tmp_path / "partial.safetensors", model=iv.create_model("inception_v4", num_classes=2))


def test_bad_paths_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        iv.load_weights(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        iv.load_weights(junk)
    save_file({"a": torch.zeros(1)}, tmp_path / "raw.safetensors")
    with pytest.raises(
        ValueError, match=r"cannot tell which source wrote .*raw.safetensors: its names \(e.g. \['a'\]\)"
    ):
        iv.load_weights(tmp_path / "raw.safetensors")
    save_file({"stem.x": torch.zeros(1)}, tmp_path / "ours.safetensors")
    with pytest.raises(ValueError, match=r"a state dict in our names without a network name, and fits none.*--model"):
        iv.load_weights(tmp_path / "ours.safetensors")
    with pytest.raises(ValueError, match="class names for a model with"):
        iv.save_weights(iv.create_model("inception_v4", num_classes=2), tmp_path / "x.safetensors", class_names=["a"])


def test_an_unwritable_destination_names_the_file_asked_for(v1_bundle, tmp_path):
    model, _ = v1_bundle
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=r"cannot write .*file/sub/m.safetensors: "):
        iv.save_weights(model, tmp_path / "file" / "sub" / "m.safetensors")


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_saved_file_takes_the_umask_like_any_other(v1_bundle, tmp_path, umask):
    """The atomic write goes through a temp file; it must not come out private (mkstemp's 0600)."""
    model, _ = v1_bundle
    old = os.umask(umask)
    try:
        path = iv.save_weights(model, tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left


def test_a_raw_state_dict_loads_as_the_network_its_shapes_fit(tmp_path):
    """``save_file(model.state_dict())`` keeps no network name: the names and shapes give it.

    (Nor its build arguments: a raw state dict loads with the defaults, e.g. residual_scale.)
    """
    model = randomize_bn(iv.create_model("inception_resnet_v1", num_classes=3)).eval()
    raw = tmp_path / "raw.safetensors"
    save_file(model.state_dict(), raw)
    loaded = iv.load_weights(raw).eval()
    assert (loaded.model_name, loaded.num_classes) == ("inception_resnet_v1", 3)
    x = torch.randn(1, 3, 80, 80)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    damaged = dict(model.state_dict())
    del damaged["stage_a.0.branch_1x1.conv.weight"]
    save_file(damaged, raw)
    with pytest.raises(
        ValueError, match=r"does not fit inception_resnet_v1: 1 missing .*stage_a.0.branch_1x1.conv.weight"
    ):
        iv.load_weights(raw)


def test_a_bundle_named_as_another_network_is_refused(v1_bundle):
    _, path = v1_bundle
    assert iv.load_weights(path, architecture="inception_resnet_v1").model_name == "inception_resnet_v1"
    with pytest.raises(ValueError, match=r"v1.safetensors holds inception_resnet_v1 weights, not inception_v4"):
        iv.load_weights(path, architecture="inception_v4")


def test_files_that_are_not_weights_say_what_they_are(tmp_path, v1_bundle):
    from inceptionv4.weights.io import read_tensors

    cases = {
        "notes.pt": (
            b"just some text\n",
            r"notes.pt is not a weights file: neither safetensors nor a PyTorch checkpoint$",
        ),
        "photo.pth": (b"\xff\xd8\xff\xe0" + bytes(64), r"it looks like a JPEG image"),
        "model.h5.pt": (b"\x89HDF\r\n\x1a\n" + bytes(64), r"HDF5 \(Keras\) file: convert it first"),
        "empty.bin": (b"", r"the file is empty"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=message):
            read_tensors(tmp_path / name)
    # What is inside decides, not the suffix: a safetensors bundle saved as .pt still loads.
    model, path = v1_bundle
    renamed = tmp_path / "v1.pt"
    renamed.write_bytes(path.read_bytes())
    tensors, meta = read_tensors(renamed)
    assert meta["architecture"] == "inception_resnet_v1"
    assert torch.equal(tensors["head.fc.weight"], model.state_dict()["head.fc.weight"])


def test_imagenet_labels_ship_with_the_package():
    classes = imagenet1k()
    assert len(classes) == 1000 and len({c.wnid for c in classes}) == 1000
    assert [c.wnid for c in classes] == sorted(c.wnid for c in classes)
    assert (classes[0].wnid, classes[0].name) == ("n01440764", "tench")
    assert classes[207].name == "golden retriever"
    assert class_names("imagenet-1k")[-1] == "toilet tissue"
    with pytest.raises(ValueError, match="shipped label sets: imagenet-1k"):
        class_names("imagenet-21k")


def test_a_label_set_of_another_size_is_refused_naming_both(tmp_path):
    digits = iv.create_model("inception_resnet_v1", num_classes=10)
    with pytest.raises(ValueError, match=r"label set 'imagenet-1k' names 1000 classes, but the model has 10"):
        iv.save_weights(digits, tmp_path / "d.safetensors", label_set="imagenet-1k")
    with pytest.raises(ValueError, match="unknown label set 'imagenet-21k'"):
        iv.save_weights(digits, tmp_path / "d.safetensors", label_set="imagenet-21k")
    assert not (tmp_path / "d.safetensors").exists()  # nothing written
    with pytest.raises(ValueError, match="3 class names for a model with 10 classes"):
        iv.save_weights(digits, tmp_path / "d.safetensors", class_names=["a", "b", "c"])


def test_the_same_weights_give_the_same_bytes_in_any_process(tmp_path):
    """safetensors writes metadata in hash-map order, different in each process: identical runs
    gave model.safetensors files of different SHA-256. The header is now written sorted."""
    import hashlib
    import subprocess
    import sys

    script = ("import sys, torch, inceptionv4 as iv; torch.manual_seed(0); "
              "m = iv.create_model('inception_resnet_v1', num_classes=3); "
              "iv.save_weights(m, sys.argv[1], class_names=['a', 'b', 'c'], source='test')")  # fmt: skip
    digests = set()
    for i in range(3):
        out = tmp_path / f"{i}.safetensors"
        subprocess.run([sys.executable, "-c", script, str(out)], check=True, env={**os.environ, "PYTHONHASHSEED": str(i)})
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1
    data = (tmp_path / "0.safetensors").read_bytes()
    keys = list(json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])["__metadata__"])
    assert keys == sorted(keys) and "class_names" in keys
    assert iv.load_weights(tmp_path / "0.safetensors").class_names == ["a", "b", "c"]


def _with_metadata(good: Path, out: Path, drop: str | None = None, **changes: str) -> Path:
    """A copy of the bundle ``good`` with its metadata edited (tensors untouched)."""
    data = good.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = header["__metadata__"]
    if drop:
        meta.pop(drop)
    meta.update(changes)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    out.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n :])
    return out


DAMAGED_METADATA = {  # edit -> the field and reason named
    "no num_classes": ({"drop": "num_classes"}, "'num_classes' is missing"),
    "num_classes text": ({"num_classes": "three"}, "'num_classes' is 'three', not a count"),
    "no mean": ({"preprocessing": json.dumps({"input_size": [3, 75, 75]})}, "'preprocessing' lacks mean, std,"),
    "format_version 9": ({"format_version": "9"}, "'format_version' is '9'; this version reads '1'"),
    "interpolation nope": ({"preprocessing": json.dumps({"input_size": [3, 75, 75], "mean": [0.5] * 3, "std": [0.5] * 3,
                           "interpolation": "nope", "crop_pct": 0.875})}, "interpolation 'nope' is not one of"),  # fmt: skip
    "std 0": ({"preprocessing": json.dumps({"input_size": [3, 75, 75], "mean": [0.5] * 3, "std": [0, 0.5, 0.5],
              "interpolation": "bicubic", "crop_pct": 0.875})}, "std [0, 0.5, 0.5] must be positive"),  # fmt: skip
    "bad JSON": ({"build_kwargs": "{not json"}, "'build_kwargs' is not valid JSON"),
    "unknown network": ({"architecture": "resnet50"}, "'architecture' names 'resnet50'"),
    "names short": ({"class_names": json.dumps(["a"])}, "'class_names' has 1 names for 3 classes"),
    "pool": ({"global_pool": "weird"}, "'global_pool' is 'weird'"),
}


@pytest.mark.parametrize("case", list(DAMAGED_METADATA))
def test_damaged_or_lying_metadata_names_the_file_and_the_field(case, tmp_path, capsys):
    """KeyError: 'num_classes', KeyError: 'mean' tracebacks, and an unknown format_version,
    interpolation "nope" or std 0 accepted: each is now one error naming the file and the field,
    in load_weights and in every command that takes --weights."""
    from inceptionv4.cli import main
    from inceptionv4.weights import BundleError

    torch.manual_seed(0)
    good = iv.save_weights(iv.create_model("inception_resnet_v1", num_classes=3), tmp_path / "good.safetensors",
                           class_names=["a", "b", "c"])  # fmt: skip
    edit, reason = DAMAGED_METADATA[case]
    bad = _with_metadata(good, tmp_path / "bad.safetensors", **edit)
    with pytest.raises(BundleError) as err:
        iv.load_weights(bad)
    assert str(err.value).startswith(f"{bad}: metadata field ") and reason in str(err.value), str(err.value)
    image = tmp_path / "x.png"
    Image.new("RGB", (80, 80)).save(image)
    for argv in (["info", str(bad)], ["predict", "--weights", str(bad), str(image)],
                 ["convert", str(bad), str(tmp_path / "out.safetensors")]):  # fmt: skip
        assert main(argv) == 2, argv
        said = capsys.readouterr().err.strip()
        assert said.count("\n") == 0 and str(bad) in said and reason in said, (argv, said)


def test_a_pytorch_zip_named_safetensors_is_read_as_what_it_is(tmp_path, capsys):
    from inceptionv4.cli import main

    torch.manual_seed(0)
    model = iv.create_model("inception_resnet_v1", num_classes=3)
    torch.save(model.state_dict(), tmp_path / "zip.safetensors")
    loaded = iv.load_weights(tmp_path / "zip.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert main(["info", str(tmp_path / "zip.safetensors")]) == 2
    assert "is a PyTorch checkpoint, not a safetensors bundle" in capsys.readouterr().err


def test_weights_loaded_into_the_wrong_network_say_which_network_they_look_like(tmp_path, capsys):
    """A checkpoint of one network given with another --model names the network its keys and shapes
    belong to before the list of keys (issue 33 item 10)."""
    import torch

    from inceptionv4.cli import main

    torch.save(iv.create_model("inception_resnet_v1", num_classes=10).state_dict(), tmp_path / "irv1.pth")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (80, 80)).save(image)
    assert main(["predict", "--weights", str(tmp_path / "irv1.pth"), "--model", "inception_v4", str(image)]) == 2
    err = capsys.readouterr().err
    assert (f"{tmp_path / 'irv1.pth'} does not fit inception_v4: these weights look like inception_resnet_v1: give "
            f"--model inception_resnet_v1, or no --model. 522 missing") in err  # fmt: skip
    with pytest.raises(ValueError, match="does not fit inception_resnet_v2: these weights look like inception_resnet_v1"):
        iv.create_model("inception_resnet_v2", pretrained=str(tmp_path / "irv1.pth"))
