"""Small "own dataset" trees with real pixels from packaged images, and their shard sets built by data_prep.

* :func:`classification_tree`: a flat folder of PNG tiles + ``labels.csv`` (``file,label,patient``): fundus crops
  (``lvmmed.data.samples`` retina) vs immunohistochemistry crops (ihc), two tiles per patient, one class per
  patient: the layout of a release with a labels CSV (BUSI-like after flattening).
* :func:`mask_tree`: ``images/`` + ``masks/`` PNG pairs: each tile with its stained/dark region as a 0/255 mask.
* :func:`write_multilabel_set`: a multi-label shard set written with data_prep's sample encoder and shard
  writer (``meta.labels`` multi-hot over ``fundus``, ``histology``, ``bright``).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from lvmmed.data import samples


@lru_cache(maxsize=1)
def tiles() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Real 96-px RGB crops: 16 from the fundus photograph and 16 from the IHC slide."""
    from lvmmed.data.readers import load_image

    retina, ihc = load_image(samples.path("retina")), load_image(samples.path("ihc"))
    fundus = [retina[350 + 90 * (i // 4) : 446 + 90 * (i // 4), 420 + 110 * (i % 4) : 516 + 110 * (i % 4)]
              for i in range(16)]  # fmt: skip
    histo = [ihc[96 * (i // 4) + 40 : 96 * (i // 4) + 136, 96 * (i % 4) + 60 : 96 * (i % 4) + 156] for i in range(16)]
    return fundus, histo


def classification_tree(root: Path, per_class: int = 12, per_patient: int = 2, offset: int = 0) -> Path:
    """Flat folder + ``labels.csv`` (file,label,patient); every patient has ``per_patient`` tiles of one class
    (tiles ``offset`` .. ``offset + per_class`` of each source image)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["file,label,patient"]
    for cls, items in zip(("fundus", "histology"), tiles()):
        for i, tile in enumerate(items[offset : offset + per_class]):
            name = f"{cls}_{i:02d}.png"
            Image.fromarray(np.ascontiguousarray(tile)).save(root / name)
            lines.append(f"{name},{cls},{cls[:2]}{i // per_patient:02d}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def mask_tree(root: Path, n: int = 16) -> Path:
    """``images/`` + ``masks/``: each tile's dark (stained or vessel) region, luma below the tile's 35th percentile."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    fundus, histo = tiles()
    for i, tile in enumerate((histo + fundus)[:n]):
        luma = tile[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        mask = (luma < np.percentile(luma, 35)).astype(np.uint8) * 255
        Image.fromarray(np.ascontiguousarray(tile)).save(root / "images" / f"t{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"t{i:02d}.png")
    return root


def convert(src: Path, out: Path, *overrides: str, labels: str = "") -> Path:
    """``python -m data_prep convert --format images --src SRC --out OUT [--labels CSV] key=value...`` in-process."""
    from data_prep.cli import main

    argv = [
        "convert",
        "--format",
        "images",
        "--src",
        str(src),
        "--out",
        str(out),
        *(["--labels", str(src / labels)] if labels else []),
    ]
    code = main([*argv, "workers=1", *overrides])
    assert code == 0, f"data_prep convert exited {code}"
    return out


def write_multilabel_set(out: Path, size: int = 32) -> Path:
    """A multi-label shard set: labels ``fundus``, ``histology``, ``bright`` (tile mean above the median)."""
    import torch
    import torch.nn.functional as F

    from data_prep.encode import make_sample
    from data_prep.manifest import build_manifest, write_manifest
    from data_prep.writer import ShardSetWriter

    fundus, histo = tiles()
    items = [(t, 0) for t in fundus] + [(t, 1) for t in histo]
    means = [float(t.mean()) for t, _ in items]
    median = float(np.median(means))
    writer = ShardSetWriter(out, fingerprint="multilabel-fixture", maxcount=16)
    for i, ((tile, source), mean) in enumerate(zip(items, means)):
        image = torch.from_numpy(tile.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True)[0].permute(1, 2, 0).numpy()
        labels = [int(source == 0), int(source == 1), int(mean > median)]
        patient = hashlib.sha256(f"ml-{i // 2}".encode()).hexdigest()[:16]
        split = ("train", "train", "train", "val", "test")[int(patient, 16) % 5]
        official = "test" if (i // 2) % 4 == 3 else "train"  # the "release's" own split, by patient
        meta = {"dataset": "multilabel", "patient": patient, "group": patient, "labels": labels, "modality": "OT",
                "official_split": official, "center": f"site{(i // 2) % 2}",
                "label_name": "|".join(n for n, v in zip(("fundus", "histology", "bright"), labels) if v)}  # fmt: skip
        writer.write(make_sample(f"s{i:03d}", split, image, meta))
    shards = writer.close()
    manifest = build_manifest("multilabel", shards, {"fixture": True}, "test fixture (retina + ihc tiles)", "OT",
                              label_names=["fundus", "histology", "bright"])  # fmt: skip
    write_manifest(out, manifest)
    return out
