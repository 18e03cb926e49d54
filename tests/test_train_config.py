"""TrainConfig: YAML then flags, every bad setting named before a run, the recipes resolved."""

import dataclasses
import subprocess
import sys

import pytest
import yaml

from inceptionv4.train import (
    RECIPES,
    TrainConfig,
)


def test_config_layers_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": "inception_v4", "epochs": 7, "recipe": "modern"}))
    cfg = TrainConfig.from_sources(path, epochs=3, lr=None)
    assert (cfg.model, cfg.epochs, cfg.recipe) == ("inception_v4", 3, "modern")
    with pytest.raises(ValueError, match=r"unknown training settings \['epoch'\]"):
        TrainConfig.from_sources(None, epoch=3)
    with pytest.raises(ValueError, match="unknown recipe 'adam'"):
        TrainConfig.from_sources(None, recipe="adam")
    with pytest.raises(FileNotFoundError, match="no such config file"):
        TrainConfig.from_sources(tmp_path / "none.yaml")


def test_dataset_kind_follows_data_and_bad_data_is_named(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "train.txt").write_text("a.jpg 0\n")
    (tmp_path / "val.txt").write_text("b.jpg 0\n")
    assert TrainConfig.from_sources(None).dataset == "digits"
    assert TrainConfig.from_sources(None, data=str(tmp_path / "photos")).dataset == "folder"
    cfg = TrainConfig.from_sources(None, data=str(tmp_path / "train.txt"), val_data=str(tmp_path / "val.txt"))
    assert cfg.dataset == "list"
    bad = [
        ({"data": str(tmp_path / "nodir")}, FileNotFoundError, "no such data folder: .*nodir"),
        ({"dataset": "digits", "data": str(tmp_path / "photos")}, ValueError, "data .* is read only with dataset"),
        ({"dataset": "folder"}, ValueError, "dataset 'folder' needs data"),
        ({"dataset": "folder", "data": str(tmp_path / "train.txt")}, FileNotFoundError, "a file: use dataset 'list'"),
        ({"data": str(tmp_path / "train.txt")}, ValueError, "needs val_data"),
        ({"data": str(tmp_path / "train.txt"), "val_data": "nope.txt"}, FileNotFoundError, "no such validation list"),
        (
            {"data": str(tmp_path / "photos"), "val_data": "v.txt"},
            ValueError,
            "val_data is read only with dataset 'list'",
        ),
        ({"dataset": "imagenet"}, ValueError, "unknown dataset 'imagenet'"),
    ]
    for settings, error, message in bad:
        with pytest.raises(error, match=message):
            TrainConfig.from_sources(None, **settings)
    # The command line says the same, before any network is built.
    proc = subprocess.run([sys.executable, "-m", "inceptionv4", "train", "--data", str(tmp_path / "nodir")],
                          capture_output=True, text=True, check=False, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "error: no such data folder" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"lr": -0.1}, r"lr must be > 0; got -0.1"),
        ({"lr": "fast"}, r"lr must be > 0; got 'fast'"),
        ({"ema_decay": 1.5}, r"ema_decay must be in \[0, 1\)"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
        ({"hflip": 2}, r"hflip must be a probability in \[0, 1\]"),
        ({"min_crop_area": 0}, r"min_crop_area must be in \(0, 1\]"),
        ({"workers": -1}, r"workers must be an integer >= 0"),
        ({"epochs": 2.5}, r"epochs must be an integer >= 1; got 2.5"),
        ({"batch_size": "32"}, r"batch_size must be an integer >= 1; got '32'"),
        ({"max_steps": 0}, r"max_steps must be an integer >= 1, or unset"),
        ({"optimizer": "adam"}, r"unknown optimizer 'adam'; known: rmsprop_tf, sgd, adamw"),
        ({"schedule": "step"}, r"unknown schedule 'step'; known: exponential, cosine, constant"),
        ({"model": "inception_v3"}, r"unknown model 'inception_v3'; known models: "),
        ({"nan_policy": "ignore"}, r"nan_policy must be one of stop, skip; got 'ignore'"),
    ],
)
def test_every_bad_setting_is_named_before_the_run(setting, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_sources(None, **setting)


def test_edge_settings_that_are_valid_stay_valid():
    for setting in ({"clip_grad": 0}, {"ema_decay": 0.0}, {"hflip": 0}, {"max_steps": None}, {"recipe": "modern"}):
        TrainConfig.from_sources(None, **setting).validate()


def test_paper_recipe_resolves_to_section_4():
    r = TrainConfig(recipe="paper", batch_size=512).resolved()
    assert r.optimizer == "rmsprop_tf" and r.schedule == "exponential" and r.momentum == 0.9
    assert r.lr == pytest.approx(0.045 * 512 / 256)  # linear scaling from the documented batch 256
    assert (r.clip_grad, r.weight_decay, r.ema_decay) == (2.0, 4e-5, 0.9999)
    with pytest.raises(dataclasses.FrozenInstanceError):  # a run's settings do not change under it
        r.lr = 1.0
    with pytest.raises(AttributeError):  # a misspelt setting is an error where it is read, not a silent None
        r.learning_rate  # noqa: B018
    assert set(RECIPES) == {"paper", "finetune", "modern"}


def test_the_dataset_kinds_a_run_takes_are_those_build_dataset_builds():
    from inceptionv4.data import build
    from inceptionv4.train import config

    assert config.DATASET_KINDS == build.DATASET_KINDS


def test_the_finetune_recipe_without_weights_is_refused_unless_from_scratch():
    with pytest.raises(ValueError, match="give --pretrained .* or --from-scratch"):
        TrainConfig(recipe="finetune").validate()
    TrainConfig(recipe="finetune", from_scratch=True).validate()
    TrainConfig(recipe="finetune", pretrained="timm/inception_v4.tf_in1k").validate()
    with pytest.raises(ValueError, match="contradict"):
        TrainConfig(recipe="modern", from_scratch=True, pretrained="w.safetensors").validate()


def test_a_runs_own_config_yaml_can_be_given_again(tmp_path):
    """config.yaml records the momentum and the starting weights beside the settings."""
    path = tmp_path / "config.yaml"
    r = {**TrainConfig(epochs=3).resolved().as_dict(), "started_from": "random weights"}
    path.write_text(yaml.safe_dump(r))
    assert TrainConfig.from_sources(path).epochs == 3
