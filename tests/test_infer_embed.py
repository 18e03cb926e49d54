"""infer.embed: embeddings and face verification, against facenet-pytorch's own network."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import inceptionv4 as iv
from inceptionv4.cli import main
from inceptionv4.infer.embed import distance_matrix, embed, embeddings, face_distances, verify

from .conftest import randomize_bn

facenet = pytest.importorskip("facenet_pytorch")


@pytest.fixture(scope="module")
def facenet_file(tmp_path_factory):
    """facenet-pytorch's InceptionResnetV1 on random weights (BN statistics too), saved as its
    releases are (a state dict in a .pt), and four 160 px faces."""
    torch.manual_seed(0)
    ref = facenet.InceptionResnetV1(classify=False)
    randomize_bn(ref)
    with torch.no_grad():
        ref.last_bn.running_var.uniform_(0.5, 1.5)
        ref.last_bn.running_mean.normal_(0, 0.1)
    ref.eval()
    root = tmp_path_factory.mktemp("faces")
    torch.save(ref.state_dict(), root / "facenet.pt")
    rng = np.random.default_rng(0)
    faces = []
    for i in range(4):
        path = root / f"face{i}.png"
        Image.fromarray(rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)).save(path)
        faces.append(path)
    return ref, root / "facenet.pt", faces


def _reference(ref, faces) -> torch.Tensor:
    """facenet's embeddings of 160 px faces with its fixed_image_standardization."""
    x = torch.stack([torch.from_numpy(np.array(Image.open(f), dtype=np.float32)).permute(2, 0, 1) for f in faces])
    with torch.no_grad():
        return ref((x - 127.5) / 128.0)


def test_facenets_release_loads_as_it_is_with_its_head_and_preprocessing(facenet_file):
    ref, path, faces = facenet_file
    for net in (iv.load_weights(path), iv.create_model("inception_resnet_v1", pretrained=path)):
        assert net.num_classes == 0 and net.head.embedding_dim == 512
        pre = net.pretrained_cfg.preprocessing
        assert (pre.input_size, pre.crop_pct, pre.interpolation) == (160, 1.0, "bilinear")
        x = torch.randn(2, 3, 160, 160)
        with torch.no_grad():
            assert (net.eval()(x) - ref(x)).abs().max().item() < 1e-5


def test_embeddings_and_distances_equal_facenets(facenet_file, tmp_path):
    ref, path, faces = facenet_file
    want = _reference(ref, faces)
    got = embed(path, faces)
    assert got.names == [str(f) for f in faces] and got.vectors.shape == (4, 512)
    assert np.abs(got.vectors - want.numpy()).max() < 1e-5
    assert np.allclose(np.linalg.norm(got.vectors, axis=1), 1, atol=1e-5)
    expected = torch.cdist(want.double(), want.double()).numpy()
    d = face_distances(path, faces)
    assert d.shape == (4, 4) and np.abs(d - expected).max() < 1e-5 and np.abs(np.diag(d)).max() < 1e-6
    v = verify(path, faces[0], faces[1], threshold=float(expected[0, 1]) + 1e-3)
    assert v.same and abs(v.distance - expected[0, 1]) < 1e-5
    assert not verify(path, faces[0], faces[1], threshold=float(expected[0, 1]) - 1e-3).same
    with pytest.raises(ValueError, match="threshold must be a distance between 0 and 2"):
        verify(path, faces[0], faces[1], threshold=3)
    # a classifier's embedding is its pooled features
    net = iv.create_model("inception_v4", num_classes=3).eval()
    x = torch.randn(2, 3, 120, 120)
    with torch.no_grad():
        assert torch.equal(embeddings(net, x), net.forward_head(net.forward_features(x), pre_logits=True))
    assert np.allclose(distance_matrix(np.eye(3)), np.sqrt(2) * (1 - np.eye(3)))


def test_the_verify_command_prints_the_distance_and_the_call(facenet_file, capsys, tmp_path):
    ref, path, faces = facenet_file
    want = _reference(ref, faces[:2])
    distance = (want[0] - want[1]).norm().item()
    assert main(["verify", str(faces[0]), str(faces[1]), "--weights", str(path), "--threshold", "2"]) == 0
    assert capsys.readouterr().out.strip() == f"distance {distance:.4f}: the same person (threshold 2)"
    assert main(["verify", str(faces[0]), str(faces[1]), "--weights", str(path), "--threshold", "0", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["same"] is False and abs(r["distance"] - distance) < 1e-5
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff nope")
    assert main(["verify", str(faces[0]), str(tmp_path / "bad.jpg"), "--weights", str(path), "--threshold", "1"]) != 0
    assert "bad.jpg" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["verify", str(faces[0]), str(faces[1]), "--weights", str(path), "--threshold", "2.5"])
