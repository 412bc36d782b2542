"""HDF5 patch arrays (PatchCamelyon ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5``) -> 2-D records.

Read with h5py. A release stores its patches as one dataset of shape (N, H, W) or (N, H, W, 3) (PatchCamelyon:
``x``, uint8, 96×96×3) and, optionally, the labels as a second file or dataset with N entries of any trailing
shape (PatchCamelyon: ``y``, shape (N, 1, 1, 1)). Patches are read in index ranges so a worker holds only its own
slice of a file that may be several GB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lvmmed.data.readers.record import ImageRecord, ReaderError


def _open(path: str | Path):
    import h5py

    if not Path(path).is_file():
        raise ReaderError(path, "no such file")
    try:
        return h5py.File(str(path), "r")
    except OSError as err:
        raise ReaderError(path, f"not a readable HDF5 file: {err}") from err


def _dataset(fh, path, name: str):
    if name not in fh:
        raise ReaderError(path, f"no dataset {name!r} (has {sorted(fh.keys())})")
    return fh[name]


def hdf5_length(path: str | Path, dataset: str = "x") -> int:
    """Number of entries (first axis) of ``dataset`` in ``path``."""
    with _open(path) as fh:
        return int(_dataset(fh, path, dataset).shape[0])


def read_hdf5_labels(path: str | Path, start: int = 0, stop: int | None = None, dataset: str = "y") -> np.ndarray:
    """Integer labels ``[start:stop]`` of a label dataset (trailing singleton axes are flattened)."""
    with _open(path) as fh:
        values = np.asarray(_dataset(fh, path, dataset)[start:stop])
    return values.reshape(values.shape[0], -1)[:, 0].astype(np.int64)


def read_hdf5_patches(
    path: str | Path, start: int = 0, stop: int | None = None, dataset: str = "x", modality: str = "PATH"
) -> list[ImageRecord]:
    """Patches ``[start:stop]`` of ``dataset`` as ``"image2d"`` records (grey (H, W) or colour (H, W, 3)).

    Raises:
        ReaderError: missing file or dataset, or a dataset that is not a stack of 2-D grey/RGB images.
    """
    with _open(path) as fh:
        data = _dataset(fh, path, dataset)
        if data.ndim not in (3, 4) or (data.ndim == 4 and data.shape[-1] not in (1, 3)):
            raise ReaderError(path, f"dataset {dataset!r} of shape {data.shape} is not N x H x W (x 1|3) images")
        block = np.asarray(data[start:stop])
    if block.ndim == 4 and block.shape[-1] == 1:
        block = block[..., 0]
    meta = {
        "modality": modality.upper(),
        "source": f"{path}:{dataset}",
        "photometric": "RGB" if block.ndim == 4 else "MONOCHROME2",
        "rescaled_to_hu": False,
        "spacing": None,
    }
    return [ImageRecord(np.ascontiguousarray(p), "image2d", dict(meta, index=start + i)) for i, p in enumerate(block)]
