import json
import os
import subprocess
import sys

import pytest

from inceptionv4.cli import main


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "inception_v4" in out and "42.7M" in out and "inception_resnet_v2_paper" in out


def test_info_json(capsys):
    assert main(["info", "inception_resnet_v2", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["num_params"] == card["params_recounted"] == 55_843_464
    assert [f["reduction"] for f in card["feature_info"]] == [2, 4, 8, 16, 32]
    shapes = {s["module"]: s["shape"] for s in card["stage_shapes_299"]}
    assert shapes["stem.mixed_5b"] == [320, 35, 35] and shapes["reduction_b"] == [2080, 8, 8]
    assert shapes["post"] == [1536, 8, 8]


def test_unknown_model_is_one_clear_line():
    proc = subprocess.run(
        [sys.executable, "-m", "inceptionv4", "info", "inception_v9"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("inceptionv4 info: error: unknown model 'inception_v9'; known models:")
    assert "Traceback" not in proc.stderr


def test_convert_timm_checkpoint_to_bundle(tmp_path, capsys, monkeypatch):
    import timm
    import torch
    from safetensors.torch import save_file

    import inceptionv4 as iv

    ref = timm.create_model("inception_v4").eval()
    save_file(ref.state_dict(), tmp_path / "model.safetensors")  # what the hub serves
    out = tmp_path / "inception_v4.safetensors"
    assert (
        main(["convert", "--from", "timm", "--model", "inception_v4", str(tmp_path / "model.safetensors"), str(out)])
        == 0
    )
    assert "1000 classes" in capsys.readouterr().out
    told = tmp_path / "told.safetensors"  # no --model: the one network its names and shapes fit
    assert main(["convert", str(tmp_path / "model.safetensors"), str(told)]) == 0
    assert f"wrote {told}: inception_v4, 1000 classes" in capsys.readouterr().out
    model = iv.load_weights(out).eval()
    assert model.label_set == "imagenet-1k"
    x = torch.randn(1, 3, 120, 120)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() < 1e-4
    # the raw file loads too, its network told by its shapes, and converted once per candidate only
    from inceptionv4.weights import convert

    calls = []
    real = convert.convert_state_dict
    monkeypatch.setattr(convert, "convert_state_dict", lambda *a, **k: calls.append(k["model"]) or real(*a, **k))
    raw = iv.load_weights(tmp_path / "model.safetensors").eval()
    assert raw.model_name == "inception_v4" and sorted(calls) == sorted(convert.TABLES["timm"])
    with torch.no_grad():
        assert (raw(x) - ref(x)).abs().max() < 1e-4


def test_convert_errors_are_one_line(tmp_path, capsys):
    assert (
        main(["convert", "--model", "inception_v4", str(tmp_path / "missing.pth"), str(tmp_path / "o.safetensors")])
        == 2
    )
    err = capsys.readouterr().err
    assert "no such weights file" in err and "Released checkpoints: timm: the Hugging Face hub" in err
    assert main(["convert", "--from", "keras", str(tmp_path / "m.h5"), str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "keras.applications.InceptionResNetV2" in err and "timm:" not in err and len(err.splitlines()) == 1


def test_unwritable_outputs_are_one_line(tmp_path, capsys):
    """An OSError (here: a folder wanted where a file is) is named, not raised as a traceback."""
    import inceptionv4 as iv

    weights = tmp_path / "v1.safetensors"
    iv.save_weights(iv.create_model("inception_resnet_v1", num_classes=2), weights, class_names=["a", "b"])
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["export", "--weights", str(weights), str(blocker / "sub" / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("inceptionv4 export: error: ") and str(blocker) in err and len(err.splitlines()) == 1
    # eval's report is checked before the images are read: an evaluation can take hours
    evaluate = ["eval", "--weights", str(weights), "--data", str(tmp_path / "no-such-folder"), "--device", "cpu"]
    assert main([*evaluate, "--report", str(blocker / "r.json")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {blocker / 'r.json'}" in err and "dataset" not in err
    assert main([*evaluate, "--report", str(tmp_path)]) == 2
    assert f"{tmp_path} is a folder: give a file name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "v1.safetensors"]  # nothing left behind


def test_every_train_flag_says_what_it_does(capsys):
    import dataclasses

    from inceptionv4.train import TrainConfig
    from inceptionv4.train.config import FIELD_HELP

    assert set(FIELD_HELP) == {f.name for f in dataclasses.fields(TrainConfig)}
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--batch-size N global batch: across processes and accumulation steps (default: 32)" in text
    assert "--overwrite, --no-overwrite replace a run already checkpointed in out_dir" in text


@pytest.mark.parametrize(("port", "message"), [("99999", "port must be an integer of 0-65535; got 99999"), ("http", "not an integer: 'http'")])
def test_a_bad_port_is_refused_while_parsing(port, message, capsys):
    """Before any weights are read: the file named does not even exist."""
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--weights", "missing.safetensors", "--port", port])
    assert stop.value.code == 2
    assert f"argument --port: {message}" in capsys.readouterr().err


def test_help_and_list_leave_the_data_pipeline_unloaded():
    """torchvision (and through it torch._dynamo) costs ~1.4 s to import; commands that read no
    images must not pay it (inceptionv4.train loads its names on first use)."""
    code = (
        "import sys\n"
        "from inceptionv4.cli import build_parser, main\n"
        "build_parser()\n"
        "main(['list'])\n"
        "print(sorted(m for m in ('torchvision', 'inceptionv4.train.trainer', 'inceptionv4.data') if m in sys.modules))\n"
        "from inceptionv4.train import train, TrainConfig\n"
        "print(train.__module__, TrainConfig.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == "[]"
    assert lines[-1] == "inceptionv4.train.trainer inceptionv4.train.config"
    from inceptionv4 import train

    assert set(train.__all__) == set(train._WHERE)  # every exported name loads, from where it is defined
    assert all(
        getattr(train, name).__module__.startswith("inceptionv4.train.")
        for name in train.__all__
        if name != "RECIPES"
    )


def test_info_describes_a_weights_file(tmp_path, capsys):
    import hashlib

    import inceptionv4 as iv

    model = iv.create_model("inception_resnet_v1", num_classes=3)
    path = tmp_path / "m.safetensors"
    iv.save_weights(model, path, class_names=["red", "green", "blue"], source="unit test", epochs=2)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert "inception_resnet_v1 weights bundle" in out and f"sha256 {digest}" in out
    assert "3 classes: red, green, blue" in out and "source: unit test" in out and "preprocessing: 299 px, mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5), bicubic, crop 0.875" in out
    assert "  built with: in_chans 3, drop_rate 0.2, residual_scale (the network default)\n" in out  # not a dict
    assert main(["info", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["sha256"] == digest and d["architecture"] == "inception_resnet_v1" and d["meta"] == {"epochs": 2}
    assert main(["info", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such weights file" in capsys.readouterr().err
    assert main(["info", "inception_v5"]) == 2
    assert "unknown model 'inception_v5'" in capsys.readouterr().err


def test_help_shows_every_option_with_its_default_and_the_version(capsys):
    import argparse

    from inceptionv4 import __version__
    from inceptionv4.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = [(name, a.dest) for name, p in commands.items() for a in p._actions if not a.help]
    assert not missing, missing
    text = commands["predict"].format_help()
    assert "classes shown per image (default: 5)" in text and "(default: auto)" in text
    assert "(required)" in commands["quantize"].format_help()  # --weights, --calibrate
    assert "``" not in parser.format_help() and "Inception-ResNet-v2" in parser.format_help()
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"inceptionv4 {__version__}"


def test_predict_prints_hostile_file_names_escaped_on_one_line(tmp_path):
    """A non-UTF-8 name aborted text-mode predict under a strict UTF-8 stdout (7 of 17 files were
    printed); a newline in a name split its line and ANSI escapes reached the terminal."""
    import os
    import subprocess
    import sys

    import inceptionv4 as iv
    from PIL import Image

    weights = tmp_path / "w.safetensors"
    model = iv.create_model("inception_resnet_v1", num_classes=2)
    model.pretrained_cfg = model.pretrained_cfg.at_input_size(75)
    iv.save_weights(model, weights, class_names=["a", "b"])
    folder = tmp_path / "in"
    folder.mkdir()
    names = [b"plain.png", b"bad\xff.png", b"new\nline.png", b"red\x1b[31m.png", "caf\u00e9.png".encode()]
    for name in names:
        Image.new("RGB", (80, 80), (200, 30, 30)).save(os.path.join(os.fsencode(folder), name), format="PNG")
    run = subprocess.run([sys.executable, "-m", "inceptionv4.cli", "predict", "--weights", str(weights), str(folder)],
                         capture_output=True, env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"}, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    lines = run.stdout.decode().splitlines()
    assert len(lines) == 5 and not any("\x1b" in line for line in lines)
    shown = sorted(line.split(": ")[0].rsplit("/", 1)[1] for line in lines)
    assert shown == sorted(["plain.png", "bad\\xff.png", "new\\nline.png", "red\\x1b[31m.png", "caf\u00e9.png"])


@pytest.mark.parametrize("argv, message", [
    ("serve --weights w --max-wait-ms inf", "argument --max-wait-ms: must be a finite number, got 'inf'"),
    ("serve --weights w --max-body-mb -1", "argument --max-body-mb: max_body_bytes must be > 0 and <= 4096 (MB); got -1048576"),
    ("serve --weights w --max-body-mb nan", "argument --max-body-mb: must be a finite number, got 'nan'"),
    ("predict --weights w --workers 100000 a.png", "argument --workers: must be >= 0 and <= 64, got 100000"),
    ("export --model inception_v4 --input-size -5 x.onnx", "argument --input-size: must be >= 75 and <= 1024, got -5"),
    ("train --lr inf", "argument --lr: must be a finite number, got 'inf'"),
    ("train --hflip 2", "argument --hflip: hflip must be a probability in [0, 1]; got 2.0"),
    ("serve --weights w --queue-size 1.5", "argument --queue-size: not an integer: '1.5'"),
])  # fmt: skip
def test_numbers_are_checked_while_parsing(argv, message, capsys):
    """`serve --max-wait-ms inf` hung at start-up (the batcher thread died of an OverflowError),
    --max-body-mb -1 and nan were taken, predict --workers 100000 tried to start them, and
    export --input-size -5 gave a PyTorch internal message."""
    from inceptionv4.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv.split())
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_serve_settings_refuse_what_would_hang_or_overflow():
    from inceptionv4.serve import ServeSettings

    for bad, message in (({"max_wait_ms": float("inf")}, "max_wait_ms must be a finite number >= 0"),
                         ({"body_timeout_s": float("nan")}, "body_timeout_s must be a finite number > 0"),
                         ({"queue_size": 2.5}, "queue_size must be an integer")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            ServeSettings(**bad)


def test_misleading_errors_now_say_what_is_wrong(tmp_path, capsys):
    from PIL import Image

    import inceptionv4 as iv
    from inceptionv4.cli import main

    weights = tmp_path / "w.safetensors"
    iv.save_weights(iv.create_model("inception_resnet_v1", num_classes=2), weights, class_names=["a", "b"])
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "empty.yaml").write_text("")
    Image.new("RGB", (8, 8)).save(tmp_path / "pic.jpg")
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    cases = {  # was: max() arg is an empty sequence; a codec error; a silent default run; a temp file's name;
        # `File exists`; unknown model None
        f"eval --weights {weights} --list {tmp_path}/empty.txt": "empty.txt lists no images",
        f"train --config {tmp_path}/pic.jpg": "config file " + str(tmp_path / "pic.jpg") + " is not text",
        f"train --config {tmp_path}/empty.yaml": "empty.yaml is empty: give it settings",
        f"export --weights {weights} {tmp_path}/folder": f"cannot write {tmp_path}/folder: it is a folder",
        f"convert {weights} {tmp_path}/folder": f"cannot write {tmp_path}/folder: it is a folder",
        f"eval --weights {weights} --data {tmp_path} --report {tmp_path}/file.txt/r.json":
            f"{tmp_path}/file.txt is a file, not a folder",
        f"export {tmp_path}/x.onnx": "say what to export: --weights FILE",
    }  # fmt: skip
    for argv, message in cases.items():
        assert main(argv.split()) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0 and ".tmp" not in err, (argv, err)


def test_an_unknown_flag_gets_the_name_this_command_uses_or_the_closest(capsys):
    """train loads weights with --pretrained and the other commands with --weights: either, given to
    the other kind of command, is a usage error that names the right flag; a misspelt flag gets
    "did you mean" (issue 33, item 4)."""
    from inceptionv4.cli import main

    for argv, words in (
        (["train", "--weights", "w.safetensors"], "inceptionv4 train: error: unrecognized arguments: --weights "
                                                  "w.safetensors (--weights: this command calls it --pretrained)"),
        (["predict", "--weights", "w", "--pretrained=w", "a.jpg"], "inceptionv4 predict: error: unrecognized "
                                                                   "arguments: --pretrained=w (--pretrained: this command calls it --weights)"),
        (["predict", "--weights", "w", "--precison", "bf16", "a.jpg"], "(--precison: did you mean --precision?)"),
        (["eval", "--weights", "w", "--data", "d", "--nonsense"], "unrecognized arguments: --nonsense\n"),
    ):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and words in err and "Traceback" not in err, err


def test_outputs_never_replace_what_is_not_a_regular_file_and_never_an_input(tmp_path, capsys):
    """`convert W /dev/null` as root left a regular file where /dev/null was (issue 34): a FIFO, a
    device node (made here, as root, never in /dev) or a folder as an output is refused with one
    line and left as it was; so are an output that is its input, an empty out-dir, a shard prefix
    that leaves the output folder and an empty serve host."""
    import stat

    import inceptionv4 as iv
    from inceptionv4.cli import main

    weights = tmp_path / "w.safetensors"
    model = iv.create_model("inception_resnet_v1", num_classes=2)
    iv.save_weights(model, weights, class_names=["a", "b"])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    targets = {fifo: "a FIFO"}
    if os.geteuid() == 0:
        node = tmp_path / "null"
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        targets[node] = "a character device"
    for target, kind in targets.items():
        for argv in (["convert", str(weights), str(target)], ["eval", "--weights", str(weights), "--data", str(tmp_path),
                                                             "--report", str(target)]):  # fmt: skip
            assert main(argv) == 2
            assert f"cannot write {target}: it is {kind}, not a regular file" in capsys.readouterr().err
            assert not stat.S_ISREG(os.stat(target).st_mode)
        assert not (tmp_path / f"{target.name}.confusion.png").exists()
    assert main(["convert", str(weights), str(weights)]) == 2
    assert "is also the input: write the output to another path" in capsys.readouterr().err
    link = tmp_path / "link.safetensors"
    link.symlink_to(weights)
    assert main(["convert", str(link), str(weights)]) == 2  # the same file by another name
    assert main(["info", str(fifo)]) == 2  # not opened: a FIFO would block forever
    assert f"{fifo} is a FIFO, not a weights file; not read" in capsys.readouterr().err
    assert main(["train", "--out-dir", "", "--max-steps", "1"]) == 2
    assert "out_dir is empty" in capsys.readouterr().err
    src = tmp_path / "src" / "a"
    src.mkdir(parents=True)
    assert main(["shard", str(tmp_path / "src"), str(tmp_path / "shards"), "--prefix", "../escape"]) == 2
    assert "prefix '../escape' must be a plain file-name stem" in capsys.readouterr().err
    assert not list(tmp_path.glob("escape*"))
    with pytest.raises(SystemExit):
        main(["serve", "--weights", str(weights), "--host", ""])
    assert "argument --host: is empty: give 127.0.0.1" in capsys.readouterr().err
