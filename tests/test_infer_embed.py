"""infer.embed: embeddings and face verification, against facenet-pytorch's own network."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import inceptionv4 as iv
from inceptionv4.cli import main
from inceptionv4.engines.open import open_session
from inceptionv4.infer.embed import distance_matrix, embed, face_distances, verify

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


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_an_embedding_session_runs_the_embedding_network_on_every_engine(small_model, backend, tmp_path):
    """A classifier's embedding is its pooled features (forward_head(pre_logits=True)), on any
    engine, averaged over crops like probabilities; an int8 artefact is refused."""
    if not iv.extras.installed(backend):
        pytest.skip(f"needs {backend}")
    x = torch.randint(0, 256, (3 * 10, 3, 75, 75), dtype=torch.uint8)
    session = open_session(small_model, backend=backend, output="embeddings", crops=10, cache_dir=tmp_path)
    got = session(x)
    from inceptionv4.data.views import normalize_views

    with torch.no_grad():
        views = normalize_views(x, iv.models.Preprocessing.of(small_model))
        pooled = small_model.forward_head(small_model.forward_features(views), pre_logits=True)
    want = pooled.view(3, 10, -1).mean(1)
    assert got.shape == (3, 1792) and (got - want).abs().max().item() < 1e-4, backend
    assert session.describe()["output"] == "embeddings" and small_model.num_classes == 3  # the caller's is kept


def _images(folder, n, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    return sorted(str(p) for p in folder.iterdir())


def test_embed_writes_parquet_rows_and_a_rerun_finishes_what_a_killed_run_left(small_model, tmp_path, capsys,
                                                                               monkeypatch):  # fmt: skip
    import pyarrow.parquet as pq

    from inceptionv4.infer import outputs

    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights)
    files = _images(tmp_path / "in", 7)
    want = embed(weights, files, backend="torch")
    out = tmp_path / "emb.parquet"
    argv = ["embed", str(tmp_path / "in"), "--weights", str(weights), "--out", str(out), "--backend", "torch",
            "--precision", "fp32", "--batch-size", "2"]  # fmt: skip
    # a run killed after its fifth image: parts of 2 rows; the interrupt writes the one pending
    monkeypatch.setattr(outputs.ParquetRows, "__init__", _small_parts(outputs.ParquetRows.__init__))
    real_add, seen = outputs.ParquetRows.add, []

    def dying_add(self, row):
        real_add(self, row)
        seen.append(row["key"])
        if len(seen) == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(outputs.ParquetRows, "add", dying_add)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert outputs.done_keys(out) == set(files[:5]) and len(list(out.glob("*.parquet"))) == 3
    (out / ".part-x.parquet.tmp").write_bytes(b"PAR1 half a part")  # a part a SIGKILL cut short: never read
    monkeypatch.setattr(outputs.ParquetRows, "add", real_add)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "wrote 2 embedding row(s) into" in err and "(5 already there, skipped)" in err
    table = pq.read_table(out)
    rows = {r["key"]: r["embedding"] for r in table.to_pylist()}
    assert table.num_rows == 7 and sorted(rows) == files  # nothing dropped, nothing twice
    assert np.abs(np.array([rows[f] for f in files]) - want.vectors).max() < 1e-5
    assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[1792]"


def _small_parts(init):
    def small(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "rows_per_part": 2})

    return small


def test_predict_out_writes_the_top_k_as_parquet_and_skips_what_is_written(small_model, tmp_path, capsys):
    import pyarrow.parquet as pq

    from inceptionv4.infer.predict import predict

    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights)
    files = _images(tmp_path / "in", 3)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "preds.parquet"
    argv = ["predict", str(tmp_path / "in"), "--weights", str(weights), "--out", str(out), "--topk", "2",
            "--backend", "torch", "--precision", "fp32"]  # fmt: skip
    assert main(argv) == 1  # the broken file
    assert "broken.png: error: not an image" in capsys.readouterr().err
    rows = {r["key"]: r["top"] for r in pq.read_table(out).to_pylist()}
    for result in predict(small_model, files, topk=2):
        got = rows[result["file"]]
        assert [t["index"] for t in got] == [t["index"] for t in result["top"]]
        assert max(abs(a["prob"] - b["prob"]) for a, b in zip(got, result["top"], strict=True)) < 1e-6
    main(argv)
    assert "wrote 0 prediction row(s)" in capsys.readouterr().err and pq.read_table(out).num_rows == 3
    assert main([*argv, "--json"]) != 0
    assert "--out writes the predictions as Parquet: drop --json" in capsys.readouterr().err


def test_embed_reads_shards_and_hf_splits_without_labels(small_model, tmp_path, capsys):
    import io
    import tarfile

    import pyarrow.parquet as pq

    datasets = pytest.importorskip("datasets")
    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights)
    files = _images(tmp_path / "in", 4)
    want = embed(weights, files, backend="torch").vectors
    raw = [open(f, "rb").read() for f in files]  # noqa: SIM115
    (tmp_path / "shards").mkdir()
    with tarfile.open(tmp_path / "shards" / "s-000000.tar", "w") as tar:  # no .cls: unlabelled, as crawls are
        for name, data in [*((f"{i:03d}.png", b) for i, b in enumerate(raw)), ("004.png", b"junk"), ("005.txt", b"x")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    common = ["--weights", str(weights), "--backend", "torch", "--precision", "fp32"]
    assert main(["embed", "--dataset", "wds", str(tmp_path / "shards" / "s-{000000..000000}.tar"),
                 "--out", str(tmp_path / "wds.parquet"), *common]) == 1  # fmt: skip
    assert "s-000000.tar:004.png: error: not an image" in capsys.readouterr().err
    rows = {r["key"]: r["embedding"] for r in pq.read_table(tmp_path / "wds.parquet").to_pylist()}
    assert sorted(rows) == [f"s-000000.tar:{i:03d}.png" for i in range(4)]
    assert np.abs(np.array([rows[k] for k in sorted(rows)]) - want).max() < 1e-5

    features = datasets.Features({"img": datasets.Image(), "note": datasets.Value("string")})
    split = datasets.Dataset.from_dict({"img": [{"bytes": b, "path": None} for b in raw], "note": list("abcd")},
                                       features=features)  # fmt: skip
    split.save_to_disk(str(tmp_path / "hf"))
    assert main(["embed", "--dataset", "hf", str(tmp_path / "hf"), "--out", str(tmp_path / "hf.parquet"), *common]) == 0
    table = pq.read_table(tmp_path / "hf.parquet").to_pylist()
    keys = [r["key"] for r in table]
    assert len(keys) == 4 and all(k.endswith(f"#{i}") for i, k in enumerate(sorted(keys)))
    assert np.abs(np.array([r["embedding"] for r in sorted(table, key=lambda r: r["key"])]) - want).max() < 1e-5
    assert main(["embed", str(tmp_path / "in"), "--split", "test", "--out", str(tmp_path / "x.parquet"), *common]) == 2
    assert "--split and --image-column read a Hugging Face dataset: give --dataset hf" in capsys.readouterr().err
    assert main(["embed", "--dataset", "wds", "a.tar", "b.tar", "--out", str(tmp_path / "x.parquet"), *common]) == 2
    assert "--dataset wds reads one source" in capsys.readouterr().err


def test_embed_under_torchrun_splits_the_images_by_rank_with_no_duplicates(small_model, tmp_path):
    """Two gloo processes each embed every other image into parts named by their rank; together
    they are one process's rows, each once; rank 0 alone reports."""
    import os
    import socket
    import subprocess
    import sys

    import pyarrow.parquet as pq

    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights)
    files = _images(tmp_path / "in", 7)
    want = embed(weights, files, backend="torch")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "emb.parquet"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(port), "-m", "inceptionv4", "embed", str(tmp_path / "in"), "--weights", str(weights),
           "--out", str(out), "--backend", "torch", "--precision", "fp32", "--device", "cpu"]  # fmt: skip
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("wrote 7 embedding row(s) into") == 1 and "by 2 processes" in proc.stderr
    assert sorted({p.name[:9] for p in out.glob("*.parquet")}) == ["rank00000", "rank00001"]
    table = pq.read_table(out)
    rows = {r["key"]: r["embedding"] for r in table.to_pylist()}
    assert table.num_rows == 7 and sorted(rows) == sorted(want.names)
    assert np.abs(np.array([rows[n] for n in want.names]) - want.vectors).max() < 1e-5


def test_embed_topk_ranks_the_same_features_as_predict_and_a_resume_keeps_the_columns(small_model, tmp_path, capsys):
    import pyarrow.parquet as pq

    from inceptionv4.infer.predict import predict

    weights = tmp_path / "m.safetensors"
    iv.save_weights(small_model, weights)
    files = _images(tmp_path / "in", 3)
    out = tmp_path / "emb.parquet"
    common = ["--weights", str(weights), "--out", str(out), "--backend", "torch", "--precision", "fp32"]
    assert main(["embed", *files[:2], *common, "--topk", "2"]) == 0
    assert main(["embed", *files, *common]) == 2  # the rows written have a top column: a rerun must too
    assert f"{out} holds rows of key, embedding, top, not key, embedding" in capsys.readouterr().err
    assert main(["embed", *files, *common, "--topk", "2"]) == 0
    rows = {r["key"]: r for r in pq.read_table(out).to_pylist()}
    assert sorted(rows) == files
    for result in predict(small_model, files, topk=2):
        got = rows[result["file"]]["top"]
        assert [t["index"] for t in got] == [t["index"] for t in result["top"]]
        assert max(abs(a["prob"] - b["prob"]) for a, b in zip(got, result["top"], strict=True)) < 1e-5
    facenet_like = iv.create_model("inception_resnet_v1", num_classes=0, embedding_dim=16)
    iv.save_weights(facenet_like, tmp_path / "f.safetensors")
    assert main(["embed", *files, "--weights", str(tmp_path / "f.safetensors"), "--out", str(tmp_path / "f.parquet"),
                 "--topk", "2"]) == 2  # fmt: skip
    assert "no classifier over its pooled features (an embedding head" in capsys.readouterr().err
