"""The pretraining config schema: ``configs/pretrain/*.yaml`` + ``key=value`` overrides (``lvmmed.config``).

The keys most runs change are top-level: ``output_dir`` (where checkpoints, logs and the export go) and
``max_steps`` (the step budget), so a short run is ``output_dir=/tmp/x max_steps=20``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lvmmed.data.augment import AugmentConfig
from lvmmed.data.shard_sets import DataConfig
from lvmmed.losses import LossConfig

PROJECTORS = ("simclr", "vicreg", "byol", "barlow")
OPTIMIZERS = ("adamw", "lars")
PRECISIONS = ("auto", "no", "bf16", "fp16")


@dataclass
class ModelConfig:
    """Backbone and projector.

    Attributes:
        backbone: ``lvmmed.models.create_backbone`` name (resnet18/34/50, vit_tiny/small/base).
        in_chans: 1 (grey CT/MR/X-ray as is) or 3 (grey replicated, colour kept).
        pretrained: Optional initial weights (``lvmmed.weights`` source); empty = random init.
        projector: lightly head: ``simclr`` | ``vicreg`` | ``byol`` | ``barlow``.
        proj_hidden_dim, proj_output_dim, proj_layers: Head sizes (``proj_layers`` for simclr/vicreg).
    """

    backbone: str = "resnet50"
    in_chans: int = 1
    pretrained: str = ""
    projector: str = "simclr"
    proj_hidden_dim: int = 2048
    proj_output_dim: int = 128
    proj_layers: int = 2

    def __post_init__(self) -> None:
        from lvmmed.models import check_backbone_name

        check_backbone_name(self.backbone, "model.backbone")
        if self.in_chans not in (1, 3):
            raise ValueError(f"model.in_chans must be 1 or 3, got {self.in_chans}")
        if self.projector not in PROJECTORS:
            raise ValueError(f"model.projector must be one of {PROJECTORS}, got '{self.projector}'")


@dataclass
class OptimConfig:
    """Optimiser and schedule (linear warmup then cosine decay, per optimiser step).

    Attributes:
        name: ``adamw`` or ``lars`` (lightly's LARS, SimCLR/VICReg large-batch choice).
        lr: Peak learning rate (after warmup). With ``scale_lr_with_batch`` it is multiplied by
            global_batch / 256 (Goyal et al. 2017 linear scaling), and the scaled value is logged.
        min_lr_ratio: Final lr as a fraction of the peak.
        warmup_steps: Linear warmup length in optimiser steps.
        weight_decay: Decoupled (AdamW) or LARS weight decay; biases and norm parameters are exempt.
        momentum: LARS momentum.
        betas: AdamW betas.
        grad_accum_steps: Micro-batches per optimiser step.
        clip_grad_norm: Max global grad norm (0 = no clipping).
    """

    name: str = "adamw"
    lr: float = 1e-3
    scale_lr_with_batch: bool = False
    min_lr_ratio: float = 0.01
    warmup_steps: int = 100
    weight_decay: float = 0.05
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_accum_steps: int = 1
    clip_grad_norm: float = 3.0

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optim.name must be one of {OPTIMIZERS}, got '{self.name}'")
        if self.grad_accum_steps < 1 or self.warmup_steps < 0 or not 0 < self.lr < math.inf:
            raise ValueError(
                f"optim needs a finite lr > 0, warmup_steps >= 0 and grad_accum_steps >= 1, got lr={self.lr}, "
                f"warmup_steps={self.warmup_steps}, grad_accum_steps={self.grad_accum_steps}"
            )


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs; saved resolved as ``<output_dir>/config.yaml`` and in checkpoints.

    Attributes:
        output_dir: Run directory (checkpoints/, logs, metrics.csv, export/).
        max_steps: Optimiser steps to train for (the step budget).
        seed: Seeds every RNG (model init, data streams, augmentations, workers).
        mixed_precision: ``auto`` (bf16 on CUDA with bf16 support, else off), ``no``, ``bf16`` or ``fp16``.
        resume: ``auto`` (newest complete checkpoint in output_dir, if any), ``never``, or a checkpoint path.
        checkpoint_every: Steps between checkpoints (0 = only at the end).
        keep_checkpoints: Complete checkpoints kept after pruning (>= 1).
        log_every: Steps between metric rows (CSV + TensorBoard).
        export_at_end: Export the backbone to ``<output_dir>/export`` when training ends.
        max_nonfinite_in_a_row: Abort after this many consecutive non-finite steps (each is skipped).
        ddp_find_unused_parameters: Passed to DDP (needed only if some parameters get no gradient).
        trackers: Accelerate trackers (``tensorboard``; empty for none). The CSV is always written.
    """

    output_dir: str = "runs/pretrain"
    max_steps: int = 1000
    seed: int = 0
    mixed_precision: str = "auto"
    resume: str = "auto"
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 10
    export_at_end: bool = True
    max_nonfinite_in_a_row: int = 5
    ddp_find_unused_parameters: bool = False
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got '{self.mixed_precision}'")
        if self.max_steps < 1 or self.keep_checkpoints < 1 or self.log_every < 1:
            raise ValueError("max_steps, keep_checkpoints and log_every must be >= 1")
        if self.max_nonfinite_in_a_row < 1:
            raise ValueError("max_nonfinite_in_a_row must be >= 1")
        if "vit" in self.model.backbone and self.augment.size < 16:
            raise ValueError(f"augment.size={self.augment.size} is smaller than a ViT patch (16 px); use >= 32")
