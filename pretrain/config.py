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
from lvmmed.registry import check_choice
from pretrain.projectors import PROJECTORS

# Loggers beside metrics.csv: Accelerate's own trackers by name, plus ``jsonl`` (pretrain.logging_utils.JsonlTracker).
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "jsonl": (), "mlflow": ("mlflow",),
                    "wandb": ("wandb",)}  # fmt: skip
OPTIMIZERS = ("adamw", "lars")
PRECISIONS = ("auto", "no", "bf16", "fp16")


@dataclass
class ModelConfig:
    """Backbone and projector.

    Attributes:
        backbone: ``lvmmed.models.create_backbone`` name (resnet18/34/50, vit_tiny/small/base).
        in_chans: 1 (grey CT/MR/X-ray as is) or 3 (grey replicated, colour kept).
        pretrained: Replaced by ``init.weights`` (kept only so that configs saved by older runs load; a
            non-empty value is a config error naming the new key).
        projector: a ``pretrain.projectors.PROJECTORS`` lightly head: ``simclr`` | ``vicreg`` | ``byol`` | ``barlow``.
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
        PROJECTORS.check(self.projector)
        if self.pretrained:
            raise ValueError(
                f"model.pretrained is replaced by init.weights: give init.weights={self.pretrained} (and "
                "init.strict=false to load a partial match); see docs/pretrain.md#continue-pretraining"
            )


@dataclass
class InitConfig:
    """Initial backbone weights: continue pretraining from any source downstream accepts (``pretrain.init_weights``).

    Attributes:
        weights: An ``lvmmed.weights`` source: an export dir, ``lvmmed-resnet50[=/file]``, ``lvmmed-vitb[=/file]``,
            ``torchvision:/file``, ``timm:/file`` or a plain state-dict file; empty = random init. Loaded before
            training starts, never on resume (the checkpoint holds the weights then). The projector and the
            loss's own parameters always start fresh: LVM-Med publishes encoders only.
        strict: True: every backbone tensor must come from the file (missing, unexpected or mis-shaped keys are
            an error listing them). False: load what fits, keep random init for the rest, and record both.
    """

    weights: str = ""
    strict: bool = True

    @property
    def source(self) -> str | None:
        """The weight source to load, or None for random init (empty, ``random`` or ``none``, as in
        ``create_backbone``)."""
        return None if self.weights in ("", "random", "none") else self.weights


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
        check_choice(self.name, OPTIMIZERS, "optim.name")
        if self.grad_accum_steps < 1 or self.warmup_steps < 0 or not 0 < self.lr < math.inf:
            raise ValueError(
                f"optim needs a finite lr > 0, warmup_steps >= 0 and grad_accum_steps >= 1, got lr={self.lr}, "
                f"warmup_steps={self.warmup_steps}, grad_accum_steps={self.grad_accum_steps}"
            )


MONITOR_LABELS = ("auto", "image", "mask")


@dataclass
class MonitorConfig:
    """Online k-NN monitor (``pretrain/monitor.py``): the backbone's pooled features of a small labelled shard set,
    a weighted k-NN (and optionally a linear probe) fitted on ``train_split`` and scored on ``test_split``, logged as
    ``monitor_knn_acc`` (``monitor_lp_acc``) in ``metrics.csv`` and the trackers. Off while ``eval_set`` is empty.

    Attributes:
        eval_set: Labelled shard-set directory (``manifest.json``; samples with ``meta.label`` or masks) or remote
            location; empty = no monitor.
        eval_every: Steps between evaluations; there is always one before the first step and one at the last
            (0 = only those two).
        k, temperature: k-NN neighbours and vote temperature (DINO's 20 and 0.07).
        train_split, test_split: The split the k-NN memory (and probe) is fitted on, and the split scored.
            ``test`` is refused for either: it stays held out for downstream evaluation.
        labels: ``auto`` | ``image`` (``meta.label``) | ``mask`` (patches labelled by their mask's centre).
        patch_size, patch_stride: Patch geometry in source pixels (``mask`` labels).
        max_samples: Class-balanced cap per split (0 = all), the same samples in every run and seed.
        linear_probe: Also fit a logistic-regression probe (``monitor_lp_acc``).
        linear_probe_c: The probe's inverse regularisation strength (fixed; no sweep).
        batch_size: Forward batch size of the feature extraction.
    """

    eval_set: str = ""
    eval_every: int = 50
    k: int = 20
    temperature: float = 0.07
    train_split: str = "train"
    test_split: str = "val"
    labels: str = "auto"
    patch_size: int = 16
    patch_stride: int = 8
    max_samples: int = 500
    linear_probe: bool = False
    linear_probe_c: float = 1.0
    batch_size: int = 256

    def __post_init__(self) -> None:
        check_choice(self.labels, MONITOR_LABELS, "monitor.labels")
        if "test" in (self.train_split, self.test_split) or self.train_split == self.test_split:
            raise ValueError(
                f"monitor.train_split and monitor.test_split must be two different splits other than test (held out "
                f"for downstream), got {self.train_split!r} and {self.test_split!r}"
            )
        if self.eval_every < 0 or self.k < 1 or self.max_samples < 0 or self.batch_size < 1:
            raise ValueError("monitor needs eval_every >= 0, k >= 1, max_samples >= 0 and batch_size >= 1")
        if not (0 < self.temperature < math.inf and 0 < self.linear_probe_c < math.inf):
            raise ValueError("monitor.temperature and monitor.linear_probe_c must be finite and > 0")
        if self.patch_size < 2 or self.patch_stride < 1:
            raise ValueError("monitor needs patch_size >= 2 and patch_stride >= 1")


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
        log_with: Loggers beside ``metrics.csv`` (always written): ``tensorboard`` (event files under
            ``<output_dir>/pretrain``), ``jsonl`` (``<output_dir>/metrics.jsonl``), ``mlflow`` and ``wandb``
            (Accelerate's trackers, configured by their usual environment variables); ``[]`` for none. Unset
            (null) = ``trackers``.
        trackers: The older name of ``log_with``, still honoured when ``log_with`` is unset.
        init: Initial backbone weights (:class:`InitConfig`).
        monitor: Online k-NN monitor on a labelled shard set (:class:`MonitorConfig`; off by default).
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
    log_with: list[str] | None = None
    trackers: list[str] = field(default_factory=lambda: ["tensorboard", "jsonl"])
    init: InitConfig = field(default_factory=InitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    def __post_init__(self) -> None:
        check_choice(self.mixed_precision, PRECISIONS, "mixed_precision")
        if self.max_steps < 1 or self.keep_checkpoints < 1 or self.log_every < 1:
            raise ValueError("max_steps, keep_checkpoints and log_every must be >= 1")
        if self.max_nonfinite_in_a_row < 1:
            raise ValueError("max_nonfinite_in_a_row must be >= 1")
        if "vit" in self.model.backbone and self.augment.size < 16:
            raise ValueError(f"augment.size={self.augment.size} is smaller than a ViT patch (16 px); use >= 32")
        check_loggers(self.loggers)

    @property
    def loggers(self) -> list[str]:
        """The loggers in effect: ``log_with`` when set, else ``trackers``."""
        return list(self.trackers if self.log_with is None else self.log_with)


def check_loggers(names: list[str]) -> None:
    """Config validation: every logger is known and its package is installed (a clear error names the install)."""
    import importlib.util

    for name in names:
        if name not in TRACKER_PACKAGES:
            raise ValueError(f"log_with: unknown logger '{name}'; choose from {sorted(TRACKER_PACKAGES)} or []")
        packages = TRACKER_PACKAGES[name]
        if packages and not any(importlib.util.find_spec(p) is not None for p in packages):
            raise ValueError(
                f"log_with: '{name}' needs the package '{packages[0]}', which is not installed: "
                f"pip install {packages[0]}, or drop it (log_with=[tensorboard,jsonl])"
            )
