"""``knn``: weighted k-NN on frozen pooled features, a head-free evaluation of the weights themselves.

The classifier of the pretraining monitor (:mod:`lvmmed.probes`; Wu et al., CVPR 2018,
https://arxiv.org/abs/1805.01978, with DINO's defaults ``k=20``, ``temperature=0.07``, Caron et al., ICCV 2021,
https://arxiv.org/abs/2104.14294): features are L2-normalised, a query's ``k`` most cosine-similar training
samples vote for their class with weight ``exp(cos / temperature)``, and the vote shares are the class scores
(their logarithms are the logits, so softmax gives the shares back and AUROC is defined). Nothing is selected on
val: fixed weights and splits give the same prediction on every seed, so the seeds of a ``knn`` column differ only
through what the weights depend on (random init, pretraining run).

Fitting (``fit_mode="features"``): :func:`downstream.fitting.fit_method` caches the frozen features of the train
split and calls :meth:`KNNClassifier.fit_on_features`, which stores them (plus val's with
``optim.refit_on_trainval``) as the *memory*. The memory (features and labels) is the method's delta
(``delta_state_dict``), so its "trainable" parameter count is the size of the stored features. An unfitted
classifier (empty memory) predicts uniformly, so the shared SGD loop can still run it (timing benchmarks); SGD
would move the memory features, which no protocol asks for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from downstream.contract import Method
from lvmmed.probes import knn_vote_scores


class KNNClassifier(Method):
    """k-NN vote on frozen features against a stored memory of labelled training features."""

    k: int = 20
    temperature: float = 0.07
    fit_mode = "features"
    fits_itself_on_features = True

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: Any, key: str | None = None) -> None:
        super().__init__(backbone, num_classes, cfg, key)
        dim = int(backbone.feature_dim)
        self.memory = nn.Parameter(torch.zeros(0, dim))
        self.register_buffer("memory_labels", torch.zeros(0, dtype=torch.long))
        self.declare_trainable()

    def fit_on_features(self, features: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """Stores ``features`` (N, D) and integer ``labels`` (N,) as the memory; returns the fit record."""
        if len(features) == 0 or len(features) != len(labels):
            raise ValueError(f"k-NN needs labelled features, got {len(features)} rows and {len(labels)} labels")
        device = self.memory.device
        self.memory = nn.Parameter(torch.as_tensor(np.asarray(features), dtype=torch.float32, device=device))
        self.memory_labels = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device)
        return {"k": min(self.k, len(labels)), "temperature": self.temperature, "memory": len(labels)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log vote shares (B, C) of ``x``; uniform logits while the memory is empty."""
        with torch.no_grad():
            features = self.backbone(x)
        if len(self.memory) == 0:
            return torch.zeros(len(x), self.num_classes, device=x.device) + 0.0 * self.memory.sum()
        shares = knn_vote_scores(self.memory, self.memory_labels, features.to(self.memory),
                                 self.num_classes, self.k, self.temperature)  # fmt: skip
        return torch.log(shares.clamp_min(1e-12))

    def delta_state_dict(self) -> dict[str, torch.Tensor]:
        """The memory: features (the declared tensor) and their labels."""
        return {**super().delta_state_dict(), "memory_labels": self.memory_labels.detach().cpu().clone()}

    def load_delta_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Loads a stored memory (its size is the one it was fitted with)."""
        missing = sorted({"memory", "memory_labels"} - set(state))
        if missing or set(state) - {"memory", "memory_labels"}:
            raise KeyError(f"delta mismatch for {self.key}: expected memory and memory_labels, got {sorted(state)}")
        self.fit_on_features(state["memory"].float().cpu().numpy(), state["memory_labels"].long().cpu().numpy())
