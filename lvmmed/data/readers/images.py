"""Folders of 2-D PNG/JPEG/TIFF images (fundus, histology, endoscopy, ...) read with PIL.

Two layouts:

* ``"classes"``: ``root/<class name>/<image>``; classes are sorted by name and ``label`` is the class index
  (``meta["label_name"]`` holds the name, ``meta["class_names"]`` the full list).
* ``"pairs"``: ``root/images/<stem>.<ext>`` with ``root/masks/<stem>.<ext>``; a mask saved as 0/255 is mapped
  to 0/1 (the usual binary-mask PNG convention), other masks keep their integer values.

``"auto"`` picks ``"pairs"`` when ``images/`` and ``masks/`` exist, else ``"classes"`` when ``root`` has
sub-folders with images. EXIF orientation is applied (``ImageOps.exif_transpose``). Grey images stay (H, W),
everything else becomes uint8 RGB (H, W, 3); 16-bit grey PNGs keep their dtype.

Decode limits (:mod:`lvmmed.data.readers.limits`): the header's size is checked before the pixels are decoded
(``Image.open`` reads only the header; ``load`` decodes), and Pillow's own decompression-bomb guard stays on
(``Image.DecompressionBombError`` and its warning are both turned into a per-file failure).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lvmmed.data.readers.limits import DecodeLimits, resolve_limits
from lvmmed.data.readers.record import ImageRecord, ReaderError, check_not_constant

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LAYOUTS = ("auto", "classes", "pairs")


def _files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith(".")
    )


def load_image(path: str | Path, as_mask: bool = False, limits: DecodeLimits | None = None) -> np.ndarray:
    """Loads one image as (H, W) grey or (H, W, 3) uint8 RGB; masks as an integer (H, W) array.

    Raises:
        ReaderError: unreadable, truncated or not an image, or its declared size is over a decode limit.
    """
    limits = resolve_limits(limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                frames = int(getattr(img, "n_frames", 1) or 1)
                limits.check(path, height, width, 1, max(1, len(img.getbands())) * (2 if "16" in img.mode else 1))
                if frames > limits.max_frames:
                    raise ReaderError(path, f"declares {frames} frames, over the decode limit max_frames")
                img = ImageOps.exif_transpose(img)
                if as_mask:
                    arr = np.asarray(img.convert("L") if img.mode in ("RGB", "RGBA", "LA") else img)
                elif img.mode in ("L", "I;16", "I;16B", "I", "F"):
                    arr = np.asarray(img)
                else:
                    arr = np.asarray(img.convert("RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ReaderError(path, f"over Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS): {err}") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ReaderError(path, f"not a readable image: {type(err).__name__}: {err}") from err
    if as_mask:
        values = np.unique(arr)
        if set(values.tolist()) <= {0, 255}:
            arr = arr // 255
        return arr.astype(np.uint8 if arr.max() < 256 else np.int32)
    return arr


def detect_layout(root: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> str:
    """``"pairs"`` or ``"classes"`` for a folder, or :class:`ReaderError` if neither fits."""
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "pairs"
    if any(d.is_dir() and _files(d, extensions) for d in root.iterdir()):
        return "classes"
    raise ReaderError(root, "neither images/ + masks/ nor class sub-folders with images found")


def read_image_folder(
    root: str | Path, layout: str = "auto", modality: str = "OT", extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> list[ImageRecord]:
    """Reads a folder of 2-D images into ``"image2d"`` records.

    Args:
        root: The folder.
        layout: ``"auto"``, ``"classes"`` or ``"pairs"`` (see the module docstring).
        modality: Modality code stored in ``meta`` (e.g. ``"FUNDUS"``, ``"PATH"``, ``"ES"``).
        extensions: File suffixes treated as images (lower case).

    Raises:
        ReaderError: unknown layout, empty folder, unreadable or constant image, missing or misaligned mask.
    """
    root = Path(root)
    if not root.is_dir():
        raise ReaderError(root, "not a directory")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    layout = detect_layout(root, extensions) if layout == "auto" else layout
    records = []
    if layout == "classes":
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        for index, name in enumerate(classes):
            for file in _files(root / name, extensions):
                records.append(_record(file, modality, label=index, label_name=name, class_names=classes))
    else:
        masks = {p.stem: p for p in _files(root / "masks", extensions)}
        for file in _files(root / "images", extensions):
            if file.stem not in masks:
                raise ReaderError(file, f"no mask with stem '{file.stem}' in {root / 'masks'}")
            records.append(_record(file, modality, mask_path=masks[file.stem]))
    if not records:
        raise ReaderError(root, f"no images with extensions {extensions} in layout '{layout}'")
    return records


def _record(file: Path, modality: str, mask_path: Path | None = None, **label) -> ImageRecord:
    array = load_image(file)
    check_not_constant(array, file)
    meta = {
        "modality": modality.upper(),
        "source": str(file),
        "photometric": "RGB" if array.ndim == 3 else "MONOCHROME2",
        "rescaled_to_hu": False,
        "spacing": None,
    }
    mask = None
    if mask_path is not None:
        mask = load_image(mask_path, as_mask=True)
        if mask.shape != array.shape[:2]:
            raise ReaderError(mask_path, f"mask shape {mask.shape} != image shape {array.shape[:2]} of {file}")
        meta["mask_source"] = str(mask_path)
    if label:
        meta["label_name"] = label["label_name"]
        meta["class_names"] = label["class_names"]
    return ImageRecord(array, "image2d", meta, {}, mask=mask, label=label.get("label"))
