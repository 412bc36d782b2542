"""Shared pytest setup: 2 intra-op threads, deterministic seeds, and session-scoped real-data shards."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed_everything():
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def bundled_shards(tmp_path_factory) -> dict:
    """Real-data shard sets built once per session: ``{name: Path}`` (see ``data_prep.bundled``).

    Sets: ``mni152`` (MR slices + 4-class tissue masks), ``dicom_modality`` (grey CT/MR/CR/NM/US, label =
    modality), ``color2d`` (RGB fundus/histology tiles, label = source), and with the optional Debian
    ``mricron-data`` also ``colin27`` (tissue masks) and ``colin27_aal`` (lobe masks). Profile ``tiny``:
    64 px images, every 8th slice/frame. Each directory holds ``manifest.json`` + ``{train,val,test}-*.tar``.
    """
    from data_prep.bundled import build_bundled

    return build_bundled(tmp_path_factory.mktemp("bundled_shards"), profile="tiny", workers=1)
