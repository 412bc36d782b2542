"""Typed config of one segmentation run (``seg-unet``, ``seg-prompt-*``, ``mask-guided``, new-center protocol).

Loaded with :func:`lvmmed.config.load_config` (defaults < ``configs/downstream/seg_*.yaml`` < ``key=value``).
The fields every run has (``task``, ``method``, ``weights``, ``backbone``, ``seed``/``seeds``, ``fraction``,
``data_root``...) come from :class:`downstream.run_config.RunConfig`, shared with
:class:`downstream.config.DownstreamConfig`; the sub-configs here are the segmentation methods' own.

Defaults follow LVM-Med's 2-D segmentation recipe (Adam, lr 1e-4 for the encoder, grad-norm clip 1; official
repository github.com/duyhominhnguyen/LVM-Med, ``segmentation_2d/``) scaled to 64-pixel slices and tiny
encoders; every choice the papers leave open is a field below.

Example:
    >>> from lvmmed.config import load_config
    >>> cfg = load_config(SegmentationConfig, overrides=["method=seg-prompt-deep", "prompt.num_tokens=4"])
    >>> cfg.prompt.num_tokens
    4
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from downstream.run_config import RunConfig
from lvmmed.config import check_choice

PROTOCOLS = ("single", "new_center")
ADAPT_MODES = (
    "direct",
    "seg-prompt-shallow",
    "seg-prompt-deep",
    "seg-prompt-shallow+decoder",
    "seg-prompt-deep+decoder",
    "partial",
    "finetune",
)
MASK_SOURCES = ("gt", "seg-unet", "sam2")


@dataclass
class SegOptimConfig:
    """Optimiser of every segmentation/mask-guided training.

    Attributes:
        optimizer: ``adam`` (LVM-Med), ``adamw`` or ``sgd`` (momentum 0.9).
        epochs: Passes over the training split (``max_steps`` > 0 overrides it).
        head_lr: Lr of decoders and heads.
        backbone_lr: Lr of the encoder when it is fine-tuned (LVM-Med: 1e-4).
        prompt_lr: Lr of prompt tokens (VPT uses a larger lr for prompts than for heads).
        lr_scale: Multiplier of every group's lr (grid value; kept for parity with classification).
        weight_decay: Weight decay of every group.
        grad_clip: Max grad norm (LVM-Med README: 1.0); 0 disables.
    """

    optimizer: str = "adam"
    epochs: int = 10
    max_steps: int = 0
    batch_size: int = 16
    eval_batch_size: int = 64
    head_lr: float = 1e-3
    backbone_lr: float = 1e-4
    prompt_lr: float = 1e-2
    lr_scale: float = 1.0
    weight_decay: float = 0.0
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        check_choice(self.optimizer, ("adam", "adamw", "sgd"), "optim.optimizer")


@dataclass
class SegLossConfig:
    """MONAI ``DiceCELoss`` weights (softmax, one-hot targets). Background is included in the Dice term."""

    lambda_dice: float = 1.0
    lambda_ce: float = 1.0
    include_background: bool = True


@dataclass
class UNetConfig:
    """``seg-unet``: U-Net decoder (CNN) or UNETR decoder (ViT) on the backbone's multi-scale features.

    Attributes:
        freeze_encoder: Train the decoder only (``True``) or the whole network (``False``, LVM-Med end-to-end).
        decoder_channels: U-Net stage widths shallow to deep (CNN) or ``[feature_size]`` (ViT); empty = defaults.
        norm: ``batch``/``instance``; empty = batch for U-Net (smp), instance for UNETR (MONAI).
        sam_features: For SAM encoders, the deepest map the decoder reads: ``neck`` (SAM's 256-channel neck, the
            features SAM's mask decoder consumes), ``pre_neck`` (the 768-channel map of the last block) or ``auto``
            (``neck`` for the published ``lvmmed-vitb`` weights, whose neck is trained; else ``pre_neck``).
    """

    freeze_encoder: bool = False
    decoder_channels: list[int] = field(default_factory=list)
    norm: str = ""
    sam_features: str = "auto"

    def __post_init__(self) -> None:
        check_choice(self.norm, ("", "batch", "instance"), "unet.norm")
        check_choice(self.sam_features, ("auto", "neck", "pre_neck"), "unet.sam_features")


@dataclass
class PromptSegConfig:
    """``seg-prompt-shallow`` / ``seg-prompt-deep`` (Saeed et al. 2023; VPT, Jia et al. 2022).

    Attributes:
        num_tokens: Prompt tokens per layer (the paper's count is unverified; 0 = the plain model).
        init: ``xavier`` (VPT's uniform init) or ``zeros``.
        tune_decoder: Also train the decoder; prompts only (the paper's "< 1 % of parameters") when False.
    """

    num_tokens: int = 8
    init: str = "xavier"
    tune_decoder: bool = False

    def __post_init__(self) -> None:
        check_choice(self.init, ("xavier", "zeros"), "prompt.init")
        if self.num_tokens < 0:
            raise ValueError("prompt.num_tokens must be >= 0")


@dataclass
class CentersConfig:
    """New-center protocol (Saeed et al. 2023): train on ``old``, adapt to ``new``, test on every center.

    A center name is a shard-set center (``meta.center``, e.g. ``mni152``, ``colin27``) or a derived acquisition
    variant ``<center>@<variant>`` (see :mod:`downstream.segmentation.centers`), used when only one template is
    installed.

    Attributes:
        old: Centers of the base training.
        new: The center adapted to.
        fallback_new: Used instead of ``new`` when ``new`` is not installed ("" = fail).
        adapt: Adaptation modes compared: ``direct`` (no adaptation), ``seg-prompt-shallow``/``-deep`` (prompts
            only), ``...+decoder`` (prompts and decoder), ``partial`` (decoder only), ``finetune`` (everything).
        base_epochs: Epochs of the base training on the old centers.
        adapt_fraction: Fraction of the new center's training subjects used for adaptation.
    """

    old: list[str] = field(default_factory=lambda: ["mni152"])
    new: str = "colin27"
    fallback_new: str = "mni152@lowcontrast"
    adapt: list[str] = field(
        default_factory=lambda: ["direct", "seg-prompt-shallow", "seg-prompt-deep", "partial", "finetune"]
    )
    base_epochs: int = 10
    adapt_fraction: float = 1.0

    def __post_init__(self) -> None:
        for mode in self.adapt:
            check_choice(mode, ADAPT_MODES, "centers.adapt[]")


@dataclass
class MaskGuidedConfig:
    """``mask-guided`` classification (MedFocusCLIP, Arora & Namboodiri 2025), our formulation.

    Attributes:
        mask_source: ``gt`` (shard masks), ``seg-unet`` (masks predicted by a seg-unet trained first on the
            training split) or ``sam2`` (optional ``sam2`` package + local weights; clear error otherwise).
        sam2_checkpoint / sam2_config: Local SAM2 weights and model config (never downloaded).
        foreground: Mask labels counted as ROI (empty = every label > 0).
        blend_alpha: Prompt input ``x · (m + α(1 − m))``; 0 = image restricted to the ROI (MedFocusCLIP).
        attention_bias: Add ``log(m_patch + eps)`` to the CLS→patch attention logits (ViT backbones).
        fusion: ``concat`` (global ⊕ ROI features → MLP) or ``roi`` (ROI features only).
        lam: λ in ``λ·CE + (1 − λ)·alignment``.
        temperature: Alignment softmax temperature (CLIP: 0.07).
        text_branch: ``auto`` (CLIP text when open_clip + local weights are present, else learned class
            embeddings), ``learned`` (learned class embeddings) or ``clip`` (required; error when absent).
        clip_model / clip_pretrained: open_clip model name and a local weight file.
        fractions: Training-data fractions evaluated (MedFocusCLIP: 5/10/20/50/100 %).
        seg_epochs: Epochs of the seg-unet that provides masks when ``mask_source=seg-unet``.
    """

    mask_source: str = "gt"
    sam2_checkpoint: str = ""
    sam2_config: str = ""
    foreground: list[int] = field(default_factory=list)
    blend_alpha: float = 0.0
    attention_bias: bool = False
    fusion: str = "concat"
    lam: float = 0.5
    temperature: float = 0.07
    text_branch: str = "auto"
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = ""
    fractions: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.5, 1.0])
    seg_epochs: int = 5

    def __post_init__(self) -> None:
        check_choice(self.mask_source, MASK_SOURCES, "mask_guided.mask_source")
        check_choice(self.fusion, ("concat", "roi"), "mask_guided.fusion")
        check_choice(self.text_branch, ("auto", "learned", "clip"), "mask_guided.text_branch")
        if not 0.0 <= self.lam <= 1.0 or not 0.0 <= self.blend_alpha <= 1.0:
            raise ValueError("mask_guided.lam and mask_guided.blend_alpha must be in [0, 1]")


@dataclass
class SegmentationConfig(RunConfig):
    """One segmentation (or mask-guided) run: the :class:`~downstream.run_config.RunConfig` fields plus these.

    Attributes:
        task: A task of :mod:`downstream.segmentation.tasks` (``seg_tissue``, ``seg_brainmask``, ``seg_lobes``,
            ``mask_guided_tissue``...) or any shard set with masks, ``shards:<dir>``.
        task_kind: ``auto`` or ``segmentation`` (``shards:`` tasks).
        split_mode: ``shard`` (the set's patient split), ``official`` (``meta.official_split``) or ``group`` (a
            fresh subject-grouped split per seed, ``val_frac``/``test_frac``).
        method: ``seg-unet``, ``seg-prompt-shallow``, ``seg-prompt-deep``, ``mask-guided`` or a segmentation method
            registered with ``register_method(key, task="segmentation")``.
        protocol: ``single`` (train/val/test of one task) or ``new_center`` (:mod:`.centers`).
        img_size: Slices are resized to this square size (bilinear images, nearest masks).
        fraction: Fraction of training subjects (groups) used (1.0 = all).
        bootstrap: Bootstrap resamples of the 95 % CI over subjects (0 disables).
        hd95: Compute HD95 (MONAI) at evaluation.
    """

    TASK_FAMILY: ClassVar[str] = "segmentation"
    TASK_KINDS: ClassVar[tuple[str, ...]] = ("auto", "segmentation")
    SPLIT_MODES: ClassVar[tuple[str, ...]] = ("shard", "official", "group")

    task: str = "seg_tissue"
    method: str = "seg-unet"
    backbone: str = "resnet18"
    img_size: int = 64
    output_dir: str = "runs/segmentation"
    augment: bool = True
    progress: bool = False
    protocol: str = "single"
    hd95: bool = True
    optim: SegOptimConfig = field(default_factory=SegOptimConfig)
    loss: SegLossConfig = field(default_factory=SegLossConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    prompt: PromptSegConfig = field(default_factory=PromptSegConfig)
    centers: CentersConfig = field(default_factory=CentersConfig)
    mask_guided: MaskGuidedConfig = field(default_factory=MaskGuidedConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.protocol, PROTOCOLS, "protocol")
        if self.img_size % 32:
            raise ValueError(f"img_size must be a multiple of 32 (U-Net/UNETR strides), got {self.img_size}")
