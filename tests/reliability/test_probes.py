"""Reliability probes: bad input as a careless or hostile user gives it, one table of cases (MONAI style).

Each case builds its input from real files (the images that ship with pydicom, nibabel and scikit-image, or the
bundled shard set), runs a command in this process under the error contract, and asserts the exit status, a
fragment of the one-line message, that no traceback was printed, and that no good data was lost.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pathlib
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from lvmmed.data import samples


@dataclass
class Probe:
    """A command to run and what must still be true afterwards."""

    main: Callable
    argv: list
    prog: str = "prog"
    check: Callable[[], None] = field(default=lambda: None)


def _data_prep():
    from data_prep.cli import _run

    return _run


def _weights():
    from lvmmed.weights import _run

    return _run


def _convert(src: Path, out: Path, fmt: str, *extra: str) -> list:
    return ["convert", "--format", fmt, "--src", src, "--out", out, "--quiet", "--workers", "1", *extra]


def _manifest_total(out: Path) -> int:
    return json.loads((out / "manifest.json").read_text())["counts"]["total"]


def _failure(out: Path, name: str) -> dict:
    failures = json.loads((out / "failures.json").read_text())
    found = [f for f in failures if name in f["file"]]
    assert found, failures
    assert not any(os.sep + "tmp" in f["reason"] or str(out.parent) in f["reason"] for f in failures), failures
    return found[0]


# ---------------------------------------------------------------- inputs built from real files
def _good_dicom(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(samples.path("ct_small"), folder / "good.dcm")


def _rle_bomb(path: Path, rows: int, cols: int) -> None:
    """A real RLE-compressed DICOM whose header then declares ``rows`` x ``cols`` (a few KB on disk)."""
    import pydicom
    from pydicom.uid import RLELossless, generate_uid

    ds = pydicom.dcmread(samples.path("ct_small"))
    ds.compress(RLELossless, encoding_plugin="pydicom")
    ds.Rows, ds.Columns = rows, cols
    ds.SeriesInstanceUID = ds.SOPInstanceUID = ds.StudyInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = "bomb"
    ds.save_as(path)


def _png_folder(folder: Path) -> Path:
    from PIL import Image

    cls = folder / "tissue"
    cls.mkdir(parents=True)
    rgb = np.asarray(Image.open(samples.path("ihc")).convert("RGB"))
    for i in range(2):
        Image.fromarray(rgb[i * 128 : i * 128 + 96, :96]).save(cls / f"good{i}.png")
    return cls


def _nifti_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(samples.path("t1_anatomical"), folder / "good.nii")
    return folder


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w") as tar:
        good = tarfile.TarInfo("study/good.dcm")
        payload = Path(samples.path("ct_small")).read_bytes()
        good.size = len(payload)
        tar.addfile(good, io.BytesIO(payload))
        if member.isfile():
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        else:
            tar.addfile(member)
    return path


# ---------------------------------------------------------------- the cases
def dicom_bomb(tmp: Path, ctx) -> Probe:
    src, out = tmp / "src", tmp / "out"
    _good_dicom(src)
    _rle_bomb(src / "bomb.dcm", 12000, 12000)  # 144 Mpx: over the default limit, harmless if it were decoded

    def check():
        assert _manifest_total(out) >= 1  # the good file was converted
        assert "max_pixels_per_frame" in _failure(out, "bomb.dcm")["reason"]

    return Probe(_data_prep(), _convert(src, out, "dicom", "max_failure_fraction=1.0"), check=check)


def dicom_zero_byte(tmp: Path, ctx) -> Probe:
    src, out = tmp / "src", tmp / "out"
    _good_dicom(src)
    (src / "empty.dcm").write_bytes(b"")
    return Probe(_data_prep(), _convert(src, out, "dicom", "max_failure_fraction=1.0"),
                 check=lambda: (_manifest_total(out) >= 1, _failure(out, "empty.dcm")))  # fmt: skip


def png_truncated_and_text(tmp: Path, ctx) -> Probe:
    src, out = tmp / "src", tmp / "out"
    cls = _png_folder(src)
    data = (cls / "good0.png").read_bytes()
    (cls / "truncated.png").write_bytes(data[: len(data) // 2])
    (cls / "notes.png").write_text("this is a text file renamed to .png\n")

    def check():
        assert _manifest_total(out) == 2
        assert "not a readable image" in _failure(out, "notes.png")["reason"]
        _failure(out, "truncated.png")

    return Probe(_data_prep(), _convert(src, out, "images", "max_failure_fraction=1.0"), check=check)


def png_over_limit(tmp: Path, ctx) -> Probe:
    from PIL import Image

    src, out = tmp / "src", tmp / "out"
    cls = _png_folder(src)
    Image.new("L", (1200, 1100), 7).save(cls / "huge.png")
    ctx.monkeypatch.setenv("LVMMED_MAX_PIXELS_PER_FRAME", "1000000")  # configurable limit, inherited by workers

    def check():
        assert _manifest_total(out) == 2
        assert "max_pixels_per_frame" in _failure(out, "huge.png")["reason"]

    return Probe(_data_prep(), _convert(src, out, "images", "max_failure_fraction=1.0"), check=check)


def nifti_zero_voxel(tmp: Path, ctx) -> Probe:
    import nibabel as nib

    src, out = _nifti_folder(tmp / "src"), tmp / "out"
    img = nib.load(src / "good.nii")
    header = img.header.copy()  # zero voxel size along x: pixdim 0 and an sform with a zero column
    header["qform_code"], header["sform_code"] = 0, 1
    header["srow_x"] = [0, 0, 0, -32]
    header["pixdim"][1] = 0
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), None, header), src / "flat.nii")

    def check():
        assert _manifest_total(out) >= 1
        assert "singular affine / zero voxel size" in _failure(out, "flat.nii")["reason"]

    return Probe(_data_prep(), _convert(src, out, "nifti", "max_failure_fraction=1.0"), check=check)


def nifti_unquoted_glob(tmp: Path, ctx) -> Probe:
    src, out = _nifti_folder(tmp / "src"), tmp / "out"
    return Probe(_data_prep(), _convert(src, out, "nifti", "exclude_glob=*_seg.nii.gz"),
                 check=lambda: _manifest_total(out) >= 1)  # fmt: skip


def _tar_case(member: tarfile.TarInfo, data: bytes = b"x") -> Callable:
    def build(tmp: Path, ctx) -> Probe:
        archive = _tar_with(tmp / "upload.tar", member, data)
        out = tmp / "sub" / "out"
        out.parent.mkdir()

        def check():
            assert not (tmp / "escaped").exists() and not (tmp / "sub" / "escaped").exists()
            assert not Path("/tmp/h15-absolute-escape").exists()
            assert archive.is_file()  # the input is untouched

        return Probe(_data_prep(), _convert(archive, out, "dicom"), check=check)

    return build


def _symlink_member() -> tarfile.TarInfo:
    info = tarfile.TarInfo("study/link.dcm")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return info


def empty_set(tmp: Path, ctx) -> Probe:
    src, out = tmp / "src", tmp / "out"
    (src / "tissue").mkdir(parents=True)
    (src / "tissue" / "notes.png").write_text("not an image")

    def check():
        assert not (out / "manifest.json").exists()
        assert (out / "failures.json").is_file()
        from data_prep.verify import verify_shards

        assert not verify_shards(out).ok

    return Probe(_data_prep(), _convert(src, out, "images"), check=check)


def verify_empty_manifest(tmp: Path, ctx) -> Probe:
    out = tmp / "set"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"name": "x", "shards": [], "counts": {"total": 0}}))
    return Probe(_data_prep(), ["verify", out])


def flipped_shard_byte(tmp: Path, ctx) -> Probe:
    shards = ctx.shard_copy("flipped")
    tar = shards / "train-000000.tar"
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tar.write_bytes(bytes(data))
    return Probe(_data_prep(), ["verify", shards], check=lambda: (shards / "val-000000.tar").is_file())


def readonly_out(tmp: Path, ctx) -> Probe:
    src, out = tmp / "src", tmp / "ro" / "out"
    _good_dicom(src)
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *a, **kw):  # root ignores chmod 0o555, so the read-only file system is simulated here
        if str(self).startswith(str(tmp / "ro")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *a, **kw)

    ctx.monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    return Probe(_data_prep(), _convert(src, out, "dicom"), check=lambda: (src / "good.dcm").is_file())


def _weights_file(kind: str) -> Callable:
    def build(tmp: Path, ctx) -> Probe:
        path = tmp / ("w.safetensors" if "safetensors" in kind else "w.pth")
        if kind == "text":
            path.write_text("this is not a checkpoint, just text\n" * 10)
        elif kind == "zero":
            path.write_bytes(b"")
        elif kind == "truncated-safetensors":
            import torch
            from safetensors.torch import save_file

            save_file({"w": torch.arange(4096, dtype=torch.float32)}, str(path))
            path.write_bytes(path.read_bytes()[:2000])
        return Probe(_weights(), ["inspect", path], check=lambda: path.is_file())

    return build


class _Reducer:
    """Pickles as a call that would create a marker file when unpickled (it never must be)."""

    marker = ""

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def malicious_pickle(tmp: Path, ctx) -> Probe:
    import torch

    marker = tmp / "pwned"
    evil = _Reducer()
    evil.marker = str(marker)
    torch.save({"weight": torch.zeros(2), "payload": evil}, tmp / "evil.pth")
    return Probe(_weights(), ["inspect", tmp / "evil.pth"], check=lambda: (not marker.exists()) or pytest.fail("ran"))


def bad_yaml_config(tmp: Path, ctx) -> Probe:
    (tmp / "bad.yaml").write_text("data:\n  shards: [unclosed\n  - *alias\n")
    from pretrain.__main__ import main

    return Probe(main, ["--config", tmp / "bad.yaml", "--print-config"])


def unquoted_glob_override(tmp: Path, ctx) -> Probe:
    from pretrain.__main__ import main

    return Probe(main, ["output_dir=*run", "--print-config"])


CASES = [
    # id, builder, exit status, message fragment (stdout + stderr)
    ("dicom-rle-bomb", dicom_bomb, 0, "max_pixels_per_frame"),
    ("dicom-zero-byte", dicom_zero_byte, 0, "empty.dcm"),
    ("png-truncated-and-text-renamed", png_truncated_and_text, 0, "notes.png"),
    ("png-over-decode-limit", png_over_limit, 0, "max_pixels_per_frame"),
    ("nifti-zero-voxel-size", nifti_zero_voxel, 0, "singular affine / zero voxel size"),
    ("unquoted-glob-override-data-prep", nifti_unquoted_glob, 0, "samples"),
    ("tar-symlink-member", _tar_case(_symlink_member()), 2, "link.dcm"),
    ("tar-dotdot-member", _tar_case(tarfile.TarInfo("../escaped")), 2, "escaped"),
    ("tar-absolute-member", _tar_case(tarfile.TarInfo("/tmp/h15-absolute-escape")), 2, "h15-absolute-escape"),
    ("conversion-writes-nothing", empty_set, 1, "no samples"),
    ("verify-empty-set", verify_empty_manifest, 1, "empty"),
    ("flipped-shard-byte", flipped_shard_byte, 1, "train-000000.tar: sha256 differs"),
    ("read-only-out", readonly_out, 1, "read-only file system"),
    ("weights-text-file", _weights_file("text"), 1, "not a torch checkpoint"),
    ("weights-zero-byte", _weights_file("zero"), 1, "empty (0 bytes)"),
    ("weights-truncated-safetensors", _weights_file("truncated-safetensors"), 1, "truncated"),
    ("pickle-with-reduce", malicious_pickle, 1, "weights_only"),
    ("malformed-yaml-config", bad_yaml_config, 2, "not valid YAML"),
    ("unquoted-glob-override-pretrain", unquoted_glob_override, 0, "output_dir: '*run'"),
]


@dataclass
class Context:
    monkeypatch: pytest.MonkeyPatch
    shard_copy: Callable[[str], Path]


@pytest.mark.parametrize(("builder", "code", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_probe(builder, code, fragment, tmp_path, monkeypatch, shard_copy, run_cli_inprocess):
    probe = builder(tmp_path, Context(monkeypatch, shard_copy))
    outcome = run_cli_inprocess(probe.main, probe.argv, probe.prog)
    assert outcome.code == code, outcome.text[-3000:]
    assert fragment in outcome.text, outcome.text[-3000:]
    assert "Traceback" not in outcome.err and "KeyError" not in outcome.err, outcome.err[-3000:]
    probe.check()
