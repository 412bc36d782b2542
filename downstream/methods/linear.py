"""Linear probe (LP): a linear head on frozen pooled backbone features.

Default protocol (``linear.solver=logreg``): cached features + sklearn ``LogisticRegression`` (L-BFGS,
multinomial), with the inverse regularisation C swept on the validation split (CLIP-style linear probe; fast and
deterministic). Features are standardised with train statistics and the scaler is folded into the head, so the
fitted probe is an ordinary ``nn.Linear`` on raw features. ``linear.solver=sgd`` trains the same head with SGD
and the run's augmentation (VPT ``TRANSFER_TYPE=linear``, head dropout ``linear.dropout``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from downstream.contract import HeadMethod, make_head
from downstream.metrics import softmax


@dataclass
class ProbeFit:
    """A fitted logistic-regression probe on raw features: logits = features @ weight.T + bias."""

    weight: torch.Tensor
    bias: torch.Tensor
    c: float
    val_scores: dict[float, float]


def fit_logistic_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    num_classes: int,
    val_x: np.ndarray | None = None,
    val_y: np.ndarray | None = None,
    c_grid: list[float] | tuple[float, ...] = (1.0,),
    score_fn: Any = None,
    max_iter: int = 1000,
    standardize: bool = True,
) -> ProbeFit:
    """Fits multinomial logistic regression for every C and keeps the best on val.

    Args:
        train_x / train_y: (N, D) features and integer labels in [0, num_classes).
        num_classes: Width of the returned head; classes missing from train get bias −1e4 (never predicted).
        val_x / val_y: Validation split; without it the first C of the grid is used.
        c_grid: Inverse regularisation strengths.
        score_fn: ``score_fn(y_true, probs) -> float`` (higher is better); default accuracy.
        max_iter: L-BFGS iterations.
        standardize: Standardise features with train mean/std (folded into the returned weights).

    Returns:
        A :class:`ProbeFit` with (num_classes, D) weight and (num_classes,) bias.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    train_x = np.asarray(train_x, dtype=np.float64)
    mean = train_x.mean(0) if standardize else np.zeros(train_x.shape[1])
    std = train_x.std(0) + 1e-6 if standardize else np.ones(train_x.shape[1])
    classes = np.unique(train_y)
    if len(classes) < 2:
        raise ValueError("a logistic-regression probe needs at least two classes in the training split")

    from threadpoolctl import threadpool_limits

    clf = LogisticRegression(max_iter=max_iter, warm_start=True)  # warm start along the ascending C grid

    def fit(c: float) -> tuple[np.ndarray, np.ndarray]:
        clf.set_params(C=c)
        # One BLAS thread: the problem is small, and spinning BLAS threads on a busy CPU cost 10x here.
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit((train_x - mean) / std, train_y)
        coef, intercept = clf.coef_, clf.intercept_
        if coef.shape[0] == 1:  # binary: sklearn keeps one row; logits [0, w·x + b] give the same softmax
            coef = np.concatenate([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        weight = np.zeros((num_classes, train_x.shape[1]))
        bias = np.full(num_classes, -1e4)
        weight[clf.classes_] = coef / std
        bias[clf.classes_] = intercept - (coef / std) @ mean
        return weight, bias

    scores: dict[float, float] = {}
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for c in sorted(float(c) for c in c_grid):
        weight, bias = fit(c)
        if val_x is None or val_y is None or len(val_y) == 0:
            best = (c, weight, bias)
            break
        logits = np.asarray(val_x, dtype=np.float64) @ weight.T + bias
        probs = softmax(logits)
        score = score_fn(val_y, probs) if score_fn else float((probs.argmax(1) == val_y).mean())
        scores[c] = float(score)
        if best is None or score > scores[best[0]]:
            best = (c, weight, bias)
    assert best is not None
    return ProbeFit(
        weight=torch.tensor(best[1], dtype=torch.float32),
        bias=torch.tensor(best[2], dtype=torch.float32),
        c=best[0],
        val_scores=scores,
    )


class LinearProbe(HeadMethod):
    """LP: logits = W f(x) + b with f frozen (trainable: D·C + C)."""

    accepts_plain_features = True  # trains on cached frozen features (downstream.train_loop.Trainer)
    head_only = True

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: Any, key: str | None = None) -> None:
        super().__init__(backbone, num_classes, cfg, key)
        sgd = cfg.linear.solver == "sgd"
        self.fit_mode = "sgd" if sgd else "features"
        self.head = make_head(backbone.feature_dim, num_classes, cfg.linear.dropout if sgd else 0.0)
        self.declare_trainable()

    def forward(self, x: torch.Tensor, plain: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``x``, or of its cached frozen features ``plain`` (B, D) when given."""
        if plain is None:
            with torch.no_grad():
                plain = self.backbone(x)
        return self.head(plain)
