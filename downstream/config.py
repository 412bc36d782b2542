"""Typed config of one downstream run: (task, method, weights, seed[, shot | fraction]).

Loaded with :func:`lvmmed.config.load_config` (defaults < ``configs/downstream/<task>.yaml`` < ``key=value``).
Method-specific choices live in sub-configs named after the method family (``vp``, ``movl``, ``vpt``, ``adapter``,
``lora``, ``gmoe``, ``linear``, ``mlp``, ``partial``); a run reads only the one its ``method`` needs.

Choices the papers leave open are fields here; their defaults and reasons are in the docstrings below and in
docs/downstream.md.

Example:
    >>> from lvmmed.config import load_config
    >>> cfg = load_config(DownstreamConfig, overrides=["method=vpt-deep", "vpt.num_tokens=4"])
    >>> cfg.vpt.num_tokens
    4
"""

from __future__ import annotations

from dataclasses import dataclass, field

from downstream.run_config import RunConfig
from downstream.tuning import TuningConfig
from lvmmed.config import check_choice

SELECT_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")


@dataclass
class TransferOptimConfig:
    """SGD training of the non-closed-form methods (VPT/Bahng protocol: SGD, momentum 0.9, warmup + cosine).

    Attributes:
        optimizer: ``sgd`` (papers' choice, needed for VP's lr 40) or ``adamw``.
        epochs: Passes over the training split (``max_steps`` > 0 overrides it).
        head_lr / backbone_lr: Base lrs of the head group and of backbone-side groups (finetune, partial).
        lr_scale: Multiplier applied to every group's lr (the current grid value).
        weight_decay: Current weight decay (the current grid value).
        lr_scale_grid / wd_grid: The fixed lr × wd grid searched on val (VPT's ``tune_vtab.py``, github.com/KMnP/vpt).
        warmup_frac: Fraction of steps with linear warmup before cosine decay.
        grad_clip: Max grad norm (0 disables).
        select_metric: Validation metric that picks the grid cell.
        refit_on_trainval: Retrain the best cell on train+val before testing (VTAB protocol); off by default
            because small tasks have small val splits and it doubles the cost.
    """

    optimizer: str = "sgd"
    momentum: float = 0.9
    epochs: int = 10
    max_steps: int = 0
    batch_size: int = 64
    eval_batch_size: int = 256
    head_lr: float = 0.1
    backbone_lr: float = 0.01
    lr_scale: float = 1.0
    weight_decay: float = 0.0
    lr_scale_grid: list[float] = field(default_factory=lambda: [1.0])
    wd_grid: list[float] = field(default_factory=lambda: [0.0])
    warmup_frac: float = 0.1
    grad_clip: float = 0.0
    select_metric: str = "balanced_accuracy"
    refit_on_trainval: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.max_steps < 0 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(
                "optim.epochs and optim.batch_size / eval_batch_size must be >= 1 and optim.max_steps >= 0, got "
                f"{self.epochs}, {self.batch_size} / {self.eval_batch_size}, {self.max_steps}"
            )
        check_choice(self.optimizer, ("sgd", "adamw"), "optim.optimizer")
        check_choice(self.select_metric, SELECT_METRICS, "optim.select_metric")
        if not self.lr_scale_grid or not self.wd_grid:
            raise ValueError("optim.lr_scale_grid and optim.wd_grid must not be empty")


@dataclass
class LinearConfig:
    """Linear probe. ``solver=logreg``: cached features + sklearn L-BFGS logistic regression with C swept on val
    (fast, deterministic, the default). ``solver=sgd``: an SGD head trained on the fly (VPT ``linear``), with the
    run's augmentation."""

    solver: str = "logreg"
    c_grid: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0])
    max_iter: int = 500
    standardize: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_choice(self.solver, ("logreg", "sgd"), "linear.solver")


@dataclass
class MLPConfig:
    """MLP probe (LVM-Med "frozen + multi-FC")."""

    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1


@dataclass
class PartialConfig:
    """Partial fine-tuning: the last ``k`` blocks (plus the final norm) train; ``partial-<k>`` keys override k."""

    k: int = 1


@dataclass
class VPConfig:
    """Pixel-space visual prompts (Bahng et al. 2022) on the normalised input.

    Attributes:
        prompt_size: Pad width (pad) or patch side (fixed/random), in pixels of the backbone input.
        lr: Prompt lr (Bahng: 40 with SGD).
        init: ``randn`` (Bahng) or ``zeros`` (prompted input equals the plain input at step 0).
        random_eval: Where ``vp-random`` puts its patch at eval: ``random`` (Bahng, stochastic) or ``center``
            (deterministic; our default so that test metrics are reproducible).
    """

    prompt_size: int = 4
    lr: float = 40.0
    init: str = "randn"
    random_eval: str = "center"

    def __post_init__(self) -> None:
        check_choice(self.init, ("randn", "zeros"), "vp.init")
        check_choice(self.random_eval, ("random", "center"), "vp.random_eval")


@dataclass
class MoVLConfig:
    """MoVL (Tian et al. 2024): VP + LP on a frozen backbone; loss = CE + weight · discrepancy(prompted, plain).

    The paper's exact form is not public (arXiv 2405.07411 gives no formula or code). Our default: MSE between
    prompted and plain pooled features, weight 1, joint training from an LP-initialised head, pad prompt.

    Attributes:
        weight: λ of the discrepancy term.
        discrepancy: ``mse``, ``cos`` (1 − cosine) or ``kl`` (KL(softmax(prompted) ‖ softmax(plain)), logits only).
        space: ``feature`` (pooled backbone features) or ``logit``.
        init: ``lp`` (head from the logistic-regression probe) or ``random``.
        schedule: ``joint``, ``lp_then_vp`` or ``vp_then_lp`` (sequential phases).
        first_phase_frac: Step fraction of the first phase of a sequential schedule.
        prompter: ``pad``, ``fixed`` or ``random`` (sizes and lr from ``vp``).
        prompt_init: ``zeros`` (the untrained model equals the LP probe it starts from) or ``randn`` (Bahng).
    """

    weight: float = 1.0
    discrepancy: str = "mse"
    space: str = "feature"
    init: str = "lp"
    schedule: str = "joint"
    first_phase_frac: float = 0.5
    prompter: str = "pad"
    prompt_init: str = "zeros"

    def __post_init__(self) -> None:
        check_choice(self.prompt_init, ("randn", "zeros"), "movl.prompt_init")
        check_choice(self.discrepancy, ("mse", "cos", "kl"), "movl.discrepancy")
        check_choice(self.space, ("feature", "logit"), "movl.space")
        check_choice(self.init, ("lp", "random"), "movl.init")
        check_choice(self.schedule, ("joint", "lp_then_vp", "vp_then_lp"), "movl.schedule")
        check_choice(self.prompter, ("pad", "fixed", "random"), "movl.prompter")
        if self.discrepancy == "kl" and self.space != "logit":
            raise ValueError("movl.discrepancy=kl compares class distributions: set movl.space=logit")


@dataclass
class VPTConfig:
    """Visual Prompt Tuning (Jia et al. 2022). Init: Xavier uniform with v = sqrt(6 / (C·p·p + D)).

    ``init_head``: ``random`` (the paper) or ``lp`` (the head starts from the logistic-regression probe on plain
    features, as LP-FT does for fine-tuning; our default, so prompts refine a working head).
    """

    num_tokens: int = 5
    lr: float = 1.0
    dropout: float = 0.0
    init_head: str = "lp"

    def __post_init__(self) -> None:
        check_choice(self.init_head, ("lp", "random"), "vpt.init_head")


@dataclass
class FinetuneConfig:
    """Full fine-tuning. ``init_head``: ``lp`` (LP-FT, Kumar et al. ICLR 2022: the head starts from the linear
    probe, which distorts pretrained features less than a random head; our default) or ``random``."""

    init_head: str = "lp"

    def __post_init__(self) -> None:
        check_choice(self.init_head, ("lp", "random"), "finetune.init_head")


@dataclass
class AdapterConfig:
    """Bottleneck adapters (Houlsby/Pfeiffer style) after every block: h + up(act(down(h))), up zero-initialised.

    ``reduction`` is VPT's ``REDUCATION_FACTOR`` (8). Placement after the whole block (not inside it after the
    MLP) is our choice: it needs no change to the backbone's blocks and works for ViT tokens and ResNet maps.
    """

    reduction: int = 8
    lr: float = 0.1


@dataclass
class LoRAConfig:
    """LoRA (Hu et al. 2022) through peft on the named Linear/Conv layers (``qkv`` of timm ViTs)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["qkv"])
    lr: float = 0.05


@dataclass
class GMoEConfig:
    """GMoE-Adapter (Mo et al. 2024), our formulation (the gate of arXiv 2404.12876 is not public).

    Attributes:
        general_backbone: Architecture of the general stream ("" = same as ``backbone``).
        general_weights: Weight source of the general stream (``random``, an export dir, a file).
        num_experts: Bottleneck experts per block.
        top_k: Keep the k largest gate weights (renormalised); 0 = dense softmax gate.
        reduction: Expert bottleneck reduction factor.
        balance_weight: Weight of the Switch-style load-balancing loss K·Σ_k f_k·P_k.
        expert_input: ``medical`` (experts read the medical stream) or ``sum`` (medical + general hidden states,
            same width required).
        form: ``medical`` (every expert reads the medical stream; the gate sees both) or ``dual`` (medical experts
            on the medical stream, general experts on the general stream, the gate mixes both families' outputs;
            :class:`downstream.methods.gmoe.DualStreamGMoE`).
        lr: Lr of experts and gates.
    """

    general_backbone: str = ""
    general_weights: str = "random"
    num_experts: int = 4
    top_k: int = 0
    reduction: int = 8
    balance_weight: float = 0.01
    expert_input: str = "medical"
    form: str = "medical"
    lr: float = 0.1

    def __post_init__(self) -> None:
        check_choice(self.expert_input, ("medical", "sum"), "gmoe.expert_input")
        check_choice(self.form, ("medical", "dual"), "gmoe.form")
        if self.num_experts < 1 or not 0 <= self.top_k <= self.num_experts:
            raise ValueError("gmoe needs num_experts >= 1 and 0 <= top_k <= num_experts")


@dataclass
class DownstreamConfig(RunConfig):
    """One downstream classification (or multi-label) cell: the :class:`~downstream.run_config.RunConfig` fields
    (``task``, ``method``, ``weights``, ``backbone``, ``seed``/``seeds``, ``fraction``, ``split_mode``...) plus these.

    Attributes:
        task: A bundled task (:mod:`downstream.tasks`: ``tissue``, ``tissue_ood``, ``modality``, ``region``,
            ``color2d``) or any shard set, ``shards:<dir>`` (:mod:`downstream.shard_tasks`).
        task_kind: For ``shards:`` tasks: ``auto`` (from the samples), ``classification``, ``multilabel`` or
            ``segmentation``.
        ood_shards: For ``shards:`` tasks: another shard set (same classes) used as the OOD test set.
        ood_center: For ``shards:`` tasks: a ``meta.center`` held out of train/val/test as the OOD test set.
        norm_from_weights: Run the weights at their own settings (:func:`downstream.inputs.weight_settings`): an
            lvmmed export's recorded ``input_mean``/``input_std``; ImageNet statistics and 3 channels for
            published LVM-Med files and ``torchvision:``/``timm:`` files; and for the published files their
            architecture and input size (``lvmmed-resnet50``: 224 px, ``lvmmed-vitb``: 1024 px).
        shot: k-shot per class of the training split (0 = off).
        split_mode: ``shard`` (the shard set's group-based split), ``group`` (re-split by group with ``seed``),
            ``random`` (image-level, for the patient-leak comparison), ``official`` (the release's split kept in
            ``meta.official_split``; ``shards:`` tasks).
        patch_size / patch_stride / max_per_class: Patch extraction of the bundled patch tasks (``max_per_class``
            also caps the bundled image tasks; ``shards:`` tasks keep every sample).
        slab_width / slab_gap: Interleaved-slab split of ``brain_sector`` (:mod:`downstream.sector_task`): slabs
            of ``slab_width`` source slices dealt round-robin to train/val/train/test, ``slab_gap`` slices dropped
            between two slabs.
        tuning: The per-method hyper-parameter search with early stopping (:mod:`downstream.tuning`).
    """

    ood_shards: str = ""
    ood_center: str = ""
    shot: int = 0
    patch_size: int = 16
    patch_stride: int = 4
    max_per_class: int = 200
    slab_width: int = 8
    slab_gap: int = 4
    optim: TransferOptimConfig = field(default_factory=TransferOptimConfig)
    linear: LinearConfig = field(default_factory=LinearConfig)
    mlp: MLPConfig = field(default_factory=MLPConfig)
    partial: PartialConfig = field(default_factory=PartialConfig)
    vp: VPConfig = field(default_factory=VPConfig)
    movl: MoVLConfig = field(default_factory=MoVLConfig)
    vpt: VPTConfig = field(default_factory=VPTConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    gmoe: GMoEConfig = field(default_factory=GMoEConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)

    def __post_init__(self) -> None:
        if self.shot < 0:
            raise ValueError("shot must be >= 0")
        if self.shot and self.fraction < 1.0:
            raise ValueError("use either shot or fraction, not both")
        super().__post_init__()

    def setting(self) -> str:
        """``shot<k>``, ``frac<f>`` or ``full``."""
        return f"shot{self.shot}" if self.shot else super().setting()
