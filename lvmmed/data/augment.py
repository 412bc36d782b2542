"""Two-view augmentations for self-supervised pretraining on medical images (grayscale-aware).

LVM-Med (Nguyen et al., NeurIPS 2023) states that it "adopts data transformations from VICRegL and DeepCluster-v2"
without listing the values, so the recipe is a config with named presets:

* ``deepcluster_v2`` (Caron et al. 2020, SwAV/DeepCluster-v2 code): global crop scale (0.14, 1), colour distortion
  strength 1 (brightness/contrast/saturation 0.8, hue 0.2, p=0.8), random grayscale 0.2, Gaussian blur p=0.5
  on both views, no solarisation.
* ``vicregl`` (Bardes et al. 2022, VICReg/VICRegL recipe shared with BYOL): crop scale (0.08, 1), jitter
  (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale 0.2, *asymmetric* blur p=(1.0, 0.1) and solarisation p=(0.0, 0.2).
* ``lvmmed`` (default, our choice): DeepCluster-v2 crops (0.14, 1) with the VICRegL asymmetric blur/solarisation
  and jitter strengths, which the paper's statement allows but does not pin down.
* ``none``: resize only (for debugging and throughput baselines).

Medical-image choices the papers leave open (all config fields):

* Grayscale awareness: saturation, hue and random-grayscale act only on 3-channel images; on 1-channel CT/MR/X-ray
  only brightness and contrast jitter are applied (hue/saturation are undefined on one channel).
* Vertical flips default to off (anatomy has a canonical up-down orientation); horizontal flips to 0.5.
* An optional random gamma (``gamma_prob``), a common MR/X-ray intensity augmentation, defaults to 0.
* Normalisation with ``mean``/``std`` after augmentation (defaults map [0, 1] to [-1, 1]); the values are written
  into exported weights' ``config.json``.

Transforms are torchvision ``transforms.v2`` operating on float tensors (C, H, W) in [0, 1]; randomness comes from
the global torch RNG, which the streaming pipeline seeds per sample for exact resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from lvmmed.data.channels import match_channels
from lvmmed.registry import check_choice

PRESETS: dict[str, dict[str, object]] = {
    "deepcluster_v2": {
        "min_scale": 0.14,
        "brightness": 0.8,
        "contrast": 0.8,
        "saturation": 0.8,
        "hue": 0.2,
        "jitter_prob": 0.8,
        "grayscale_prob": 0.2,
        "blur_prob": [0.5, 0.5],
        "solarize_prob": [0.0, 0.0],
    },
    "vicregl": {
        "min_scale": 0.08,
        "brightness": 0.4,
        "contrast": 0.4,
        "saturation": 0.2,
        "hue": 0.1,
        "jitter_prob": 0.8,
        "grayscale_prob": 0.2,
        "blur_prob": [1.0, 0.1],
        "solarize_prob": [0.0, 0.2],
    },
    "none": {
        "min_scale": 1.0,
        "brightness": 0.0,
        "contrast": 0.0,
        "saturation": 0.0,
        "hue": 0.0,
        "jitter_prob": 0.0,
        "grayscale_prob": 0.0,
        "blur_prob": [0.0, 0.0],
        "solarize_prob": [0.0, 0.0],
        "hflip_prob": 0.0,
    },
}
# lvmmed: VICRegL's asymmetric blur/solarize and colour strengths with DeepCluster-v2's minimum crop scale.
PRESETS["lvmmed"] = {**PRESETS["vicregl"], "min_scale": 0.14}


@dataclass
class AugmentConfig:
    """Two-view augmentation recipe. Fields left ``None`` are filled from ``preset``.

    Attributes:
        preset: ``lvmmed`` | ``vicregl`` | ``deepcluster_v2`` | ``none`` (see module docstring).
        size: Output crop size in pixels (square).
        min_scale, max_scale: RandomResizedCrop area range.
        ratio: RandomResizedCrop aspect-ratio range.
        hflip_prob, vflip_prob: Flip probabilities.
        jitter_prob: Probability of applying intensity (colour) jitter.
        brightness, contrast: Jitter strengths (all images).
        saturation, hue: Jitter strengths (3-channel images only).
        grayscale_prob: Random grayscale (3-channel images only).
        blur_prob: Gaussian-blur probability per view ``[view0, view1]``.
        blur_sigma: Blur sigma range; the kernel is ~10% of ``size`` (odd), as in SimCLR.
        solarize_prob: Solarisation probability per view (threshold 0.5 on [0, 1] data).
        gamma_prob, gamma_range: Random gamma on intensities (MR/X-ray style), off by default.
        mean, std: Normalisation after augmentation (one value, broadcast, or one per channel).
    """

    preset: str = "lvmmed"
    size: int = 224
    min_scale: float | None = None
    max_scale: float = 1.0
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    hflip_prob: float | None = None
    vflip_prob: float = 0.0
    jitter_prob: float | None = None
    brightness: float | None = None
    contrast: float | None = None
    saturation: float | None = None
    hue: float | None = None
    grayscale_prob: float | None = None
    blur_prob: list[float] | None = None
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    solarize_prob: list[float] | None = None
    gamma_prob: float = 0.0
    gamma_range: list[float] = field(default_factory=lambda: [0.7, 1.5])
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])

    def __post_init__(self) -> None:
        check_choice(self.preset, sorted(PRESETS), "augment.preset")
        defaults = {"hflip_prob": 0.5, **PRESETS[self.preset]}
        for f in fields(self):
            if getattr(self, f.name) is None and f.name in defaults:
                value = defaults[f.name]
                setattr(self, f.name, list(value) if isinstance(value, list) else value)
        for name in ("blur_prob", "solarize_prob"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"augment.{name} needs one probability per view (2 values)")
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError(f"augment needs 0 < min_scale <= max_scale <= 1, got {self.min_scale}, {self.max_scale}")


class ViewTransform:
    """One augmentation view: crop, flips, intensity jitter, blur, solarisation, normalisation.

    Args:
        cfg: The recipe.
        view: 0 or 1 (selects the per-view blur/solarisation probabilities).
        in_chans: Channels the backbone expects (1 or 3); images are augmented in their own channel count and
            mapped with :func:`lvmmed.data.channels.match_channels` before normalisation.
    """

    def __init__(self, cfg: AugmentConfig, view: int, in_chans: int) -> None:
        self.cfg, self.in_chans = cfg, in_chans
        if cfg.preset == "none":
            self.crop = v2.Resize((cfg.size, cfg.size), antialias=True)
        else:
            self.crop = v2.RandomResizedCrop(
                cfg.size, scale=(cfg.min_scale, cfg.max_scale), ratio=tuple(cfg.ratio), antialias=True
            )
        flips = []
        if cfg.hflip_prob > 0:
            flips.append(v2.RandomHorizontalFlip(cfg.hflip_prob))
        if cfg.vflip_prob > 0:
            flips.append(v2.RandomVerticalFlip(cfg.vflip_prob))
        self.flips = v2.Compose(flips) if flips else v2.Identity()
        self.grey_jitter = v2.ColorJitter(brightness=cfg.brightness, contrast=cfg.contrast)
        self.colour_jitter = v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
        self.blur_kernel = max(3, int(0.1 * cfg.size) // 2 * 2 + 1)
        self.blur_prob = cfg.blur_prob[view]
        self.solarize_prob = cfg.solarize_prob[view]
        mean = torch.tensor(cfg.mean, dtype=torch.float32)
        std = torch.tensor(cfg.std, dtype=torch.float32)
        if mean.numel() not in (1, in_chans) or std.numel() not in (1, in_chans):
            raise ValueError(f"augment.mean/std need 1 or {in_chans} values, got {cfg.mean} / {cfg.std}")
        self.mean, self.std = mean.view(-1, 1, 1), std.view(-1, 1, 1)

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """Gaussian blur with sigma ~ U(blur_sigma), as ``v2.GaussianBlur`` but separable (3x faster, same output)."""
        lo, hi = self.cfg.blur_sigma
        sigma = lo + (hi - lo) * float(torch.rand(()))
        k = self.blur_kernel
        r = torch.arange(k, dtype=x.dtype) - k // 2
        w = torch.exp(-0.5 * (r / sigma) ** 2)
        w = w / w.sum()
        c = x.shape[0]
        h = F.pad(x[None], (k // 2, k // 2, k // 2, k // 2), mode="reflect")
        h = F.conv2d(h, w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
        return F.conv2d(h, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)[0]

    def _coin(self, p: float) -> bool:
        return p > 0 and (p >= 1 or float(torch.rand(())) < p)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(C, H, W) float tensor in [0, 1] with C in {1, 3} -> (in_chans, size, size) normalised tensor."""
        cfg = self.cfg
        x = self.flips(self.crop(image))
        colour = x.shape[0] == 3
        if self._coin(cfg.jitter_prob):
            x = self.colour_jitter(x) if colour else self.grey_jitter(x)
        if colour and self._coin(cfg.grayscale_prob):
            x = v2.functional.rgb_to_grayscale(x, num_output_channels=3)
        if self._coin(cfg.gamma_prob):
            lo, hi = cfg.gamma_range
            x = v2.functional.adjust_gamma(x.clamp(0, 1), lo + (hi - lo) * float(torch.rand(())))
        if self._coin(self.blur_prob):
            x = self.blur(x)
        if self._coin(self.solarize_prob):
            x = v2.functional.solarize(x.clamp(0, 1), 0.5)
        x = match_channels(x.clamp(0, 1), self.in_chans)
        return (x - self.mean) / self.std


class TwoViewTransform:
    """Produces the two correlated views ``(x_s, x_t)`` of one image (LVM-Med Fig. 2, SimCLR/VICReg style)."""

    def __init__(self, cfg: AugmentConfig, in_chans: int) -> None:
        self.views = (ViewTransform(cfg, 0, in_chans), ViewTransform(cfg, 1, in_chans))

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.views[0](image), self.views[1](image)
