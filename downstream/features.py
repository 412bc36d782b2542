"""Frozen-backbone features, cached in memory across the cells of one process.

A cached entry is keyed by a hash of the backbone's parameters and buffers and of the input tensor, so a hit is
exactly the features an uncached forward would give (same weights, same inputs); cells of a benchmark worker that
share weights and splits (LP, MoVL's plain stream, the probe that initialises MoVL / LP-FT / VPT heads, across
methods) compute them once. Entries are bounded (least recently used dropped first).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from downstream.train_loop import extract_features

MAX_ENTRIES = 12
_CACHE: OrderedDict[str, np.ndarray] = OrderedDict()
STATS = {"hits": 0, "misses": 0}


def _digest(tensors: list[torch.Tensor]) -> str:
    h = hashlib.sha1()
    for t in tensors:
        a = t.detach().cpu().contiguous().reshape(-1)  # 0-d buffers (BatchNorm's num_batches_tracked) too
        h.update(str((tuple(t.shape), str(a.dtype))).encode())
        h.update(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    return h.hexdigest()


def backbone_key(backbone: torch.nn.Module) -> str:
    """Hash of a backbone's parameters and buffers (the identity of a frozen feature extractor)."""
    return _digest([*backbone.parameters(), *backbone.buffers()])


def frozen_features(method: Any, x: torch.Tensor, batch_size: int = 256, cache: bool = True) -> np.ndarray:
    """Pooled frozen-backbone features (N, D) of plain inputs ``x`` (``method.extract_features``), cached.

    Args:
        method: A method whose ``extract_features`` runs its frozen backbone.
        x: Normalised inputs.
        batch_size: Forward batch size.
        cache: Look up / store in the process cache.
    """
    if not cache:
        return extract_features(method, x, batch_size)
    key = backbone_key(method.backbone) + ":" + _digest([x])
    if key in _CACHE:
        STATS["hits"] += 1
        _CACHE.move_to_end(key)
        return _CACHE[key]
    STATS["misses"] += 1
    feats = extract_features(method, x, batch_size)
    _CACHE[key] = feats
    while len(_CACHE) > MAX_ENTRIES:
        _CACHE.popitem(last=False)
    return feats


def clear() -> None:
    _CACHE.clear()
    STATS.update(hits=0, misses=0)
