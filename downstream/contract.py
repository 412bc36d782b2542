"""The downstream method contract: :class:`Method` (every adaptation method) and :class:`HeadMethod` (a head on
pooled backbone features, the base of the classification methods).

A method is a small ``nn.Module`` that wraps a backbone (lvmmed ``Backbone`` contract), declares its trainable
parameters at construction and computes its own loss terms (the training loop only sums them). Conventions shared
by every method:

* the backbone is frozen unless the method says otherwise, and frozen sub-trees stay in ``eval()`` during
  training (VPT's overridden ``train()``), so BatchNorm statistics and dropout never change;
* ``param_groups(cfg)`` returns separate groups (pixel prompts want lr ~40, heads a small lr);
* ``delta_state_dict()`` holds only the declared trainable tensors; checkpoints add a reference to the weights;
* ``parameter_report()`` gives trainable and total parameters and the trainable percentage.

This module imports nothing from ``downstream``: method modules import it, and :mod:`downstream.registry` maps
keys to the method classes (a plain table), so the package has no import circle.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Probe(HeadMethod):
    ...     def __init__(self, backbone, num_classes, cfg, key=None):
    ...         super().__init__(backbone, num_classes, cfg, key)
    ...         self.head = make_head(backbone.feature_dim, num_classes)
    ...         self.declare_trainable()
    ...     def forward(self, x):
    ...         return self.head(self.backbone(x))
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TASKS = ("classification", "segmentation")


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Task loss: CE for integer targets, BCE-with-logits for multi-label (float, same shape) targets."""
    if target.dtype.is_floating_point and target.shape == logits.shape:
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.cross_entropy(logits, target)


class Method(nn.Module):
    """Base class of downstream methods.

    Subclasses build their modules in ``__init__`` (calling ``super().__init__`` first, which freezes the
    backbone), unfreeze what they train, and finally call :meth:`declare_trainable`. They implement
    :meth:`forward` returning logits, or a dict with ``"logits"`` plus whatever :meth:`extra_loss` needs.

    The class attributes below are the method's declared capabilities: the registry, the CLI and the training
    code read them directly (every method has them, with these defaults).

    Attributes:
        registry_key: Default key of the class (``build_method`` passes the concrete key, stored in ``self.key``).
        task: ``"classification"`` or ``"segmentation"`` (one of :data:`TASKS`): the task family, which picks the
            run config (``DownstreamConfig`` or ``SegmentationConfig``) and the run function.
        fit_mode: ``"sgd"`` (trained by :mod:`downstream.train_loop`) or ``"features"`` (closed-form fit on
            cached backbone features, e.g. the logistic-regression linear probe).
        init_head_from_probe: The runner fits a logistic-regression probe on cached features first and loads
            it with :meth:`load_probe` (LP-initialised head, e.g. MoVL ``init=lp``).
        head_only: Only a head on frozen pooled features trains: tuning trains and scores it on cached features.
        accepts_plain_features: ``forward(x, plain=features)`` takes cached frozen features (MoVL's plain
            stream, the head-only probes' inputs); the trainer hands them over.
        fits_itself_on_features: With ``fit_mode="features"``, the runner hands the cached train features to
            :meth:`fit_on_features` instead of fitting a logistic-regression probe (head-free methods: ``knn``).
    """

    registry_key: str = ""
    task: str = "classification"
    fit_mode: str = "sgd"
    init_head_from_probe: bool = False
    head_only: bool = False
    accepts_plain_features: bool = False
    fits_itself_on_features: bool = False

    @classmethod
    def variant(cls, cfg: Any) -> type[Method]:
        """The class that runs ``cfg`` (itself; a family may pick a sibling, e.g. ``gmoe.form=dual``)."""
        return cls

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: Any, key: str | None = None) -> None:
        super().__init__()
        self.key = key or self.registry_key
        self.cfg = cfg
        self.num_classes = int(num_classes)
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self._backbone_numel = sum(p.numel() for p in backbone.parameters())  # before any injection (LoRA)
        self._declared: list[str] = []

    # ----- declaration ---------------------------------------------------------------------------
    def declare_trainable(self) -> None:
        """Records the parameters that currently require grad as this method's trainable delta."""
        self._declared = [n for n, p in self.named_parameters() if p.requires_grad]
        if not self._declared:
            raise RuntimeError(f"{type(self).__name__} declares no trainable parameters")

    @property
    def declared_names(self) -> list[str]:
        return list(self._declared)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The declared trainable parameters (phases may temporarily freeze some of them)."""
        named = dict(self.named_parameters())
        return [named[n] for n in self._declared]

    def named_trainable(self) -> Iterator[tuple[str, nn.Parameter]]:
        named = dict(self.named_parameters())
        for n in self._declared:
            yield n, named[n]

    # ----- optimisation --------------------------------------------------------------------------
    def param_groups(self, cfg: Any) -> list[dict[str, Any]]:
        """Optimiser groups ``{"name", "params", "lr", "weight_decay"}``.

        The default puts every declared parameter whose name starts with ``head`` into a ``head`` group at
        ``cfg.optim.head_lr`` and the rest into a ``backbone`` group at ``cfg.optim.backbone_lr``; both are
        multiplied by ``cfg.optim.lr_scale`` (the grid value). Subclasses with prompts override this.
        """
        head = [p for n, p in self.named_trainable() if n.startswith("head")]
        rest = [p for n, p in self.named_trainable() if not n.startswith("head")]
        return self._groups(cfg, [("head", head, cfg.optim.head_lr), ("backbone", rest, cfg.optim.backbone_lr)])

    @staticmethod
    def _groups(cfg: Any, spec: list[tuple[str, list[nn.Parameter], float]]) -> list[dict[str, Any]]:
        scale, wd = float(cfg.optim.lr_scale), float(cfg.optim.weight_decay)
        return [
            {"name": name, "params": params, "lr": lr * scale, "weight_decay": wd}
            for name, params, lr in spec
            if params
        ]

    def phases(self) -> list[tuple[str, float]]:
        """Training phases as ``(name, fraction_of_steps)``; one joint phase by default."""
        return [("joint", 1.0)]

    def set_phase(self, name: str) -> None:
        """Switches which declared parameters train in phase ``name`` (default: all)."""
        for p in self.trainable_parameters():
            p.requires_grad_(True)

    # ----- losses --------------------------------------------------------------------------------
    @staticmethod
    def logits_of(out: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        return out["logits"] if isinstance(out, dict) else out

    def task_loss(self, out: torch.Tensor | dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (BCE for multi-label) on the logits. Segmentation methods override this."""
        return cross_entropy_loss(self.logits_of(out), target)

    def extra_loss(self, out: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Auxiliary, already weighted loss terms (MoVL discrepancy, GMoE balance). None by default."""
        return {}

    def losses(self, out: torch.Tensor | dict[str, torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        """All loss terms; the training loop sums them."""
        return {"task": self.task_loss(out, target), **self.extra_loss(out)}

    # ----- features (cached-feature fits) --------------------------------------------------------
    @torch.no_grad()
    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen pooled backbone features (B, feature_dim) of plain inputs."""
        return self.backbone(x)

    def fit_on_features(self, features: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """Fits the method itself on cached features (only for ``fits_itself_on_features``); returns its record."""
        raise NotImplementedError(f"{type(self).__name__} does not declare fits_itself_on_features")

    def load_probe(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Loads a fitted linear probe (C, D) / (C,) into the method's head. Methods with a head override."""
        raise NotImplementedError(f"{type(self).__name__} has no linear head to load a probe into")

    # ----- modes and reporting -------------------------------------------------------------------
    def train(self, mode: bool = True) -> Method:
        """Sets train mode, but keeps every sub-tree without trainable parameters in ``eval()``."""
        super().train(mode)
        if mode:
            _eval_frozen_subtrees(self)
        return self

    def parameter_report(self) -> dict[str, float]:
        """Trainable / total parameters, trainable %, and the total as a multiple of the primary backbone."""
        seen: set[int] = set()
        total = 0
        for p in self.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        trainable = sum(p.numel() for p in self.trainable_parameters())
        backbone = self._backbone_numel
        return {
            "trainable": int(trainable),
            "total": int(total),
            "trainable_pct": 100.0 * trainable / max(total, 1),
            "backbone": int(backbone),
            "param_multiple": total / max(backbone, 1),
        }

    def delta_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the declared trainable tensors (detached, on CPU)."""
        return {n: p.detach().cpu().clone() for n, p in self.named_trainable()}

    def load_delta_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Loads a delta; every declared tensor must be present and no other."""
        missing = sorted(set(self._declared) - set(state))
        unexpected = sorted(set(state) - set(self._declared))
        if missing or unexpected:
            raise KeyError(f"delta mismatch for {self.key}: missing={missing} unexpected={unexpected}")
        named = dict(self.named_parameters())
        with torch.no_grad():
            for n, t in state.items():
                named[n].copy_(t.to(named[n].device, named[n].dtype))


def _has_trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _eval_frozen_subtrees(module: nn.Module) -> None:
    for child in module.children():
        if not _has_trainable(child):
            child.eval()
        else:
            _eval_frozen_subtrees(child)


def make_head(in_dim: int, num_classes: int, dropout: float = 0.0) -> nn.Module:
    """A linear head (optionally with dropout, VPT ``MODEL.LINEAR.DROPOUT``)."""
    linear = nn.Linear(in_dim, num_classes)
    return nn.Sequential(nn.Dropout(dropout), linear) if dropout > 0 else linear


class HeadMethod(Method):
    """Shared base: frozen backbone, ``self.head`` on pooled features, probes load into the head."""

    def _linear(self) -> nn.Linear:
        head = self.head
        return head if isinstance(head, nn.Linear) else next(m for m in head.modules() if isinstance(m, nn.Linear))

    def load_probe(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        linear = self._linear()
        if linear.weight.shape != weight.shape:
            raise ValueError(f"probe shape {tuple(weight.shape)} != head shape {tuple(linear.weight.shape)}")
        with torch.no_grad():
            linear.weight.copy_(weight.to(linear.weight))
            linear.bias.copy_(bias.to(linear.bias))
