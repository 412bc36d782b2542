"""Archives as --src, unsafe member names, truncated/corrupted shards, verify and inspect."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile

import pytest

from data_prep.cli import main
from data_prep.safety import UnsafeArchiveError, extract_archive
from data_prep.verify import inspect_shards, iter_tar_samples, verify_shards
from lvmmed.data import samples
from lvmmed.data.shards import ShardFormatError, load_arrays, sha256_file


@pytest.fixture
def small_set(tmp_path, convert_folder):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("ct_small", "mr_small", "cr_tibia"):
        shutil.copy(samples.path(name), src / f"{name}.dcm")
    out = tmp_path / "set"
    convert_folder(src, out, "dicom", image_size=16, name="small")
    return src, out


def test_archive_src_converts_like_the_folder(small_set, tmp_path, convert_folder):
    src, out = small_set
    archive = tmp_path / "collection.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="collection")
    out2 = tmp_path / "from_archive"
    convert_folder(archive, out2, "dicom", image_size=16, name="small")
    a, b = load_arrays(out), load_arrays(out2)
    assert len(a) == len(b) == 3
    assert sorted(r["image"].tobytes() for r in a) == sorted(r["image"].tobytes() for r in b)


def test_archive_with_parent_member_is_refused(tmp_path, convert_folder):
    archive = tmp_path / "evil.tar"
    payload = samples.path("ct_small").read_bytes()
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("../evil.dcm")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(UnsafeArchiveError, match=r"\.\./evil\.dcm"):
        convert_folder(archive, tmp_path / "out" / "set", "dicom")
    assert not (tmp_path / "evil.dcm").exists() and not (tmp_path / "out" / "evil.dcm").exists()
    assert main(["convert", "--format", "dicom", "--src", str(archive), "--out", str(tmp_path / "o2")]) == 2

    zpath = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("/abs/evil.dcm", payload)
    with pytest.raises(UnsafeArchiveError):
        extract_archive(zpath, tmp_path / "z")


def test_verify_ok_then_detects_truncation(small_set, capsys):
    _, out = small_set
    assert verify_shards(out).ok
    assert main(["verify", str(out)]) == 0
    shard = next(out.glob("*.tar"))
    data = shard.read_bytes()
    shard.write_bytes(data[:900])  # cut inside the first member's data
    report = verify_shards(out)
    assert not report.ok and any("sha256" in p or "bytes" in p for p in report.problems)
    assert main(["verify", str(out)]) == 1
    with pytest.raises(ShardFormatError, match="truncated"):
        list(iter_tar_samples(shard))


def test_unsafe_member_in_shard_is_reported(small_set):
    _, out = small_set
    shard = next(out.glob("*.tar"))
    with tarfile.open(shard, "a") as tar:
        info = tarfile.TarInfo("../escape.meta.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    manifest = json.loads((out / "manifest.json").read_text())
    for s in manifest["shards"]:
        if s["name"] == shard.name:
            s["sha256"], s["bytes"] = sha256_file(shard), shard.stat().st_size
    (out / "manifest.json").write_text(json.dumps(manifest))
    report = verify_shards(out)
    assert not report.ok and any("unsafe member name" in p for p in report.problems)
    with pytest.raises(UnsafeArchiveError, match="unsafe member name"):
        inspect_shards(out)


def test_inspect_summarises(small_set):
    _, out = small_set
    text = inspect_shards(out, n_samples=1)
    assert "small" in text and "counts" in text and "CT" in text and "sample:" in text


def test_zip_of_image_folders_converts(tmp_path, convert_folder):
    import numpy as np
    from PIL import Image

    from lvmmed.data.readers import load_image

    retina = load_image(samples.path("retina"))
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for cls, rows in (("a", (400, 500)), ("b", (700, 800))):
            for i, r in enumerate(rows):
                buf = io.BytesIO()
                Image.fromarray(np.ascontiguousarray(retina[r : r + 64, 600:664])).save(buf, format="PNG")
                zf.writestr(f"photos/{cls}/{i}.png", buf.getvalue())
    out = tmp_path / "out"
    result = convert_folder(archive, out, "images", image_size=16, modality="FUNDUS")
    assert result.manifest["counts"]["total"] == 4 and result.manifest["label_names"] == ["a", "b"]
    assert not (tmp_path / ".out.src").exists()  # the extraction is removed after the run
