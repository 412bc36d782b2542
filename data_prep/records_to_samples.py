"""Where data_prep's config meets :mod:`lvmmed.data.processing` and :mod:`lvmmed.data.deid`.

The processing functions live in the library (shared with training and tests); this module only maps
:class:`~data_prep.config.ConvertConfig` fields onto their arguments, and turns an
:class:`~lvmmed.data.readers.ImageRecord` into shard samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import numpy as np

from lvmmed.data import deid, processing
from lvmmed.data.readers import ImageRecord

from .encode import apply_channels, make_sample
from .writer import EncodedSample


@lru_cache(maxsize=4)
def _salt(salt_file: str) -> str:
    return deid.load_salt(salt_file or None)


def _cfg_salt(cfg: dict[str, Any]) -> str:
    """``cfg["public_salt"]`` (bundled public data only: a fixed, documented salt) or the private machine salt."""
    return str(cfg.get("public_salt") or "") or _salt(str(cfg.get("salt_file", "")))


def pseudonym(value: str, cfg: dict[str, Any]) -> str:
    """Salted (HMAC-SHA256) pseudonym of an identifier; the salt never enters the config or the shards."""
    return deid.pseudonym(value, _cfg_salt(cfg))


def identity_hashes(record: ImageRecord, cfg: dict[str, Any]) -> dict[str, str]:
    """``{"patient", "volume"}`` pseudonyms of a record (PatientID, else name+birth date, else study/series)."""
    return deid.identity_hashes(record, _cfg_salt(cfg))


def normalize(array: np.ndarray, modality: str, cfg: dict[str, Any]) -> tuple[np.ndarray, list[float]]:
    """Modality-aware scaling to [0, 1] (CT: ``ct_window`` preset, default ``wide``; else ``percentiles``)."""
    window = cfg.get("ct_window") or None if modality.upper() == "CT" else None
    out, (low, high) = processing.normalize_intensity(
        array, modality, window=window, percentiles=tuple(cfg.get("percentiles", (0.5, 99.5)))
    )
    return out, [float(low), float(high)]


def resize(image: np.ndarray, size: int, is_mask: bool = False) -> np.ndarray:
    """Square resize (``size`` 0 keeps the image); masks use nearest so labels never blend."""
    if size <= 0:
        return image
    return processing.resize(image, size, is_mask=is_mask)


def slices(record: ImageRecord, cfg: dict[str, Any], axes: list[int] | None = None) -> Iterator[Any]:
    """2-D slices of a record (volume axes, cine frames or the image itself) as configured."""
    step = int(cfg["slice_step"]) if record.kind == "volume" else int(cfg.get("frame_step", 1))
    items = processing.iter_slices(
        record,
        axes=tuple(axes if axes is not None else cfg["axes"]),
        skip_empty=bool(cfg["skip_empty"]),
        min_foreground=float(cfg["empty_fraction"]),
        step=step,
    )
    max_frames = int(cfg.get("max_frames", 0))
    for n, item in enumerate(items):
        if record.kind == "frames" and max_frames and n >= max_frames:
            return
        yield item


def normalize_record(record: ImageRecord, cfg: dict[str, Any], modality: str) -> tuple[ImageRecord, list[float]]:
    """The record scaled to [0, 1] (:func:`normalize`) and its window; slicing tasks of one volume share it."""
    array, window = normalize(record.array, modality, cfg)
    return ImageRecord(array, record.kind, record.meta, {}, mask=record.mask), window


def record_samples(
    record: ImageRecord,
    cfg: dict[str, Any],
    base_meta: dict[str, Any],
    key_prefix: str,
    split: str | dict[str, str],
    axes: list[int] | None = None,
    normalized: tuple[ImageRecord, list[float]] | None = None,
) -> list[EncodedSample]:
    """Normalises, slices, resizes and encodes one record.

    Args:
        record: Reader output (``meta["modality"]`` drives the normalisation).
        cfg: Resolved config dict.
        base_meta: Fields shared by all samples (dataset, patient, group, label, ...).
        key_prefix: Unique, dot-free prefix of the sample keys.
        split: The split of every sample, or ``{group: split}`` looked up with the sample's group. With
            ``split_unit=slab`` the group of a volume slice is ``<slab_prefix or volume>-a<axis>-slab<k>``.
        axes: Volume axes of this task (default ``cfg["axes"]``; a volume is sliced by one task per axis).
        normalized: :func:`normalize_record` output already computed for ``record`` (shared between tasks).
    """
    modality = str(base_meta.get("modality") or record.meta.get("modality") or "OT")
    normalized, window = normalized or normalize_record(record, cfg, modality)
    size = int(cfg["image_size"])
    out = []
    for item in slices(normalized, cfg, axes):
        image = apply_channels(item.image2d, cfg["channels"])
        side = size or image.shape[0]
        spacing = item.spacing2d
        meta = dict(
            base_meta, modality=modality, axis=item.axis, slice_index=item.index, window=window,
            orig_shape=list(image.shape[:2]),
            spacing=None if not spacing else [spacing[0] * image.shape[0] / side, spacing[1] * image.shape[1] / side],
        )  # fmt: skip
        if cfg.get("split_unit") == "slab" and item.axis is not None:
            slab = item.index // int(cfg["slab_thickness"])
            meta["group"] = f"{base_meta.get('slab_prefix', base_meta.get('volume'))}-a{item.axis}-slab{slab:03d}"
        key = f"{key_prefix}_a{'n' if item.axis is None else item.axis}_s{item.index:05d}"
        mask = None if item.mask2d is None else resize(item.mask2d, size, is_mask=True)
        s = split if isinstance(split, str) else split[str(meta["group"])]
        out.append(make_sample(key, s, resize(image, size), meta, mask, encoding=cfg.get("encoding", "npy")))
    return out
