"""Cheap frozen-feature probes: pooled backbone features, a weighted k-NN classifier and a logistic-regression probe.

Built for monitoring self-supervised pretraining (``pretrain/monitor.py``) and reusable by any evaluation:

* **Weighted k-NN** (Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
  CVPR 2018, https://arxiv.org/abs/1805.01978; the monitor of DINO, Caron et al., ICCV 2021,
  https://arxiv.org/abs/2104.14294): features are L2-normalised, each query's ``k`` most cosine-similar memory
  samples vote for their class with weight ``exp(similarity / temperature)``. DINO's defaults ``k=20``,
  ``temperature=0.07``; ``k`` is clamped to the memory size. The vote is scikit-learn's brute-force
  ``KNeighborsClassifier`` (cosine distance, that weight as a callable), on CPU in float64: it gives the same
  predictions as lightly's ``knn_predict`` (tested), whose import pulls in PyTorch Lightning (seconds, at every
  run's first evaluation), and the monitor's memory is small. :func:`knn_vote_scores` is the same vote in torch
  (class shares, differentiable, on the inputs' device) for callers that need scores, e.g. AUROC.
* **Linear probe**: scikit-learn ``LogisticRegression`` (L-BFGS, multinomial) on features standardised with the
  memory's statistics, one fixed ``C`` and at most ``max_iter`` iterations. No C sweep and no early stopping: a
  monitor compares a run with itself over time, so a fixed, deterministic fit is the point; a tuned probe is
  downstream's job.

Nothing here draws random numbers (both classifiers are deterministic), so calling them does not move any RNG.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def pooled_features(
    backbone: nn.Module,
    images: torch.Tensor,
    batch_size: int = 256,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> torch.Tensor:
    """(N, D) float32 CPU features of ``backbone(images)`` in eval mode; the module's mode is restored after.

    Args:
        backbone: Maps (B, C, H, W) inputs to (B, D) pooled features (an lvmmed ``Backbone``).
        images: (N, C, H, W) inputs on any device; batches are moved to the backbone's device.
        batch_size: Forward batch size.
        prepare: Optional per-batch transform applied on the backbone's device (e.g. dtype and normalisation).
        autocast: Optional factory of a mixed-precision context (e.g. ``accelerator.autocast``).
    """
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    try:
        out = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device, non_blocking=True)
            batch = prepare(batch) if prepare is not None else batch.float()
            with autocast() if autocast is not None else contextlib.nullcontext():
                out.append(backbone(batch).float().cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def check_memory(memory: torch.Tensor, memory_labels: torch.Tensor, num_classes: int) -> None:
    """Raises ``ValueError`` unless the k-NN memory is non-empty, has one label per row, labels in [0, C)."""
    if len(memory) == 0 or len(memory) != len(memory_labels):
        raise ValueError(
            f"k-NN needs a non-empty memory with one label per row, got {len(memory)} / {len(memory_labels)}"
        )
    if int(memory_labels.max()) >= num_classes or int(memory_labels.min()) < 0:
        raise ValueError(f"memory labels must lie in [0, {num_classes})")


def knn_predict_labels(
    memory: torch.Tensor,
    memory_labels: torch.Tensor,
    queries: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> torch.Tensor:
    """Top-1 class of each query by the weighted k-NN vote (see the module docstring).

    Args:
        memory: (N, D) labelled features; ``memory_labels``: (N,) integer classes in [0, num_classes).
        queries: (M, D) features to classify.
        num_classes: Number of classes (the vote is over the classes present in the memory).
        k: Neighbours that vote (clamped to N).
        temperature: Vote weight ``exp(cos / temperature)``.

    Returns:
        (M,) predicted class indices (ties go to the smaller class).
    """
    from sklearn.neighbors import KNeighborsClassifier
    from threadpoolctl import threadpool_limits

    check_memory(memory, memory_labels, num_classes)

    def vote_weight(cosine_distance: np.ndarray) -> np.ndarray:
        return np.exp((1.0 - cosine_distance) / float(temperature))

    knn = KNeighborsClassifier(min(int(k), len(memory)), weights=vote_weight, algorithm="brute", metric="cosine")
    with threadpool_limits(1):  # small problems: one BLAS thread avoids contention on a busy CPU
        knn.fit(memory.double().numpy(), memory_labels.long().numpy())
        return torch.from_numpy(knn.predict(queries.double().numpy())).long()


def knn_vote_scores(
    memory: torch.Tensor,
    memory_labels: torch.Tensor,
    queries: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> torch.Tensor:
    """(M, num_classes) share of each class in the weighted k-NN vote of every query; rows sum to 1.

    The vote of :func:`knn_predict_labels` (its arg-max is that prediction, up to ties between equally similar
    neighbours), written in torch: on the inputs' device, in their dtype, and differentiable with respect to
    ``memory`` and ``queries``. Used where class scores are needed (AUROC), e.g. the ``knn`` downstream method.
    """
    check_memory(memory, memory_labels, num_classes)
    labels = memory_labels.long().to(memory.device)
    similarity = F.normalize(queries, dim=1) @ F.normalize(memory, dim=1).T
    top, index = similarity.topk(min(int(k), len(memory)), dim=1)
    weights = torch.exp((top - 1.0) / float(temperature))  # exp(cos / T) up to a factor that cancels below
    votes = torch.zeros(len(queries), num_classes, dtype=weights.dtype, device=weights.device)
    votes = votes.scatter_add(1, labels[index], weights)
    return votes / votes.sum(1, keepdim=True)


def knn_accuracy(
    memory: torch.Tensor,
    memory_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 accuracy in [0, 1] of the weighted k-NN classifier on labelled queries."""
    predicted = knn_predict_labels(memory, memory_labels, queries, num_classes, k, temperature)
    return float((predicted == query_labels.long()).float().mean())


def linear_probe_accuracy(
    train: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    test: np.ndarray | torch.Tensor,
    test_labels: np.ndarray | torch.Tensor,
    c: float = 1.0,
    max_iter: int = 200,
) -> float:
    """Top-1 accuracy in [0, 1] of a logistic-regression probe fitted on ``train`` and scored on ``test``.

    Raises:
        ValueError: Fewer than two classes in ``train_labels``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    x, y = np.asarray(train, dtype=np.float64), np.asarray(train_labels).astype(np.int64)
    if len(np.unique(y)) < 2:
        raise ValueError("a linear probe needs at least two classes in its training split")
    mean, std = x.mean(0), x.std(0) + 1e-6
    probe = LogisticRegression(C=float(c), max_iter=int(max_iter))
    # One BLAS thread: the problem is small, and BLAS threads spinning on a busy CPU cost more than they save.
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit((x - mean) / std, y)
        predicted = probe.predict((np.asarray(test, dtype=np.float64) - mean) / std)
    return float((predicted == np.asarray(test_labels).astype(np.int64)).mean())
