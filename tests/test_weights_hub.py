"""pretrained= by hub id: offline it fails at once, saying what to download and how to pass it."""

import pytest

import inceptionv4 as iv
from inceptionv4.weights import HUB_WEIGHTS, PretrainedUnavailableError


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(c, "ENDPOINT", "https://hub.invalid")  # never resolves: offline, wherever this runs


def test_offline_hub_id_fails_with_instructions(empty_hub_cache):
    with pytest.raises(PretrainedUnavailableError) as err:
        iv.create_model("inception_v4", pretrained="timm/inception_v4.tf_in1k")
    msg = str(err.value)
    assert "cannot download timm/inception_v4.tf_in1k: hub.invalid is unreachable" in msg
    assert "https://huggingface.co/timm/inception_v4.tf_in1k/resolve/main/model.safetensors" in msg
    assert "pretrained='/path/to/model.safetensors'" in msg


def test_hub_offline_variable_is_honoured(empty_hub_cache, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(PretrainedUnavailableError, match="HF_HUB_OFFLINE is set"):
        iv.create_model("inception_resnet_v2", pretrained="timm/inception_resnet_v2.tf_in1k")


def test_unknown_hub_id_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown pretrained weights 'timm/resnet50.a1_in1k'; known: timm/inception"):
        iv.create_model("inception_v4", pretrained="timm/resnet50.a1_in1k")


def test_hub_id_of_another_network():
    with pytest.raises(ValueError, match="holds inception_resnet_v2 weights, not inception_v4"):
        iv.create_model("inception_v4", pretrained="timm/inception_resnet_v2.tf_in1k")


def test_every_hub_id_names_a_model_and_a_source():
    assert len(HUB_WEIGHTS) == 3
    for repo, w in HUB_WEIGHTS.items():
        assert repo == w.name and w.model in iv.list_models() and w.source == "timm" and w.file == "model.safetensors"


def test_missing_local_file():
    with pytest.raises(FileNotFoundError, match="no such weights file: /nonexistent/w.safetensors"):
        iv.create_model("inception_v4", pretrained="/nonexistent/w.safetensors")


def test_every_weights_flag_takes_a_hub_id_with_the_same_offline_message(empty_hub_cache, tmp_path, capsys):
    from inceptionv4.cli import main

    (tmp_path / "cat").mkdir()
    image = tmp_path / "cat" / "x.png"
    image.write_bytes(b"not read: the weights fail first")
    for argv in (["predict", "--weights", "timm/inception_v4.tf_in1k", str(image)],
                 ["export", str(tmp_path / "v4.onnx"), "--weights", "timm/inception_resnet_v2.tf_in1k"],
                 ["eval", "--weights", "timm/inception_v4.tf_in1k", "--data", str(tmp_path)]):  # fmt: skip
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "cannot download timm/inception" in err and "--weights /path/to/model.safetensors" in err, err
        assert len(err.strip().splitlines()) == 1
    assert main(["predict", "--weights", "timm/inception_v5", str(image)]) == 2
    assert "timm/inception_v5 is neither a weights file here nor a known hub id" in capsys.readouterr().err
    assert main(["predict", "--weights", "timm/inception_v4.tf_in1k", "--model", "inception_resnet_v2", str(image)]) == 2
    assert "holds inception_v4 weights, not inception_resnet_v2" in capsys.readouterr().err
