"""``create_backbone(name, in_chans=..., pretrained=...)``: the one way to build an lvmmed encoder (timm-style).

Registered names (:data:`BACKBONES`; a new encoder is one ``BACKBONES.register(name, builder)`` call):

* ``resnet18``, ``resnet34``, ``resnet50``: torchvision ResNets (keys exactly torchvision's, no ``fc``).
* ``vit_tiny``, ``vit_small``, ``vit_base``: timm ViT-*/16 (keys exactly timm's, no ``head``).
* ``sam_vit_b`` (the LVM-Med ViT-B layout), ``sam_vit_l``, ``sam_vit_h``, ``sam_vit_tiny``: SAM image encoders.

Small variants for CPU tests: ``resnet18``, ``vit_tiny``, ``sam_vit_tiny``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from lvmmed.models.base import Backbone
from lvmmed.models.resnet import ResNetBackbone
from lvmmed.models.sam_vit import SAM_SPECS, SamViTBackbone
from lvmmed.models.vit import TIMM_NAMES, ViTBackbone
from lvmmed.registry import Registry
from lvmmed.weight_sources import load_pretrained

# ``name`` -> ``builder(in_chans, img_size) -> Backbone`` (random init; :func:`create_backbone` loads weights).
BACKBONES: Registry[Callable[[int, int], Backbone]] = Registry("backbone")
for _name in ("resnet18", "resnet34", "resnet50"):
    BACKBONES.register(_name, partial(ResNetBackbone, _name))
for _name in TIMM_NAMES:
    BACKBONES.register(_name, partial(ViTBackbone, _name))
for _name in SAM_SPECS:
    BACKBONES.register(_name, partial(SamViTBackbone, _name))

SMALL_BACKBONES = ("resnet18", "vit_tiny", "sam_vit_tiny")


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone` (sorted)."""
    return sorted(BACKBONES.names())


def check_backbone_name(name: str, key: str = "backbone") -> None:
    """Config validation: raises ``ValueError`` (``UnknownNameError``) naming the config ``key``, the closest
    registered backbone and all of them."""
    BACKBONES.check(name, key)


def build_architecture(name: str, in_chans: int = 3, img_size: int = 224) -> Backbone:
    """Builds a randomly initialised backbone (no weight loading)."""
    builder = BACKBONES.get(name)
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    return builder(in_chans, img_size)


def create_backbone(
    name: str, in_chans: int = 3, pretrained: str | None = None, img_size: int = 224, allow_network: bool = False
) -> Backbone:
    """Builds a backbone, optionally loading weights.

    Args:
        name: One of :func:`list_backbones`.
        in_chans: Input channels (1 or 3). 3-channel checkpoints load into 1-channel stems by summing the stem
            weights over channels.
        pretrained: None/"random" for random init, or a weight source: an export dir, ``lvmmed-resnet50``,
            ``lvmmed-vitb`` (optionally ``=/path/file``), ``torchvision:/file``, ``timm:/file`` or a plain file
            (see :mod:`lvmmed.weight_sources`).
        img_size: Input resolution (ViTs size their position tables from it; checkpoints are resized on load).
        allow_network: Let ``lvmmed.weights`` fetch a missing published file with ``hf_hub_download``.
    """
    if pretrained in (None, "", "random", "none"):
        return build_architecture(name, in_chans, img_size)
    return build_and_load(name, in_chans, img_size, pretrained, allow_network)


def build_and_load(name: str, in_chans: int, img_size: int, source: str, allow_network: bool = False) -> Backbone:
    """Builds on the ``meta`` device (no wasted random init) and loads ``source`` with the strict check.

    Every parameter and buffer then comes from the checkpoint; the only keys a checkpoint may lack, BatchNorm's
    ``num_batches_tracked`` counters, are set to 0.
    """
    with torch.device("meta"):
        model = build_architecture(name, in_chans, img_size)
    model.to_empty(device="cpu")
    loaded = set(load_pretrained(model, source, allow_network=allow_network).loaded_keys)
    with torch.no_grad():
        for key, tensor in model.state_dict(keep_vars=True).items():
            if key in loaded:
                continue
            if not key.endswith("num_batches_tracked"):
                raise RuntimeError(f"{key} was neither loaded nor reported missing")  # guards the strict check
            tensor.zero_()
    return model
