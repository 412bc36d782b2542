"""Catalog entries, layout errors and the command line (list, convert NAME, convert --format, bundled)."""

from __future__ import annotations

import shutil

import nibabel as nib
import pytest

from data_prep.catalog import CATALOG, LayoutError, check_layout, get_entry
from data_prep.cli import main
from data_prep.convert import resolve_config
from lvmmed.config import ConfigError
from lvmmed.data import samples
from lvmmed.data.shards import load_arrays, load_manifest


def test_catalog_covers_lvmmed_folders_and_configs_are_valid(capsys):
    assert len(CATALOG) >= 55
    assert sum(1 for e in CATALOG.values() if e.lvmmed_folder) == 49
    for entry in CATALOG.values():
        cfg = resolve_config(entry.config)
        assert cfg.format == entry.format and entry.licence and entry.homepage.startswith("http")
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "kits19" in text and "brats2018" in text and "entries" in text


def test_wrong_layout_gives_the_expected_layout(tmp_path, capsys):
    (tmp_path / "random.txt").write_text("x")
    with pytest.raises(LayoutError) as err:
        check_layout(get_entry("kits19"), tmp_path)
    message = str(err.value)
    assert "case_<nnnnn>/imaging.nii.gz" in message and "random.txt" in message and "missing" in message
    code = main(["convert", "kits19", "--src", str(tmp_path), "--out", str(tmp_path / "out")])
    assert code == 2 and "expected layout" in capsys.readouterr().err
    with pytest.raises(LayoutError, match="Did you mean kits19"):
        get_entry("kits-2019")


def test_convert_catalog_entry_from_cli(tmp_path, capsys):
    src = tmp_path / "kits"
    for case, name in (("case_00000", "mni152_t1"), ("case_00001", "t1_anatomical")):
        (src / case).mkdir(parents=True)
        image = nib.load(samples.path(name))
        nib.save(image, src / case / "imaging.nii.gz")
    shutil.copy(samples.path("mni152_gm"), src / "case_00000" / "segmentation.nii.gz")  # a real map on its grid
    out = tmp_path / "shards"
    argv = ["convert", "kits19", "--src", str(src), "--out", str(out), "--quiet", "--workers", "1"]
    assert main([*argv, "image_size=16", "slice_step=10", "modality=MR"]) == 0
    manifest = load_manifest(out)
    assert manifest.name == "kits19" and manifest.data["config"]["ct_window"] == "wide"
    assert "kits19" in manifest.data["source"]
    rows = load_arrays(out)
    assert len({r["meta"]["patient"] for r in rows}) == 2  # patient_from=parent: one per case folder
    assert any(r["mask"] is not None for r in rows) and any(r["mask"] is None for r in rows)


def test_convert_needs_name_or_format_and_rejects_unknown_keys(tmp_path):
    with pytest.raises(ConfigError):
        resolve_config(None, None, ["no_such_key=1"])
    assert main(["convert", "--src", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert main(["convert", "--format", "nifti", "--src", str(tmp_path), "--out", str(tmp_path / "o"), "x=1"]) == 2


def test_yaml_config_and_overrides(tmp_path):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("image_size: 48\naxes: [0, 2]\nmodality: MR\n")
    cfg = resolve_config({"image_size": 64, "organ": "brain"}, yaml, ["axes=[1]"])
    assert (cfg.image_size, cfg.axes, cfg.organ, cfg.modality) == (48, [1], "brain", "MR")


def test_shipped_yaml_configs_load():
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[2] / "configs" / "data_prep").glob("*.yaml"))
    assert len(files) >= 4
    for file in files:
        resolve_config(None, file)
