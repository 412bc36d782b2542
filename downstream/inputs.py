"""What a backbone expects as input, and how task images are adapted to it.

A task delivers images as they are stored in the shard set: (N, C, h, w) in [0, 1], grey (C = 1) or colour
(C = 3), at the set's own size. The *method* declares what it needs (:func:`input_spec_of`: the backbone's input
channels and size, and the normalisation of its weights); :func:`adapt_images` turns the task's images into that
(resize, 1↔3 channels, normalise). So the same shard set runs with a 1-channel 64-px ViT-Tiny and with the
published 3-channel 224-px ResNet-50.

Weight settings (:func:`weight_settings`, applied when ``norm_from_weights`` is on):

* ``lvmmed-resnet50``: ResNet-50, 3 channels, 224 px, ImageNet mean/std (the published file is a torchvision
  ResNet-50 trained on 224-px crops normalised with ImageNet statistics; LVM-Med, Nguyen et al., NeurIPS 2023).
* ``lvmmed-vitb``: SAM ViT-B image encoder, 3 channels, 1024 px, SAM's ``pixel_mean``/``pixel_std``
  ([123.675, 116.28, 103.53] / [58.395, 57.12, 57.375] on 0-255 pixels, i.e. ImageNet statistics on [0, 1];
  Kirillov et al., "Segment Anything", 2023).
* ``torchvision:<file>`` / ``timm:<file>``: 3 channels, ImageNet statistics (architecture and size as configured).
* an lvmmed export: the ``input_mean``/``input_std`` its ``config.json`` records.
* random init: ``norm_mean``/``norm_std`` of the run config.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lvmmed.data.channels import match_channels
from lvmmed.weight_sources import export_normalisation

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class WeightSettings:
    """Input settings a weight source implies (None = keep the run config's value)."""

    backbone: str | None = None
    in_chans: int | None = None
    img_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    source: str = ""


PUBLISHED_SETTINGS = {
    "lvmmed-resnet50": WeightSettings("resnet50", 3, 224, IMAGENET_MEAN, IMAGENET_STD, "published LVM-Med ResNet-50"),
    "lvmmed-vitb": WeightSettings("sam_vit_b", 3, 1024, IMAGENET_MEAN, IMAGENET_STD, "published LVM-Med SAM ViT-B"),
}


@dataclass(frozen=True)
class InputSpec:
    """What a method's backbone consumes: channels, square size and per-channel normalisation."""

    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def as_dict(self) -> dict:
        return {"in_chans": self.in_chans, "img_size": self.img_size, "mean": list(self.mean), "std": list(self.std)}


def weight_settings(weights: str) -> WeightSettings | None:
    """The input settings implied by a weight source (see the module docstring), or None for random init."""
    text = os.fspath(weights or "")
    if text in ("", "random", "none"):
        return None
    key = text.partition("=")[0]
    if key in PUBLISHED_SETTINGS:
        return PUBLISHED_SETTINGS[key]
    if text.partition(":")[0] in ("torchvision", "timm"):
        return WeightSettings(in_chans=3, mean=IMAGENET_MEAN, std=IMAGENET_STD, source="general weights file")
    stats = export_normalisation(text)
    if stats is not None:
        return WeightSettings(mean=(stats[0],), std=(stats[1],), source="lvmmed export config.json")
    return None


def apply_weight_settings(cfg):
    """``cfg`` with the architecture, channels and size the weights imply (published files), when
    ``cfg.norm_from_weights`` is on; other fields unchanged."""
    settings = weight_settings(cfg.weights) if cfg.norm_from_weights else None
    if settings is None:
        return cfg
    changes = {k: getattr(settings, k) for k in ("backbone", "in_chans", "img_size") if getattr(settings, k)}
    if settings.mean is not None and len(settings.mean) == 1:  # an export's scalar statistics: kept in the config
        changes.update(norm_mean=settings.mean[0], norm_std=settings.std[0])
    changes = {k: v for k, v in changes.items() if getattr(cfg, k) != v}
    return dataclasses.replace(cfg, **changes) if changes else cfg


def input_spec(cfg) -> InputSpec:
    """The input spec of a run: the weights' normalisation (``norm_from_weights``) or ``norm_mean``/``norm_std``."""
    settings = weight_settings(cfg.weights) if cfg.norm_from_weights else None
    if settings is not None and settings.mean is not None and len(settings.mean) == 3:
        mean, std = settings.mean, settings.std
    else:
        mean, std = (float(cfg.norm_mean),), (float(cfg.norm_std),)
    return InputSpec(int(cfg.in_chans), int(cfg.img_size), tuple(mean), tuple(std))


def input_spec_of(method, cfg) -> InputSpec:
    """What ``method`` declares it needs: its backbone's channels and size, with the run's normalisation."""
    backbone = method.backbone
    spec = input_spec(cfg)
    in_chans = int(getattr(backbone, "in_chans", spec.in_chans))
    return InputSpec(in_chans, int(getattr(backbone, "img_size", spec.img_size)), spec.mean, spec.std)


def adapt_images(
    images: np.ndarray | torch.Tensor, spec: InputSpec, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """[0, 1] (N, C, h, w) images → normalised (N, in_chans, img_size, img_size) float32 tensors on ``device``.

    Resize: bilinear (antialiased when shrinking). Channels (:func:`lvmmed.data.channels.match_channels`): grey is
    replicated to 3; colour becomes grey by the BT.601 luma weights when the backbone takes 1 channel.
    Normalisation: per channel when the spec has 3 values (grey replicated inputs then get ImageNet's per-channel
    statistics, as the general weights expect).
    """
    x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
    x = x.to(torch.float32)
    if x.shape[-2:] != (spec.img_size, spec.img_size):
        shrink = x.shape[-1] > spec.img_size or x.shape[-2] > spec.img_size
        x = F.interpolate(x, size=(spec.img_size, spec.img_size), mode="bilinear", align_corners=False,
                          antialias=shrink)  # fmt: skip
    x = match_channels(x, spec.in_chans)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    if mean.shape[1] not in (1, x.shape[1]):
        mean, std = mean.mean(1, keepdim=True), std.mean(1, keepdim=True)
    return ((x - mean) / std).to(device)


def forward_flops(backbone_name: str, in_chans: int, img_size: int) -> float:
    """Forward FLOPs of one image through the backbone, counted on the ``meta`` device (no compute, no memory)."""
    # timm, torchvision and segment-anything load here, on the first cost estimate: downstream.registry imports
    # this module (through methods.gmoe) and stays free of them until a backbone is built
    from lvmmed.models.factory import build_architecture

    with torch.device("meta"):
        model = build_architecture(backbone_name, in_chans, img_size).eval()
        x = torch.empty(1, in_chans, img_size, img_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


def cpu_throughput(seconds: float = 0.2) -> float:
    """Measured float32 matmul FLOP/s of this CPU with the current torch threads (a short timing)."""
    a = torch.randn(512, 512)
    b = torch.randn(512, 512)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        done += 1
    return 2 * 512**3 * done / (time.perf_counter() - start)


def cost_estimate(backbone_name: str, in_chans: int, img_size: int, images: int, passes: float = 1.0) -> dict:
    """Rough CPU time of ``passes`` forward passes over ``images`` images (FLOPs / measured matmul FLOP/s).

    Convolutions and attention run below matmul peak, so this is a lower bound; training adds about 2x per step.
    """
    flops = forward_flops(backbone_name, in_chans, img_size)
    rate = cpu_throughput()
    seconds = flops * images * passes / max(rate, 1.0)
    return {"gflops_per_image": flops / 1e9, "cpu_gflops_per_s": rate / 1e9, "images": images, "passes": passes,
            "seconds_lower_bound": seconds, "minutes_lower_bound": seconds / 60}  # fmt: skip


class InputTooLargeError(ValueError):
    """A CPU run would use inputs larger than ``max_img_size`` (the message carries the cost estimate)."""


def check_cpu_cost(cfg, device: torch.device, images: int) -> dict | None:
    """On CPU: the cost estimate of a run whose input exceeds 224 px, and a refusal above ``cfg.max_img_size``.

    Returns the estimate (also printed) or None when nothing needed estimating.

    Raises:
        InputTooLargeError: ``img_size > max_img_size`` on a CPU device (``max_img_size=0`` disables the guard).
    """
    if device.type != "cpu" or cfg.img_size <= 224:
        return None
    estimate = cost_estimate(cfg.backbone, cfg.in_chans, cfg.img_size, images)
    text = (
        f"{cfg.backbone} at {cfg.img_size} px on CPU: {estimate['gflops_per_image']:.0f} GFLOPs per image; one "
        f"forward pass over {images} images takes at least {estimate['minutes_lower_bound']:.1f} min at the "
        f"measured {estimate['cpu_gflops_per_s']:.0f} GFLOP/s (training costs several passes)"
    )
    print(text, flush=True)
    if cfg.max_img_size and cfg.img_size > cfg.max_img_size:
        raise InputTooLargeError(
            f"{text}. img_size={cfg.img_size} exceeds max_img_size={cfg.max_img_size} on a CPU device: run on a "
            f"GPU, or set max_img_size={cfg.img_size} (or 0) to run anyway, or img_size=<smaller> with "
            "norm_from_weights=false"
        )
    return estimate
