"""The LVM-Med second-order graph-matching loss (Nguyen et al., "LVM-Med: Learning Large-Scale Self-Supervised
Vision Models for Medical Imaging via Second-order Graph Matching", NeurIPS 2023, arXiv:2306.11925).

For a batch of N images with two augmented views, the projector outputs Zs, Zt (N×d) become the nodes of two k-NN
graphs. A message-passing network refines the nodes, node and edge affinities (Cv, Ce) are computed, and a
combinatorial solver finds the permutation X̂ maximising ``⟨Cv, X⟩ + Σ Ce[p,q]·X[i,a]·X[j,b]``. The loss is the
Hamming distance between X̂ and the ground truth (view s of image i ↔ view t of image i, i.e. X = I), and the
gradient through the solver is the black-box estimate of Vlastelica et al. (ICLR 2020), as in BB-GM (Rolínek et
al., ECCV 2020). The pretraining code of LVM-Med is not public; the choices the paper leaves open are documented in
``GraphMatchingConfig`` and in the modules of ``lvmmed.matching``. Our further choices:

* Embeddings are L2-normalised and the whole loss runs in fp32 (bf16-safe), whatever the input dtype.
* ``loss_hamming = |X̂ − I|₁ / (2N)``, the fraction of wrongly matched nodes, so ``match_acc = 1 − loss_hamming``.
* The margin is applied only in training mode (``module.train()``), as in BB-GM; ``eval()`` reports the plain
  matching accuracy.
* Batch size 1 gives a zero loss that is still connected to the inputs (``match_acc = 1``); duplicated embeddings
  are matched deterministically (ties broken by the solver) and give finite values.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lvmmed.losses._checks import check_pair
from lvmmed.losses.config import LOSSES, GraphMatchingConfig
from lvmmed.losses.distributed import gather_batch
from lvmmed.matching.affinity import batch_standardize, edge_factors, local_affinity, pool_local, unit_rows
from lvmmed.matching.blackbox import BlackBoxMatching
from lvmmed.matching.graph import knn_graph
from lvmmed.matching.message_passing import MessagePassing
from lvmmed.matching.perturbed import PerturbedBlackBoxMatching
from lvmmed.matching.qap import QAP
from lvmmed.matching.solvers import SolverSpec

INFO_KEYS = (
    "loss_hamming",
    "loss_aux",
    "match_acc",
    "objective",
    "objective_identity",
    "solver_iters",
    "num_nodes",
    "local_used",
)


def _solver_spec(cfg: GraphMatchingConfig) -> SolverSpec:
    method = cfg.solver_method
    if method == "auto":
        method = "rrwm" if cfg.solver == "pygmtools" else "ipfp"
    return SolverSpec(
        cfg.solver,
        method,
        cfg.solver_max_iter,
        backward_max_iter=cfg.solver_backward_iter,
        assignment=cfg.solver_assignment,
    )


class GraphMatchingLoss(nn.Module):
    """LVM-Med graph-matching loss: ``loss, info = GraphMatchingLoss(dim=128)(z0, z1)``.

    Args:
        dim: projector output dimension (needed by the message-passing network; may be None if mp_layers == 0).
        config: a ``GraphMatchingConfig``; keyword arguments override its fields
            (``GraphMatchingLoss(dim, k=8, solver="factorized")``).

    Forward args:
        z0, z1: (B, D) projections of the two views; row i of both comes from the same image.
        feats0, feats1: optional (B, C, h, w) pre-pool feature maps for the local affinity term.

    Returns:
        ``(loss, info)``: a scalar tensor and a dict of floats (``INFO_KEYS``).

    Raises:
        ValueError: on mismatched or non-2-D shapes, empty batches, or feature maps of the wrong batch size.
        FloatingPointError: on NaN/inf inputs when ``on_nonfinite == "raise"``.
    """

    def __init__(self, dim: int | None = None, config: GraphMatchingConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        base = config or GraphMatchingConfig()
        self.config = dataclasses.replace(base, **overrides) if overrides else base
        cfg = self.config
        if cfg.mp_layers > 0 and dim is None:
            raise ValueError("GraphMatchingLoss needs dim (the projector output size) when mp_layers > 0")
        self.dim = dim
        self.message_passing = MessagePassing(dim or 0, cfg.mp_layers, cfg.mp_hidden, cfg.mp_residual_scale)
        self.spec = _solver_spec(cfg)

    @property
    def uses_local_features(self) -> bool:
        """Whether the trainer should pass pre-pool feature maps (the local affinity term is on)."""
        return self.config.local_weight > 0

    def _nonfinite(self, z0: Tensor, z1: Tensor) -> tuple[Tensor, dict[str, float]]:
        if self.config.on_nonfinite == "raise":
            raise FloatingPointError("GraphMatchingLoss: the embeddings contain NaN or inf")
        nan = float("nan")
        loss = (z0.float().sum() + z1.float().sum()) * nan
        info = dict.fromkeys(INFO_KEYS, nan)
        info.update(num_nodes=float(z0.shape[0]), nonfinite_inputs=1.0)
        return loss, info

    def forward(
        self, z0: Tensor, z1: Tensor, feats0: Tensor | None = None, feats1: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        # Autocast off: under mixed precision (accelerate's bf16/fp16) the matmuls below would return bf16/fp16
        # whatever their fp32 inputs, and the solvers' index_add_ needs one dtype; the loss is fp32 throughout.
        with torch.autocast(device_type=z0.device.type, enabled=False):
            return self._forward(z0, z1, feats0, feats1)

    def _forward(
        self, z0: Tensor, z1: Tensor, feats0: Tensor | None, feats1: Tensor | None
    ) -> tuple[Tensor, dict[str, float]]:
        cfg = self.config
        check_pair(z0, z1)
        use_local = cfg.local_weight > 0 and feats0 is not None and feats1 is not None
        if (feats0 is None) != (feats1 is None):
            raise ValueError("pass both feats0 and feats1, or neither")
        if use_local and (feats0.shape != feats1.shape or feats0.dim() != 4 or feats0.shape[0] != z0.shape[0]):
            raise ValueError(
                f"feature maps must be (B, C, h, w) with B = {z0.shape[0]}, got "
                f"{tuple(feats0.shape)} and {tuple(feats1.shape)}"
            )
        if not (torch.isfinite(z0).all() and torch.isfinite(z1).all()):
            return self._nonfinite(z0, z1)

        zs, zt = z0.float(), z1.float()
        ds = dt = None
        if use_local:
            ds, dt = pool_local(feats0, cfg.local_grid), pool_local(feats1, cfg.local_grid)
        if cfg.gather_distributed:
            zs, zt = gather_batch(zs), gather_batch(zt)
            if use_local:
                ds, dt = gather_batch(ds), gather_batch(dt)
        n = zs.shape[0]
        zs, zt = unit_rows(zs), unit_rows(zt)
        if n < 2:
            zero = (zs.sum() + zt.sum()) * 0.0
            info = dict.fromkeys(INFO_KEYS, 0.0)
            info.update(match_acc=1.0, num_nodes=float(n))
            return zero, info

        gs, gt = knn_graph(zs, cfg.k), knn_graph(zt, cfg.k)
        hs, ht = self.message_passing(zs, gs), self.message_passing(zt, gt)
        if cfg.node_norm == "batch":
            hs, ht = batch_standardize(hs, ht)
        hs, ht = unit_rows(hs), unit_rows(ht)
        cv = hs @ ht.T
        if use_local:
            cv = cv + cfg.local_weight * local_affinity(ds, dt)
        f1, f2 = edge_factors(hs, ht, gs, gt, cfg.edge_weight)
        eye = torch.eye(n, dtype=cv.dtype, device=cv.device)
        cv_solve = cv - cfg.margin * eye if self.training and cfg.margin > 0 else cv

        stats: dict[str, float] = {}
        args = (cv_solve, f1, f2, gs.neighbors, gt.neighbors, self.spec, cfg.lambda_val, cfg.normalize_perturbation)
        if cfg.perturb_samples > 1 or cfg.perturb_noise > 0:
            x = PerturbedBlackBoxMatching.apply(*args, stats, cfg.perturb_samples, cfg.perturb_noise)
        else:
            x = BlackBoxMatching.apply(*args, stats)
        loss_hamming = (x * (1 - eye) + (1 - x) * eye).sum() / (2 * n)
        loss = cfg.hamming_weight * loss_hamming
        loss_aux = torch.zeros((), device=cv.device)
        if cfg.aux == "infonce" and cfg.aux_weight > 0:
            targets = torch.arange(n, device=cv.device)
            logits = cv / cfg.aux_temperature
            loss_aux = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
            loss = loss + cfg.aux_weight * loss_aux

        identity = torch.arange(n, device=cv.device)
        objective_identity = QAP(cv_solve, f1, f2, gs.neighbors, gt.neighbors).objective(identity)
        info = {
            "loss_hamming": float(loss_hamming.detach()),
            "loss_aux": float(loss_aux.detach()),
            "match_acc": float(torch.diagonal(x).detach().mean()),
            "objective": stats["objective"],
            "objective_identity": objective_identity,
            "solver_iters": stats["solver_iters"],
            "num_nodes": float(n),
            "local_used": float(use_local),
        }
        return loss, info


LOSSES.register("graph_matching", lambda cfg, dim: GraphMatchingLoss(dim, cfg.graph_matching))
