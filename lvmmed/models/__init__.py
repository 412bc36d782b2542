"""Backbones under one contract (see :mod:`lvmmed.models.base`) and the factory :func:`create_backbone`.

The factory (and with it torchvision, timm and segment-anything) is imported on first use, so that
``lvmmed.models.base`` and ``python -m lvmmed.weights inspect`` stay light.
"""

from __future__ import annotations

import importlib

from lvmmed.models.base import Backbone, PromptedOutput

_FACTORY_NAMES = (
    "BACKBONES", "SMALL_BACKBONES", "build_architecture", "check_backbone_name", "create_backbone", "list_backbones",
)  # fmt: skip

__all__ = [
    "BACKBONES", "SMALL_BACKBONES", "Backbone", "PromptedOutput", "build_architecture", "check_backbone_name",
    "create_backbone", "list_backbones",
]  # fmt: skip


def __getattr__(name: str):
    if name in _FACTORY_NAMES:
        return getattr(importlib.import_module("lvmmed.models.factory"), name)
    raise AttributeError(f"module 'lvmmed.models' has no attribute '{name}'")
