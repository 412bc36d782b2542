"""NIfTI volumes with label maps and 2-D image folders (classes, pairs, flat + CSV) → shards."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from data_prep.bundled import tissue_labels
from data_prep.verify import verify_shards
from lvmmed.data import processing, samples
from lvmmed.data.readers import ImageRecord, read_nifti
from lvmmed.data.shards import load_arrays, load_manifest


@pytest.fixture(scope="module")
def nifti_src(tmp_path_factory):
    """MNI152 T1 + its derived tissue label map, nibabel's EPI (4-D) and T1, and a label on the wrong grid."""
    root = tmp_path_factory.mktemp("nifti_src")
    (root / "mni").mkdir()
    shutil.copy(samples.path("mni152_t1"), root / "mni" / "brain.nii.gz")
    gm, wm = (nib.load(samples.path(n)) for n in ("mni152_gm", "mni152_wm"))
    labels = tissue_labels(np.asarray(gm.dataobj) / 255.0, np.asarray(wm.dataobj) / 255.0)
    nib.save(nib.Nifti1Image(labels, gm.affine), root / "mni" / "brain_seg.nii.gz")
    shutil.copy(samples.path("epi_4d"), root / "epi.nii.gz")
    shutil.copy(samples.path("t1_anatomical"), root / "anat_bad.nii")
    shutil.copy(root / "mni" / "brain_seg.nii.gz", root / "anat_bad_seg.nii.gz")  # other grid: must be refused
    return root


def test_nifti_with_labels_round_trip(nifti_src, tmp_path, convert_folder, failures_of):
    out = tmp_path / "nii"
    overrides = dict(modality="MR", label_pattern="{stem}_seg.nii.gz", slice_step=20, image_size=32, name="nii")
    result = convert_folder(nifti_src, out, "nifti", **overrides, mask_labels=["background", "csf", "gm", "wm"])
    assert verify_shards(out).ok
    failures = failures_of(out)
    assert list(failures) == ["anat_bad.nii"] and "label grid differs" in failures["anat_bad.nii"]["reason"]
    rows = load_arrays(out)
    brain = [r for r in rows if r["mask"] is not None]
    epi = [r for r in rows if r["mask"] is None]
    assert brain and epi and result.manifest["mask_labels"] == ["background", "csf", "gm", "wm"]
    record = read_nifti(nifti_src / "mni" / "brain.nii.gz", nifti_src / "mni" / "brain_seg.nii.gz", modality="MR")
    normalized, _ = processing.normalize_intensity(record.array, "MR")
    items = processing.iter_slices(
        ImageRecord(normalized, "volume", record.meta, {}, mask=record.mask), axes=(2,), min_foreground=0.02, step=20
    )
    expected = {it.index: it for it in items}
    assert sorted(expected) == sorted(r["meta"]["slice_index"] for r in brain)
    for r in brain:
        it = expected[r["meta"]["slice_index"]]
        np.testing.assert_array_equal(r["image"], processing.resize(it.image2d, 32).astype(np.float16))
        np.testing.assert_array_equal(r["mask"], processing.resize(it.mask2d, 32, is_mask=True))
    assert {v for r in brain for v in np.unique(r["mask"]).tolist()} == {0, 1, 2, 3}


@pytest.fixture(scope="module")
def photo_tiles():
    """Real fundus and histology crops (uint8 RGB)."""
    from lvmmed.data.readers import load_image

    retina, ihc = load_image(samples.path("retina")), load_image(samples.path("ihc"))
    fundus = [retina[400 + 100 * i : 528 + 100 * i, 500:628] for i in range(4)]
    histo = [ihc[128 * i : 128 * (i + 1), 0:128] for i in range(4)]
    return fundus, histo


def test_image_folder_classes(photo_tiles, tmp_path, convert_folder):
    src = tmp_path / "src"
    for cls, tiles in zip(("fundus", "histology"), photo_tiles):
        (src / cls).mkdir(parents=True)
        for i, tile in enumerate(tiles):
            Image.fromarray(tile).save(src / cls / f"{cls}_{i}.png")
    out = tmp_path / "out"
    convert_folder(src, out, "images", image_size=32, modality="FUNDUS", name="photos")
    manifest = load_manifest(out)
    assert manifest.label_names == ["fundus", "histology"]
    rows = load_arrays(out)
    assert len(rows) == 8 and all(r["image"].shape == (32, 32, 3) for r in rows)
    for r in rows:
        assert manifest.label_names[r["meta"]["label"]] == r["meta"]["label_name"]
    tile0 = [r for r in rows if r["meta"]["label_name"] == "fundus"]
    assert any(
        np.array_equal(r["image"], processing.resize(photo_tiles[0][k] / np.float32(255), 32).astype(np.float16))
        for r in tile0
        for k in range(4)
    )


def test_image_folder_pairs_and_flat_csv(photo_tiles, tmp_path, convert_folder):
    src = tmp_path / "pairs"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    for i, tile in enumerate(photo_tiles[1]):
        Image.fromarray(tile).save(src / "images" / f"t{i}.png")
        dark = (tile.mean(axis=-1) < 150).astype(np.uint8) * 255  # stained region, saved as a 0/255 PNG
        Image.fromarray(dark).save(src / "masks" / f"t{i}.png")
    out = tmp_path / "pairs_out"
    convert_folder(src, out, "images", image_size=32, modality="PATH", mask_labels=["background", "stain"])
    rows = load_arrays(out)
    assert len(rows) == 4 and all(set(np.unique(r["mask"]).tolist()) <= {0, 1} for r in rows)
    assert any(r["mask"].any() for r in rows)

    flat = tmp_path / "flat"
    flat.mkdir()
    lines = ["file,label,patient"]
    for i, tile in enumerate(photo_tiles[0] + photo_tiles[1]):
        Image.fromarray(tile).save(flat / f"img{i}.png")
        lines.append(f"img{i}.png,{'fundus' if i < 4 else 'histology'},p{i % 3}")
    (flat / "labels.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "flat_out"
    convert_folder(flat, out, "images", image_size=32, labels="labels.csv", patient_from="labels")
    rows = load_arrays(out)
    assert len(rows) == 8 and {r["meta"]["label_name"] for r in rows} == {"fundus", "histology"}
    patients = {r["meta"]["patient"]: r["meta"]["split"] for r in rows}
    assert len(patients) == 3  # three CSV patients, each in one split
    for r in rows:
        assert patients[r["meta"]["patient"]] == r["meta"]["split"]
