"""Every converter against its reference implementation, with random weights, offline."""

import os
import re
import sys

import numpy as np
import pytest
import torch

import inceptionv4 as iv
from inceptionv4.weights import convert_state_dict
from inceptionv4.weights.convert import SLIM_SCOPES, conv_units
from inceptionv4.weights.readers import read_keras_h5, read_tf_checkpoint

from .conftest import randomize_bn


# -- Cadene (pretrainedmodels): 1001 classes, background first --------------------------------------
@pytest.mark.parametrize("name, cls", [("inception_v4", "InceptionV4"), ("inception_resnet_v2", "InceptionResNetV2")])
def test_cadene_pretrainedmodels(name, cls):
    pytest.importorskip("pretrainedmodels")
    import importlib

    module = importlib.import_module(f"pretrainedmodels.models.{cls.lower()}")
    torch.manual_seed(0)
    ref = randomize_bn(getattr(module, cls)(num_classes=1001)).eval()
    with torch.no_grad():
        ref.last_linear.weight.mul_(20.0)
    ours = iv.create_model(name).eval()
    ours.load_state_dict(convert_state_dict(ref.state_dict(), source="cadene", model=name))  # background dropped
    x = torch.randn(1, 3, 299, 299)
    with torch.no_grad():
        expected, got = ref(x)[:, 1:], ours(x)
    assert got.shape == (1, 1000) and expected.abs().max() > 0.5
    assert (expected - got).abs().max() < 1e-4
    kept = convert_state_dict(ref.state_dict(), source="cadene", model=name, keep_background=True)
    assert kept["head.fc.weight"].shape[0] == 1001


# -- facenet-pytorch InceptionResnetV1 -----------------------------------------------------------
@pytest.mark.parametrize("classify", [False, True])
def test_facenet_embeddings_and_logits(classify):
    facenet = pytest.importorskip("facenet_pytorch")
    torch.manual_seed(0)
    ref = facenet.InceptionResnetV1(classify=classify, num_classes=10 if classify else None)
    randomize_bn(ref)
    with torch.no_grad():
        ref.last_bn.running_var.uniform_(0.5, 1.5)
        ref.last_bn.running_mean.normal_(0, 0.1)
    ref.eval()
    sd = convert_state_dict(ref.state_dict(), source="facenet", model="inception_resnet_v1")
    ours = iv.create_model("inception_resnet_v1", embedding_dim=512, num_classes=10 if classify else 0).eval()
    ours.load_state_dict(sd)
    x = torch.randn(2, 3, 160, 160)  # facenet's input size
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert got.shape == (2, 10 if classify else 512)
    assert (expected - got).abs().max() < 1e-4
    if not classify:
        assert torch.allclose(got.norm(dim=1), torch.ones(2), atol=1e-5)  # L2-normalised embeddings


# -- Keras Applications InceptionResNetV2 (Keras 3, torch backend) -------------------------------
@pytest.fixture(scope="module")
def keras_model():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras runs on {keras.backend.backend()}, the test needs its torch backend")
    keras.utils.set_random_seed(0)
    model = keras.applications.InceptionResNetV2(weights=None, classifier_activation=None)
    rng = np.random.default_rng(0)
    for w in model.weights:
        shape = tuple(w.shape)
        if "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif "moving_mean" in w.path or "beta" in w.path:
            w.assign(rng.normal(0, 0.1, shape).astype("float32"))
        elif "predictions" in w.path and "kernel" in w.path:
            w.assign(rng.normal(0, 0.3, shape).astype("float32"))
    return keras, model


@pytest.mark.parametrize("layout", ["keras3.weights.h5", "legacy.h5"])
def test_keras_inception_resnet_v2(keras_model, layout, tmp_path):
    keras, model = keras_model
    path = tmp_path / layout
    if layout == "legacy.h5":
        model.save(path)  # the legacy HDF5 layout of the released files
    else:
        model.save_weights(path)
    arrays = read_keras_h5(path)
    ours = iv.create_model("inception_resnet_v2").eval()
    ours.load_state_dict(convert_state_dict(arrays, source="keras", model="inception_resnet_v2"))
    x = np.random.default_rng(1).normal(size=(2, 299, 299, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    with torch.no_grad():
        got = ours(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    assert np.abs(expected).max() > 0.5
    assert np.abs(expected - got).max() < 1e-4


def test_keras_numbering_offset_does_not_matter(keras_model, tmp_path):
    """Files from older Keras count auto-named layers from conv2d_1, Keras 3 from conv2d."""
    _, model = keras_model
    model.save_weights(tmp_path / "w.weights.h5")
    arrays = read_keras_h5(tmp_path / "w.weights.h5")

    def shift(key: str) -> str:
        layer, var = key.rsplit("/", 1)
        m = re.fullmatch(r"(conv2d|batch_normalization)(?:_(\d+))?", layer)
        return f"{m.group(1)}_{int(m.group(2) or 0) + 1}/{var}" if m else key

    shifted = {shift(k): v for k, v in arrays.items()}
    assert "conv2d/kernel" in arrays and "conv2d/kernel" not in shifted
    a = convert_state_dict(arrays, source="keras", model="inception_resnet_v2")
    b = convert_state_dict(shifted, source="keras", model="inception_resnet_v2")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_keras_file_of_another_network_is_refused(tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.attrs["layer_names"] = [b"conv2d"]
        g = f.create_group("conv2d")
        g.attrs["weight_names"] = [b"conv2d/kernel:0"]
        g["conv2d/kernel:0"] = np.zeros((3, 3, 3, 32), "float32")
    with pytest.raises(
        ValueError, match="expected 244 convolutions and 204 batch norms of a Keras inception_resnet_v2, found 1"
    ):
        convert_state_dict(read_keras_h5(tmp_path / "x.h5"), source="keras", model="inception_resnet_v2")


# -- TF-slim ---------------------------------------------------------------------------------------
def _kernel_from_scope(scope: str) -> tuple[int, int] | None:
    m = re.search(r"_(\d)x(\d)$", scope)
    return (int(m.group(1)), int(m.group(2))) if m else None


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_slim_scope_table_matches_the_network(name):
    """Each slim scope name states its kernel (Conv2d_0b_1x7): it must be the conv it is zipped with."""
    with torch.device("meta"):
        units = conv_units(iv.create_model(name))
    scopes = SLIM_SCOPES[name]()
    assert len(scopes) == len(units) == len(set(scopes))
    for scope, (unit_name, module) in zip(scopes, units, strict=True):
        conv = getattr(module, "conv", module)
        assert _kernel_from_scope(scope) == tuple(conv.kernel_size), (scope, unit_name)
        if "_1a_" in scope:  # slim's name for a VALID (reducing) conv
            assert conv.padding == (0, 0), (scope, unit_name)


def _slim_arrays(name: str, model: torch.nn.Module) -> dict[str, np.ndarray]:
    """A TF-slim variable map (HWIO kernels, no BN gamma, 1001 classes) made from a model of ours."""
    scopes = SLIM_SCOPES[name]()
    arrays: dict[str, np.ndarray] = {}
    for scope, (_, module) in zip(scopes, conv_units(model), strict=True):
        conv = getattr(module, "conv", module)
        arrays[f"{scope}/weights"] = conv.weight.detach().permute(2, 3, 1, 0).numpy()
        if hasattr(module, "bn"):
            bn = module.bn
            arrays[f"{scope}/BatchNorm/beta"] = bn.bias.detach().numpy()
            arrays[f"{scope}/BatchNorm/moving_mean"] = bn.running_mean.numpy()
            arrays[f"{scope}/BatchNorm/moving_variance"] = bn.running_var.numpy()
        else:
            arrays[f"{scope}/biases"] = conv.bias.detach().numpy()
    root = {"inception_v4": "InceptionV4", "inception_resnet_v2": "InceptionResnetV2"}[name]
    fc = model.head.fc
    arrays[f"{root}/Logits/Logits/weights"] = np.concatenate(
        [np.zeros((fc.in_features, 1)), fc.weight.detach().numpy().T], 1
    )
    arrays[f"{root}/Logits/Logits/biases"] = np.concatenate([[5.0], fc.bias.detach().numpy()])
    arrays[f"{root}/AuxLogits/Logits/weights"] = np.zeros((768, 1001))  # ignored, as the aux head is
    return arrays


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_slim_conversion_drops_background_and_transposes(name):
    torch.manual_seed(0)
    ref = randomize_bn(iv.create_model(name)).eval()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)  # slim's inception scopes use BN without a scale
    arrays = _slim_arrays(name, ref)
    arrays = {k: v for k, v in arrays.items() if "AuxLogits" not in k}
    ours = iv.create_model(name).eval()
    ours.load_state_dict(convert_state_dict(arrays, source="tf-slim", model=name))
    x = torch.randn(1, 3, 120, 120)
    with torch.no_grad():
        assert (ref(x) - ours(x)).abs().max() < 1e-5
    kept = convert_state_dict(arrays, source="tf-slim", model=name, keep_background=True)
    assert kept["head.fc.weight"].shape[0] == 1001 and kept["head.fc.bias"][0] == 5.0


def test_slim_missing_variables_are_named():
    arrays = _slim_arrays("inception_v4", iv.create_model("inception_v4"))
    del arrays["InceptionV4/Mixed_6c/Branch_2/Conv2d_0d_7x1/weights"]
    with pytest.raises(ValueError, match="Mixed_6c/Branch_2/Conv2d_0d_7x1"):
        convert_state_dict(arrays, source="tf-slim", model="inception_v4")


def test_tf_reader_names_the_extra_when_tensorflow_is_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'inceptionv4\[tf\]'"):
        read_tf_checkpoint(tmp_path / "model.ckpt")


def test_a_file_that_is_no_tf_checkpoint_is_named(tmp_path):
    pytest.importorskip("tensorflow", reason="TensorFlow is not installed (optional extra 'tf')")
    bogus = tmp_path / "model.ckpt.index"
    bogus.write_bytes(b"this is no sstable" * 8)
    with pytest.raises(ValueError, match=r"model.ckpt is not a readable TensorFlow checkpoint: "):
        read_tf_checkpoint(bogus)


def test_tf_checkpoint_round_trip(tmp_path):
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (optional extra 'tf')")
    ref = randomize_bn(iv.create_model("inception_v4")).eval()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
    arrays = _slim_arrays("inception_v4", ref)
    prefix = str(tmp_path / "model.ckpt")
    _save_tf(tf, arrays, prefix)
    ours = iv.load_weights(prefix, architecture="inception_v4", source="tf-slim").eval()
    x = torch.randn(1, 3, 99, 99)
    with torch.no_grad():
        assert (ref(x) - ours(x)).abs().max() < 1e-5


def _save_tf(tf, arrays, prefix):
    """Write a name-based (TF1 / TF-slim style) checkpoint with exactly these variable names."""
    with tf.Graph().as_default():
        variables = {
            k: tf.compat.v1.Variable(v.astype("float32"), name=f"v{i}") for i, (k, v) in enumerate(arrays.items())
        }
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, prefix, write_meta_graph=False)
