"""2-D image folders built in tmp from real scikit-image photos (fundus ``retina.jpg``, histology ``ihc.png``)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lvmmed.data import samples
from lvmmed.data.readers import ReaderError, read_image_folder

pytestmark = pytest.mark.skipif(not samples.is_available("ihc"), reason="scikit-image data not installed")


def crops(name, n=3, size=96):
    """``n`` real RGB crops from a bundled photo (downsized so tests stay fast)."""
    with Image.open(samples.path(name)) as img:
        img = img.convert("RGB").resize((384, 384), Image.Resampling.BOX)
        array = np.asarray(img)
    return [array[40 + 80 * i : 40 + 80 * i + size, 100 : 100 + size].copy() for i in range(n)]


def stain_mask(rgb):
    """A real binary mask: DAB-brown-ish pixels of the IHC crop (red clearly above blue)."""
    return (rgb[..., 0].astype(int) - rgb[..., 2].astype(int) > 15).astype(np.uint8)


@pytest.fixture
def class_folder(tmp_path):
    root = tmp_path / "classes"
    written = {}
    for cls, name in (("fundus", "retina"), ("histology", "ihc")):
        (root / cls).mkdir(parents=True)
        for i, crop in enumerate(crops(name)):
            Image.fromarray(crop).save(root / cls / f"{name}_{i}.png")
            written[(cls, i)] = crop
    (root / "fundus" / "notes.txt").write_text("ignored: not an image")
    return root, written


@pytest.fixture
def pair_folder(tmp_path):
    root = tmp_path / "pairs"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    written = {}
    for i, crop in enumerate(crops("ihc")):
        mask = stain_mask(crop)
        assert 0 < mask.mean() < 1
        Image.fromarray(crop).save(root / "images" / f"case{i}.png")
        Image.fromarray(mask * 255).save(root / "masks" / f"case{i}.png")  # the usual 0/255 mask PNG
        written[f"case{i}"] = (crop, mask)
    return root, written


@pytest.mark.parametrize("layout", ["auto", "classes"])
def test_class_per_subfolder(class_folder, layout):
    root, written = class_folder
    records = read_image_folder(root, layout=layout, modality="ot")
    assert len(records) == 6
    assert {(r.label, r.meta["label_name"]) for r in records} == {(0, "fundus"), (1, "histology")}
    for r in records:
        index = int(r.meta["source"].rsplit("_", 1)[-1].split(".")[0])
        np.testing.assert_array_equal(r.array, written[(r.meta["label_name"], index)])  # PNG is lossless
        assert r.kind == "image2d" and r.array.shape == (96, 96, 3) and r.is_color
        assert r.meta["class_names"] == ["fundus", "histology"] and r.meta["modality"] == "OT"


@pytest.mark.parametrize("layout", ["auto", "pairs"])
def test_image_mask_pairs(pair_folder, layout):
    root, written = pair_folder
    records = read_image_folder(root, layout=layout)
    assert len(records) == 3
    for r in records:
        crop, mask = written[r.meta["source"].rsplit("/", 1)[-1].split(".")[0]]
        np.testing.assert_array_equal(r.array, crop)
        np.testing.assert_array_equal(r.mask, mask)  # 0/255 mapped to 0/1
        assert r.mask.dtype == np.uint8 and r.label is None


def test_grey_images_stay_2d(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for cls, crop in zip("ab", crops("retina", n=2)):
        Image.fromarray(crop).convert("L").save(tmp_path / cls / "x.png")
    records = read_image_folder(tmp_path)
    assert [r.array.ndim for r in records] == [2, 2] and not records[0].is_color


def test_missing_mask_and_shape_mismatch(pair_folder):
    root, _ = pair_folder
    (root / "masks" / "case1.png").unlink()
    with pytest.raises(ReaderError, match="case1"):
        read_image_folder(root, layout="pairs")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / "case1.png")
    with pytest.raises(ReaderError, match=r"mask shape \(10, 10\)"):
        read_image_folder(root, layout="pairs")


def test_corrupt_constant_and_empty_inputs(class_folder, tmp_path):
    root, _ = class_folder
    good = (root / "histology" / "ihc_0.png").read_bytes()
    (root / "histology" / "ihc_0.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ReaderError, match=r"ihc_0\.png"):
        read_image_folder(root)
    Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(root / "histology" / "ihc_0.png")
    with pytest.raises(ReaderError, match="constant"):
        read_image_folder(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReaderError, match="neither"):
        read_image_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="layout"):
        read_image_folder(root, layout="grid")
