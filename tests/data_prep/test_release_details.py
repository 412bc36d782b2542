"""What the release descriptions promise beyond counts: merged masks, label codes, multi-hot labels, official
splits, the plan and --dry-run on the command line, missing masks in the exit status, and refused CSVs."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.cli import main
from data_prep.convert import convert
from lvmmed.config import ConfigError
from lvmmed.data.shards import load_arrays, load_manifest
from tests.data_prep.release_trees import TREES, build_tree
from tests.data_prep.test_release_trees import _config


def _convert(name, tmp_path, **extra):
    src = build_tree(tmp_path / "src", TREES[name])
    out = tmp_path / "out"
    convert(src, out, _config(name, **extra), progress=False, catalog_name=name)
    return src, out, load_arrays(out)


def test_montgomery_left_and_right_masks_merge_into_one_label_map(tmp_path):
    _, out, rows = _convert("montgomery", tmp_path, image_size=0)
    assert load_manifest(out).data["mask_labels"] == ["background", "left lung", "right lung"]
    values = [set(np.unique(r["mask"]).tolist()) for r in rows]
    assert all(v <= {0, 1, 2} for v in values) and {0, 1, 2} in values  # left lung 1, right lung 2
    busi_rows = _convert("busi", tmp_path / "busi", image_size=0)[2]
    assert all(set(np.unique(r["mask"]).tolist()) <= {0, 1} for r in busi_rows)  # _mask + _mask_1: union


def test_mmwhs_label_codes_become_label_indices(tmp_path):
    _, _, rows = _convert("mmwhs_ct", tmp_path, image_size=0, slice_step=2)
    masked = [r for r in rows if r["mask"] is not None]
    assert len({r["meta"]["source_index"] for r in masked}) == 2
    assert {v for r in masked for v in np.unique(r["mask"]).tolist()} <= {0, 1, 2}
    assert any(r["mask"].max() > 0 for r in masked)


def test_chestxray14_multi_label_is_multi_hot_and_patients_come_from_the_csv(tmp_path):
    _, out, rows = _convert("chestxray14", tmp_path)
    names = load_manifest(out).label_names
    assert names == ["Cardiomegaly", "Effusion", "Emphysema", "Mass", "No Finding"]
    by_name = {r["meta"]["label_name"]: r["meta"] for r in rows}
    assert by_name["Cardiomegaly|Emphysema"]["labels"] == [1, 0, 1, 0, 0]
    assert by_name["Cardiomegaly|Emphysema"]["label"] is None and by_name["No Finding"]["label"] == 4
    # patient 1 has two images: one pseudonym, one split
    assert by_name["Cardiomegaly"]["patient"] == by_name["Cardiomegaly|Emphysema"]["patient"]


def test_split_method_official_keeps_the_release_split(tmp_path):
    _, _, rows = _convert("brain_tumor_mri", tmp_path, split_method="official")
    for r in rows:
        if r["meta"]["official_split"] == "test":
            assert r["meta"]["split"] == "test"
        else:
            assert r["meta"]["split"] in ("train", "val")
    assert {r["meta"]["split"] for r in rows} == {"train", "val", "test"}
    src = build_tree(tmp_path / "k", TREES["kvasir"])  # no official split in this release
    with pytest.raises(ConfigError, match="no official split"):
        convert(src, tmp_path / "k_out", _config("kvasir", split_method="official"), progress=False,
                catalog_name="kvasir")  # fmt: skip


def test_cli_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    src = build_tree(tmp_path / "busi", TREES["busi"])
    out = tmp_path / "shards"
    argv = ["convert", "busi", "--src", str(src), "--out", str(out), "--quiet", "--workers", "1", "image_size=16"]
    assert main([*argv, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    assert "inputs:  6" in text and "6 paired, 1 missing" in text and "benign 2, malignant 2, normal 2" in text
    assert "patients: 6" in text and "dry run" in text
    # a converted run: 1 of 7 images lost its mask -> 14% > max_failure_fraction 10% -> exit 1, stated
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "missing_mask 1" in captured.out and "max_failure_fraction" in captured.err
    error_lines = [line for line in captured.err.splitlines() if "error:" in line]  # the one-line error contract
    assert len(error_lines) == 1 and error_lines[0].startswith("python -m data_prep: error: 14.3% of inputs failed")
    assert "failures.json" in error_lines[0]
    assert main([*argv, "--overwrite", "encoding=[png]"]) == 2  # a list where a string belongs: one line, exit 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert main([*argv, "--overwrite", "max_failure_fraction=0.5"]) == 0


def test_a_labels_csv_for_dicom_is_an_error(tmp_path, capsys):
    src = build_tree(tmp_path / "tcia", TREES["tcga_kirc"])
    (src / "labels.csv").write_text("file,label\n1-1.dcm,a\n")
    labels = str(src / "labels.csv")
    argv = ["convert", "tcga_kirc", "--src", str(src), "--out", str(tmp_path / "o"), "--labels", labels]
    assert main(argv) == 2
    assert "labels CSV cannot be used with DICOM" in capsys.readouterr().err
    assert main(["convert", "--format", "dicom", *argv[2:]]) == 2


def test_folder_keys_are_refused_for_a_catalog_entry(tmp_path, capsys):
    src = build_tree(tmp_path / "busi", TREES["busi"])
    assert main(["convert", "busi", "--src", str(src), "--out", str(tmp_path / "o"), "layout=pairs"]) == 2
    assert "layout" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_layout_error_names_the_release_pattern(tmp_path, capsys):
    (tmp_path / "Dataset_BUSI_with_GT").mkdir()
    (tmp_path / "Dataset_BUSI_with_GT" / "readme.txt").write_text("x")
    assert main(["convert", "busi", "--src", str(tmp_path), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "expected layout: Dataset_BUSI_with_GT/<class>" in err and "Dataset_BUSI_with_GT/" in err
