"""``lvmmed embed``: embeddings of real shard sets and of a folder of real images/DICOM/NIfTI, resumable, with maps."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lvmmed.cli import main as lvmmed_main
from lvmmed.data import samples
from lvmmed.data.shards import iter_samples, load_manifest
from lvmmed.embedding import embed, prepare_batch
from lvmmed.embedding.plot import project_2d
from lvmmed.embedding.store import EmbeddingStore
from lvmmed.models import create_backbone
from lvmmed.weights import load_backbone, save_pretrained

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A 1-channel ResNet-18 export at 32 px that normalises with mean 0.4 / std 0.2 (read from its config.json)."""
    torch.manual_seed(0)
    model = create_backbone("resnet18", in_chans=1, img_size=32)
    return save_pretrained(model, tmp_path_factory.mktemp("w") / "export", {"input_mean": [0.4], "input_std": [0.2]})


def _index(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "index.csv").open()))


def test_embed_shard_sets_through_the_lvmmed_command(tmp_path, weights, bundled_shards, capsys):
    out = tmp_path / "emb"
    dicom, mni = bundled_shards["dicom_modality"], bundled_shards["mni152"]
    argv = ["embed", "--weights", str(weights), "--data", str(dicom), "--data", str(mni), "--out", str(out),
            "--split", "train", "--split", "val", "--plot", "--batch-size", "16", "--quiet"]  # fmt: skip
    assert lvmmed_main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    expected = sum(load_manifest(s).count(split) for s in (dicom, mni) for split in ("train", "val"))
    features, rows = np.load(out / "embeddings.npy"), _index(out)
    assert features.shape == (expected, 512) == (summary["items"], summary["dim"]) and len(rows) == expected
    assert np.isfinite(features).all() and features.std(0).mean() > 0
    assert {r["dataset"] for r in rows} == {"dicom_modality", "mni152"}
    assert {r["split"] for r in rows} == {"train", "val"}
    assert {r["label"] for r in rows if r["dataset"] == "dicom_modality"} <= {"CR", "CT", "MR", "NM", "US"}
    assert len({r["label"] for r in rows if r["dataset"] == "dicom_modality"}) >= 3 and all(r["center"] for r in rows)
    assert len({r["key"] for r in rows}) == expected and [int(r["row"]) for r in rows] == list(range(expected))
    assert (out / "map.png").read_bytes()[:8] == PNG and summary["plot"]["panels"] == ["label", "dataset", "center"]
    # The first rows are the model's features of the first train samples, prepared as the weights' config.json says.
    first = [s for _, s in zip(range(4), iter_samples(dicom, "train"))]
    assert [s["key"] for s in first] == [r["key"] for r in rows[:4]]
    x = prepare_batch([s["image"] for s in first], 1, 32, [0.4], [0.2])
    from lvmmed.data.processing import resize

    by_hand = (resize(first[0]["image"].astype(np.float32), 32) - 0.4) / 0.2  # the export's own mean/std
    np.testing.assert_allclose(x[0, 0].numpy(), by_hand, atol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(features[:4], load_backbone(weights).eval()(x).numpy(), atol=1e-5, rtol=1e-5)
    if summary["parquet"]:
        import pyarrow.parquet as pq

        assert pq.read_table(out / "index.parquet").column("key").to_pylist() == [r["key"] for r in rows]


def _folder(root: Path) -> Path:
    """Real files as a user would have them: a NIfTI volume, a DICOM CT slice, an RGB photo, and a broken file."""
    try:
        nifti, ct, photo = samples.path("mni152_t1"), samples.path("ct_small"), samples.path("retina")
    except samples.MissingSampleError as err:
        pytest.skip(str(err))
    (root / "brain").mkdir(parents=True)
    (root / "ct").mkdir()
    shutil.copy(nifti, root / "brain" / "t1.nii.gz")
    shutil.copy(ct, root / "ct" / "slice.dcm")
    shutil.copy(photo, root / "fundus.jpg")
    (root / "ct" / "broken.dcm").write_bytes(b"not a dicom file")
    (root / "labels.csv").write_text("file,label\n")  # ignored
    return root


def test_python_m_lvmmed_embed_on_a_folder_of_images_dicom_and_nifti(tmp_path, weights):
    folder = _folder(tmp_path / "mine")
    out = tmp_path / "emb"
    cmd = [sys.executable, "-m", "lvmmed", "embed", "--weights", str(weights), "--data", str(folder), "--out",
           str(out), "--slice-step", "16", "--quiet", "--plot", "--plot-method", "pca"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _index(out)
    by_label = {label: [r for r in rows if r["label"] == label] for label in ("", "brain", "ct")}
    assert [r["key"] for r in by_label[""]] == ["fundus.jpg"] and [r["key"] for r in by_label["ct"]] == ["ct/slice.dcm"]
    assert len(by_label["brain"]) >= 5 and all(r["key"].startswith("brain/t1.nii.gz#a2s") for r in by_label["brain"])
    assert {r["modality"] for r in by_label["ct"]} == {"CT"} and {r["dataset"] for r in rows} == {"mine"}
    assert np.load(out / "embeddings.npy").shape == (len(rows), 512)
    failures = json.loads((out / "failures.json").read_text())["failures"]
    assert [Path(f["file"]).name for f in failures] == ["broken.dcm"]
    assert json.loads(proc.stdout)["plot"]["method"] == "pca" and (out / "map.png").read_bytes()[:8] == PNG


def test_an_interrupted_run_resumes_from_its_finished_chunks(tmp_path, weights, bundled_shards, monkeypatch):
    args = {"data": [str(bundled_shards["mni152"])], "chunk_size": 8, "batch_size": 4, "progress": False}
    straight = embed(str(weights), out=tmp_path / "straight", **args)
    real_write, written = EmbeddingStore.write_chunk, []

    def write_then_stop(self, index, *a):
        if len(written) == 2:
            raise KeyboardInterrupt("simulated interruption before chunk 2 is written")
        written.append(index)
        return real_write(self, index, *a)

    monkeypatch.setattr(EmbeddingStore, "write_chunk", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        embed(str(weights), out=tmp_path / "resumed", **args)
    assert sorted(p.name for p in (tmp_path / "resumed" / "chunks").iterdir()) == [
        "000000.csv", "000000.npy", "000001.csv", "000001.npy"]  # fmt: skip
    monkeypatch.setattr(EmbeddingStore, "write_chunk", real_write)
    resumed = embed(str(weights), out=tmp_path / "resumed", **args)
    assert resumed["computed_now"] == straight["items"] - 16 and resumed["items"] == straight["items"]
    np.testing.assert_array_equal(np.load(tmp_path / "resumed" / "embeddings.npy"),
                                  np.load(tmp_path / "straight" / "embeddings.npy"))  # fmt: skip
    assert _index(tmp_path / "resumed") == _index(tmp_path / "straight")
    assert not (tmp_path / "resumed" / "chunks").exists()
    assert embed(str(weights), out=tmp_path / "resumed", **args)["resumed"] == "already complete"


def test_errors_are_one_line_with_the_right_exit_code(tmp_path, weights, bundled_shards, capsys):
    mni = str(bundled_shards["mni152"])
    out = tmp_path / "emb"
    base = ["embed", "--data", mni, "--out", str(out), "--quiet", "--split", "test"]
    assert lvmmed_main([*base, "--weights", str(weights)]) == 0
    capsys.readouterr()
    other = save_pretrained(create_backbone("resnet18", in_chans=1, img_size=32), tmp_path / "other")
    cases = [
        ([*base, "--weights", str(other)], 2, "holds embeddings of another configuration (differs in input, weights"),
        ([*base, "--weights", str(tmp_path / "nope")], 2, "does not exist"),
        (["embed", "--weights", str(weights), "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "x")], 2,
         "no such shard set, folder or file"),
    ]  # fmt: skip
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.dcm").write_bytes(b"garbage")
    cases.append((["embed", "--weights", str(weights), "--data", str(broken), "--out", str(tmp_path / "y")], 1,
                  "no readable image"))  # fmt: skip
    for argv, code, expected in cases:
        assert lvmmed_main(argv) == code, argv
        err = capsys.readouterr().err.strip().splitlines()  # a progress bar may stand above the error line
        assert err[-1].startswith("lvmmed embed: error:") and expected in err[-1], err
        assert not any("Traceback" in line or "error" in line for line in err[:-1]), err
    assert lvmmed_main([*base, "--weights", str(other), "--overwrite"]) == 0


@pytest.mark.learning
def test_projections(tmp_path):
    """PCA and t-SNE keep two well-separated 8-D Gaussian clusters apart in 2-D: separation = distance of the two
    centres / summed coordinate std of the first cluster > 1. Control: both halves drawn from one Gaussian.

    Measured 2026-12-06 by rerunning this test's data and control with seeds 0..19 (t-SNE keeps its fixed
    ``random_state``), at ``torch.set_num_threads(1)`` and ``(2)`` (identical values), n = 20 each:
    separation PCA 21.3 ± 2.9 (min 17.4), t-SNE 17.8 ± 1.6 (min 14.7); control PCA 0.24 ± 0.12 (max 0.56),
    t-SNE 0.24 ± 0.12 (max 0.52). The threshold 1 is 6.3 control std above the control mean and 10 std below
    the t-SNE mean.
    """

    def separation(coords: np.ndarray) -> float:
        return float(np.linalg.norm(coords[:20].mean(0) - coords[20:].mean(0)) / coords[:20].std(0).sum())

    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (20, 8)) + 5, rng.normal(0, 1, (20, 8)) - 5]).astype(np.float32)
    control = np.random.default_rng(0).normal(0, 1, (40, 8)).astype(np.float32)
    for method in ("pca", "tsne"):
        coords, used = project_2d(features, method)
        assert used == method and coords.shape == (40, 2)
        assert separation(coords) > 1  # the two clusters stay apart
        assert separation(project_2d(control, method)[0]) < 1
    import importlib.util

    if importlib.util.find_spec("umap") is None:
        from lvmmed.errors import UsageError

        with pytest.raises(UsageError, match="needs umap-learn") as raised:
            project_2d(features, "umap")
        assert raised.value.fix == "pip install umap-learn"
        assert project_2d(features, "auto")[1] == "pca"
