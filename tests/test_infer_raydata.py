"""infer.raydata: embeddings and top-k on a local Ray cluster (2 CPUs) equal one process's, and an
actor killed mid-run loses and repeats nothing."""

import os
import signal

import numpy as np
import pytest

import inceptionv4 as iv
from inceptionv4.cli import main
from inceptionv4.engines.options import SessionOptions
from inceptionv4.infer.embed import embed
from inceptionv4.infer.predict import predict

from .conftest import noisy_pngs

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster of this machine's 2 CPUs, started for these tests alone."""
    ray.init(num_cpus=2, object_store_memory=300 * 2**20, include_dashboard=False, log_to_driver=False,
             configure_logging=False)  # fmt: skip
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def weights(small_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "m.safetensors"
    iv.save_weights(small_model, path, class_names=small_model.class_names)
    return path


def _map_workers() -> set[int]:
    """The PIDs of the processes Ray Data's actors run in (their titles start 'ray::MapWorker')."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    title = f.read()
            except OSError:
                continue
            if title.startswith(b"ray::MapWorker"):
                pids.add(int(entry))
    return pids


def test_embed_on_ray_writes_the_rows_one_process_writes_and_resumes(cluster, weights, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    files = [str(p) for p in noisy_pngs(folder, 9, seed=1)]
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "emb.parquet"
    argv = ["embed", str(folder), "--weights", str(weights), "--out", str(out), "--backend", "torch",
            "--precision", "fp32", "--ray", "auto", "--ray-actors", "2", "--batch-size", "3"]  # fmt: skip
    assert main(argv) == 1  # the broken file, said by name
    err = capsys.readouterr().err
    assert "broken.png: error: not an image" in err and "wrote 9 embedding row(s)" in err and "on Ray (auto)" in err
    assert ray.is_initialized()  # a cluster the caller joined is left to the caller

    (folder / "broken.png").unlink()
    (folder / "new").mkdir()
    files += [str(p) for p in noisy_pngs(folder / "new", 2, seed=2)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "wrote 2 embedding row(s)" in err and "(9 already there, skipped)" in err
    table = pq.read_table(out)
    got = {r["key"]: r["embedding"] for r in table.to_pylist()}
    assert table.num_rows == 11 and sorted(got) == sorted(files)  # nothing dropped, nothing twice
    want = embed(weights, files, backend="torch")
    assert np.abs(np.array([got[n] for n in want.names]) - want.vectors).max() < 1e-5


def test_predict_out_on_ray_ranks_as_one_process(cluster, small_model, weights, tmp_path, capsys):
    files = [str(p) for p in noisy_pngs(tmp_path, 5, seed=3)]
    out = tmp_path / "preds.parquet"
    assert main(["predict", *files, "--weights", str(weights), "--out", str(out), "--topk", "2", "--backend", "torch",
                 "--precision", "fp32", "--ray", "auto"]) == 0  # fmt: skip
    rows = {r["key"]: r["top"] for r in pq.read_table(out).to_pylist()}
    assert sorted(rows) == sorted(files)
    for result in predict(small_model, files, topk=2):
        got = rows[result["file"]]
        assert [(t["index"], t["name"]) for t in got] == [(t["index"], t["name"]) for t in result["top"]]
        assert max(abs(a["prob"] - b["prob"]) for a, b in zip(got, result["top"], strict=True)) < 1e-5
    assert main(["predict", *files, "--weights", str(weights), "--ray", "auto"]) == 2
    assert "--ray writes the predictions as Parquet: give --out" in capsys.readouterr().err


def test_an_actor_killed_mid_run_is_restarted_and_nothing_is_lost_or_repeated(cluster, weights, tmp_path):
    from inceptionv4.infer.raydata import ray_rows

    files = [str(p) for p in noisy_pngs(tmp_path, 30, seed=4)]
    want = embed(weights, files, backend="torch")
    rows, killed, after, later = [], set(), 0, set()
    for row in ray_rows(weights, files, SessionOptions(backend="torch", output="embeddings"), actors=2, batch_size=2):
        rows.append(row)
        if not killed:  # the first batch is back: the actors hold the rest
            killed = _map_workers()
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
        else:
            after += 1
            later |= _map_workers()
    assert killed and after >= len(files) // 2  # both actors died with most of the work still to do
    assert later - killed  # Ray restarted them
    assert len(rows) == len(files) and sorted(r["file"] for r in rows) == sorted(files)
    got = {r["file"]: r["embedding"] for r in rows}
    assert np.abs(np.array([got[n] for n in want.names]) - want.vectors).max() < 1e-5


def test_the_predictor_takes_encoded_images_as_ray_reads_them(weights, tmp_path):
    """Predictor as a user's own pipeline calls it (no cluster: the class alone): the columns of
    ray.data.read_binary_files(include_paths=True), a bad image flagged in its row."""
    from inceptionv4.infer.raydata import Predictor

    files = noisy_pngs(tmp_path, 3, seed=5)
    batch = {"bytes": np.array([p.read_bytes() for p in files] + [b"junk"], dtype=object),
             "path": np.array([str(p) for p in files] + ["junk.png"], dtype=object)}  # fmt: skip
    out = Predictor(str(weights), backend="torch")(batch)
    want = embed(weights, files, backend="torch").vectors
    assert out["embedding"].shape == (4, 1792) and np.abs(out["embedding"][:3] - want).max() < 1e-5
    assert list(out["error"][:3]) == ["", "", ""] and "not an image" in out["error"][3]
    assert not out["embedding"][3].any()
    top = Predictor(str(weights), output="probabilities", topk=2, backend="torch")(batch)
    assert top["top_index"].shape == (4, 2) and top["top_prob"][:3].sum(1).max() <= 1 + 1e-6
    both = Predictor(str(weights), topk=2, backend="torch")(batch)  # embeddings, ranked by the classifier
    assert np.abs(both["embedding"] - out["embedding"]).max() < 1e-6
    assert (both["top_index"][:3] == top["top_index"][:3]).all()
    assert np.abs(both["top_prob"][:3] - top["top_prob"][:3]).max() < 1e-5


def test_embed_on_ray_reads_shards_as_one_process_does(cluster, weights, tmp_path, capsys):
    """--dataset wds on Ray: the shard dataset travels to Ray's tasks, and the rows (keys
    '<shard>:<member>') equal those one process writes."""
    import io
    import tarfile

    with tarfile.open(tmp_path / "s-000000.tar", "w") as tar:
        for i, path in enumerate(noisy_pngs(tmp_path, 5, seed=6)):
            info = tarfile.TarInfo(f"{i:03d}.png")
            info.size = path.stat().st_size
            tar.addfile(info, io.BytesIO(path.read_bytes()))
    common = ["embed", "--dataset", "wds", str(tmp_path / "s-000000.tar"), "--weights", str(weights), "--backend",
              "torch", "--precision", "fp32"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "one.parquet")]) == 0
    assert main([*common, "--out", str(tmp_path / "ray.parquet"), "--ray", "auto", "--ray-actors", "2"]) == 0
    one, on_ray = ({r["key"]: r["embedding"] for r in pq.read_table(tmp_path / f"{k}.parquet").to_pylist()}
                   for k in ("one", "ray"))  # fmt: skip
    assert sorted(on_ray) == sorted(one) == [f"s-000000.tar:{i:03d}.png" for i in range(5)]
    assert max(np.abs(np.array(on_ray[k]) - np.array(one[k])).max() for k in one) < 1e-5
