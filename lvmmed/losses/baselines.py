"""Baseline SSL losses behind the graph-matching loss's interface: ``forward(z0, z1, feats0, feats1) -> (loss, info)``.

* ``NTXentLoss``: SimCLR (Chen et al., ICML 2020) via ``lightly.loss.NTXentLoss``.
* ``VICRegLoss``: VICReg (Bardes, Ponce & LeCun, ICLR 2022) via ``lightly.loss.VICRegLoss``.
* ``BYOLStyleLoss``: BYOL's regression of a predictor output onto the other view (Grill et al., NeurIPS 2020).
  The loss interface gets only projections, so there is no momentum encoder: the target is the other view's
  projection with stop-gradient, i.e. the SimSiam form (Chen & He, CVPR 2021). The predictor MLP
  (D → hidden → D, BN + ReLU as in SimSiam) is owned by the loss; the trainer must optimise its parameters.

Feature maps (``feats0``/``feats1``) are accepted and ignored. The ``info`` dict names each term (``loss_*``).
"""

from __future__ import annotations

from torch import Tensor, nn

from lvmmed.losses._checks import check_pair
from lvmmed.losses.config import LOSSES, BYOLConfig, NTXentConfig, VICRegConfig


class NTXentLoss(nn.Module):
    """SimCLR NT-Xent (lightly) returning ``(loss, {"loss_ntxent": ...})``; needs B ≥ 2 for negatives."""

    def __init__(self, config: NTXentConfig | None = None) -> None:
        super().__init__()
        from lightly.loss import NTXentLoss as LightlyNTXentLoss

        cfg = config or NTXentConfig()
        self.loss = LightlyNTXentLoss(temperature=cfg.temperature, gather_distributed=cfg.gather_distributed)

    def forward(
        self, z0: Tensor, z1: Tensor, feats0: Tensor | None = None, feats1: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        check_pair(z0, z1)
        loss = self.loss(z0.float(), z1.float())
        return loss, {"loss_ntxent": float(loss.detach())}


LOSSES.register("ntxent", lambda cfg, dim: NTXentLoss(cfg.ntxent))


class VICRegLoss(nn.Module):
    """VICReg (lightly) returning ``(loss, {"loss_vicreg": ...})``; the variance term needs B ≥ 2."""

    def __init__(self, config: VICRegConfig | None = None) -> None:
        super().__init__()
        from lightly.loss import VICRegLoss as LightlyVICRegLoss

        cfg = config or VICRegConfig()
        self.loss = LightlyVICRegLoss(
            lambda_param=cfg.lambda_param,
            mu_param=cfg.mu_param,
            nu_param=cfg.nu_param,
            gather_distributed=cfg.gather_distributed,
        )

    def forward(
        self, z0: Tensor, z1: Tensor, feats0: Tensor | None = None, feats1: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        check_pair(z0, z1)
        if z0.shape[0] < 2:
            raise ValueError("VICReg needs a batch of at least 2 (its variance term is undefined for B = 1)")
        loss = self.loss(z0.float(), z1.float())
        return loss, {"loss_vicreg": float(loss.detach())}


LOSSES.register("vicreg", lambda cfg, dim: VICRegLoss(cfg.vicreg))


class BYOLStyleLoss(nn.Module):
    """Symmetric negative cosine between predictor(z_a) and stop-grad(z_b) (SimSiam form of BYOL).

    Args:
        dim: projection dimension D.
        config: predictor settings.
    """

    def __init__(self, dim: int, config: BYOLConfig | None = None) -> None:
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity

        cfg = config or BYOLConfig()
        self.predictor = nn.Sequential(
            nn.Linear(dim, cfg.predictor_hidden, bias=False),
            nn.BatchNorm1d(cfg.predictor_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.predictor_hidden, dim),
        )
        self.criterion = NegativeCosineSimilarity()

    def forward(
        self, z0: Tensor, z1: Tensor, feats0: Tensor | None = None, feats1: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        check_pair(z0, z1)
        z0, z1 = z0.float(), z1.float()
        if self.training and z0.shape[0] < 2:
            raise ValueError("BYOLStyleLoss needs a batch of at least 2 in training (BatchNorm in the predictor)")
        p0, p1 = self.predictor(z0), self.predictor(z1)
        loss = 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))
        return loss, {"loss_byol": float(loss.detach())}


LOSSES.register("byol", lambda cfg, dim: BYOLStyleLoss(dim, cfg.byol))
