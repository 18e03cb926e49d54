"""The table of released weights: every row is loadable by a converter we have, and the cards, the
hub, the convert command's hints and a hub download's stamp are read from it."""

import pytest
import torch

import inceptionv4 as iv
import inceptionv4.api
from inceptionv4.models import RELEASED_WEIGHTS, Preprocessing, released_weights
from inceptionv4.weights import HUB_WEIGHTS, read_bundle_metadata
from inceptionv4.weights.bundle import convert_file
from inceptionv4.weights.convert import SOURCES, TABLES, ORDERED_SOURCES


def test_every_row_names_a_network_a_converter_and_its_preprocessing():
    assert len({w.name for w in RELEASED_WEIGHTS}) == len(RELEASED_WEIGHTS) == 10
    for w in RELEASED_WEIGHTS:
        assert w.model in iv.list_models() and w.source in SOURCES, w
        convertible = TABLES.get(w.source, {}).keys() | set(ORDERED_SOURCES.get(w.source, ()))
        assert w.model in convertible, w  # a converter for this source reads this network
        assert isinstance(w.preprocessing, Preprocessing) and w.file and w.where, w
        assert (w.top1 is None) == (w.top5 is None) and (w.top1 is None or 75 < w.top1 < w.top5 < 100), w
        assert w.hub == w.name.startswith("timm/"), w
    assert {k: v.name for k, v in HUB_WEIGHTS.items()} == {w.name: w.name for w in RELEASED_WEIGHTS if w.hub}


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v1", "inception_resnet_v2",
                                  "inception_resnet_v2_paper"])  # fmt: skip
def test_cards_read_the_table(name):
    card, rows = iv.get_model_card(name), released_weights(name)
    assert card.weights_from == tuple(w.name for w in rows)
    imagenet = [w for w in rows if w.classes.startswith("imagenet")]
    ref = imagenet[0] if imagenet else None
    assert (card.released_top1, card.released_top5) == ((ref.top1, ref.top5) if ref else (None, None))
    assert card.preprocessing == (ref.preprocessing if ref else Preprocessing())
    assert {w.preprocessing for w in imagenet} <= {card.preprocessing}  # one preprocessing per network's ImageNet weights


def test_the_figures_of_the_table():
    """Published single-crop figures (TF-slim's README, Keras' applications table) and timm's crops."""
    by = {w.name: w for w in RELEASED_WEIGHTS}
    assert (by["timm/inception_v4.tf_in1k"].top1, by["timm/inception_resnet_v2.tf_in1k"].top1) == (80.2, 80.4)
    assert by["keras InceptionResNetV2"].top1 == 80.3
    assert iv.get_model_card("inception_resnet_v2").crop_pct == 0.8975 and iv.get_model_card("inception_v4").crop_pct == 0.875
    face = by["facenet-pytorch vggface2"].preprocessing
    assert face.input_size == 160 and face.crop_pct == 1.0 and abs(face.std[0] * 255 - 128) < 1e-9


def test_a_hub_download_is_stamped_with_its_row(tmp_path, monkeypatch):
    """create_model(pretrained=<hub id>) names the weights by their hub id and takes the row's
    preprocessing; a bundle saved from the model then carries both."""
    torch.manual_seed(0)
    model = iv.create_model("inception_v4", num_classes=3)
    model.pretrained_cfg = model.pretrained_cfg.at_input_size(96)  # what the file says is overruled
    local = iv.save_weights(model, tmp_path / "hub-file.safetensors", class_names=["a", "b", "c"], source="elsewhere")
    row = HUB_WEIGHTS["timm/inception_v4.tf_in1k"]
    monkeypatch.setattr(inceptionv4.api, "download", lambda repo_id: (str(local), HUB_WEIGHTS[repo_id]))
    got = iv.create_model("inception_v4", pretrained=row.name)
    assert got.weights_source == row.name and got.pretrained_cfg.preprocessing == row.preprocessing
    assert torch.equal(got.head.fc.weight, model.head.fc.weight)
    meta = read_bundle_metadata(iv.save_weights(got, tmp_path / "again.safetensors"))
    assert meta["source"] == row.name and meta["preprocessing"] == row.preprocessing.to_dict()
    tuned = iv.create_model("inception_v4", pretrained=row.name, num_classes=5)  # a fresh head: still these weights
    assert tuned.weights_source == row.name and tuned.num_classes == 5


def test_a_missing_file_hints_at_where_its_source_publishes(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        convert_file(tmp_path / "nope.pt", tmp_path / "out.safetensors", source="facenet")
    msg = str(err.value)
    assert "Released checkpoints: facenet: the timesler/facenet-pytorch GitHub releases: 20180402-114759-vggface2.pt, " \
           "20180408-102900-casia-webface.pt" in msg and "cadene" not in msg  # fmt: skip


def test_docs_weights_md_holds_the_table():
    from pathlib import Path

    rows = []
    for w in RELEASED_WEIGHTS:
        p = w.preprocessing
        norm = "[-1, 1]" if p.mean == p.std == (0.5,) * 3 else "(x - 127.5) / 128"
        acc = f"{w.top1} / {w.top5}" if w.top1 is not None else "-"
        rows.append(f"| `{w.name}` | `{w.model}` | `{w.file}` | `{w.source}` | {w.classes} | "
                    f"{p.input_size} px, {norm}, {p.interpolation}, crop {p.crop_pct} | {acc} |")  # fmt: skip
    doc = (Path(__file__).resolve().parents[1] / "docs" / "weights.md").read_text()
    shown = [line for line in doc.splitlines() if line.startswith("| `") and line.count("|") == 8]
    assert shown == rows


def test_a_facenet_file_loads_with_the_rows_preprocessing_as_the_docs_say(tmp_path):
    """A facenet-pytorch state dict (its releases' form) is stamped with its rows' 160 px preprocessing."""
    import re
    from pathlib import Path

    facenet = pytest.importorskip("facenet_pytorch")
    torch.save(facenet.InceptionResnetV1(classify=False).state_dict(), tmp_path / "facenet.pt")
    pre = iv.load_weights(tmp_path / "facenet.pt").pretrained_cfg.preprocessing
    assert pre == by_name("facenet-pytorch vggface2").preprocessing and pre.input_size == 160
    doc = (Path(__file__).resolve().parents[1] / "docs" / "weights.md").read_text()
    section = doc.split("## Released weights", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"facenet-pytorch `\.pt` \(its releases are plain state dicts\) loads with its embedding\s+head", section)


def by_name(name):
    return next(w for w in RELEASED_WEIGHTS if w.name == name)
