"""Preprocessing: the one description of what weights expect, checked field by field, and the same
JSON in a bundle, an int8 artefact and the server's description."""

import json

import pytest

import inceptionv4 as iv
from inceptionv4.infer import open_session
from inceptionv4.models import Preprocessing
from inceptionv4.weights import read_bundle_metadata


def test_round_trip_and_the_integer_form():
    pre = Preprocessing(331, (0.4, 0.45, 0.5), (0.2, 0.25, 0.3), "bilinear", 0.9)
    d = pre.to_dict()
    assert d == {"input_size": [3, 331, 331], "mean": [0.4, 0.45, 0.5], "std": [0.2, 0.25, 0.3],
                 "interpolation": "bilinear", "crop_pct": 0.9}  # fmt: skip
    assert Preprocessing.from_dict(json.loads(json.dumps(d))) == pre
    assert Preprocessing.from_dict({**d, "input_size": 331}) == pre  # as older int8 artefacts wrote it
    assert pre.resize_size == 367 and pre.at(75).resize_size == 83 and pre.at(75).mean == pre.mean
    assert Preprocessing(mean=[1, 1, 1], std=[1, 1, 1]).mean == (1.0, 1.0, 1.0)  # lists from JSON become tuples


BAD = {
    "input_size 8": ({"input_size": 8}, "input_size 8 is not an integer side of 32-1024 pixels"),
    "input_size 2.5": ({"input_size": 299.5}, "input_size 299.5 is not an integer"),
    "input_size True": ({"input_size": True}, "input_size True is not an integer"),
    "mean of 2": ({"mean": (0.5, 0.5)}, "mean is (0.5, 0.5), not 3 finite numbers"),
    "mean nan": ({"mean": (0.5, float("nan"), 0.5)}, "mean is (0.5, nan, 0.5), not 3 finite numbers"),
    "std 0": ({"std": (0, 0.5, 0.5)}, "std [0, 0.5, 0.5] must be positive (it divides)"),
    "interpolation": ({"interpolation": "lanczos9"}, "interpolation 'lanczos9' is not one of bicubic, bilinear"),
    "crop 0": ({"crop_pct": 0}, "crop_pct 0 is not in [0.5, 1]"),
    "crop 1.5": ({"crop_pct": 1.5}, "crop_pct 1.5 is not in [0.5, 1]"),
    "input_size 4096": ({"input_size": 4096}, "input_size 4096 is not an integer side of 32-1024 pixels"),
    "crop 0.01": ({"crop_pct": 0.01}, "crop_pct 0.01 is not in [0.5, 1]"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_every_field_is_checked_naming_it(case):
    fields, reason = BAD[case]
    with pytest.raises(ValueError) as err:
        Preprocessing(**fields)
    assert str(err.value).startswith(reason), str(err.value)


def test_from_dict_names_what_is_missing_or_not_square():
    with pytest.raises(ValueError, match="^lacks mean, std, interpolation, crop_pct$"):
        Preprocessing.from_dict({"input_size": [3, 75, 75]})
    with pytest.raises(ValueError, match=r"^input_size \[3, 75, 80\] is not \(3, S, S\)"):
        Preprocessing.from_dict({**Preprocessing().to_dict(), "input_size": [3, 75, 80]})
    with pytest.raises(ValueError, match="^is not a JSON object$"):
        Preprocessing.from_dict(["not", "a", "dict"])


def test_the_card_the_bundle_and_the_session_carry_one_preprocessing(tmp_path):
    model = iv.create_model("inception_resnet_v2", num_classes=3)
    card = model.pretrained_cfg
    assert card.preprocessing == Preprocessing(crop_pct=0.8975)
    # timm's flat keys are read off the one Preprocessing
    assert (card["input_size"], card["crop_pct"], card["mean"]) == ((3, 299, 299), 0.8975, (0.5,) * 3)
    model.pretrained_cfg = card.at_input_size(96)
    path = iv.save_weights(model, tmp_path / "w.safetensors", class_names=["a", "b", "c"])
    loaded = iv.load_weights(path)
    assert loaded.pretrained_cfg.preprocessing == Preprocessing(96, crop_pct=0.8975)
    assert read_bundle_metadata(path)["preprocessing"] == loaded.pretrained_cfg.preprocessing.to_dict()
    described = open_session(loaded, backend="torch").describe()
    assert described["preprocessing"] == Preprocessing(96, crop_pct=0.8975).to_dict() and described["input_size"] == 96
