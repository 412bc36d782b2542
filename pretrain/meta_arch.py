"""The SSL meta-architecture: backbone + projector + loss, combined from config (dinov2's ``SSLMetaArch`` pattern).

The training loop only calls ``loss, info = model(view0, view1)``; every loss term is computed by the loss module
(``lvmmed.losses``). Choices:

* Both views go through the backbone in **one** forward pass (batch 2B), which is faster than two passes; with
  BatchNorm backbones the batch statistics therefore span both views (as in SimCLR's reference implementation).
* Pre-pool feature maps are computed only when the loss uses them (its ``uses_local_features``: graph matching
  with ``local_weight > 0``).
* The projector is a lightly head chosen by name (``pretrain.projectors``; ``SimCLRProjectionHead`` by default,
  LVM-Med's projector h_θ is unspecified).
* ``init.weights`` initialises the backbone only (``pretrain.init_weights``); projector and loss start fresh.
"""

from __future__ import annotations

import torch
from torch import nn

from lvmmed.losses import build_loss
from lvmmed.models import create_backbone
from lvmmed.models.base import Backbone
from pretrain.config import PretrainConfig
from pretrain.init_weights import load_init_weights
from pretrain.projectors import build_projector


class SSLMetaArch(nn.Module):
    """Backbone, projector and loss of one pretraining method.

    Args:
        backbone: An lvmmed :class:`~lvmmed.models.base.Backbone`.
        projector: Maps (B, feature_dim) pooled features to (B, D) embeddings.
        loss: An ``lvmmed.losses`` module: ``loss, info = loss(z0, z1, feats0, feats1)``.
        use_local_features: Pass (B, C, h, w) pre-pool maps to the loss.
    """

    def __init__(self, backbone: Backbone, projector: nn.Module, loss: nn.Module, use_local_features: bool = False):
        super().__init__()
        self.backbone, self.projector, self.loss = backbone, projector, loss
        self.use_local_features = use_local_features
        self.init_record: dict | None = None  # what init.weights loaded (pretrain.init_weights), None = random init

    @classmethod
    def from_config(cls, cfg: PretrainConfig, load_init: bool = True, record_dir: str | None = None) -> SSLMetaArch:
        """Builds the meta-architecture; with ``load_init`` the backbone then takes ``cfg.init.weights``.

        The backbone is always built with its random init first, so the RNG draws (and with them the projector's
        init) are the same with and without init weights. ``load_init=False`` is for resumed runs, whose weights
        come from the checkpoint. ``record_dir`` receives ``init_weights.json``.
        """
        m = cfg.model
        backbone = create_backbone(m.backbone, in_chans=m.in_chans, img_size=cfg.augment.size)
        record = load_init_weights(backbone, cfg, record_dir) if load_init and cfg.init.source else None
        projector = build_projector(
            m.projector, backbone.feature_dim, m.proj_hidden_dim, m.proj_output_dim, m.proj_layers
        )
        loss = build_loss(cfg.loss, m.proj_output_dim)
        local = bool(getattr(loss, "uses_local_features", False))
        model = cls(backbone, projector, loss, use_local_features=local)
        model.init_record = record
        return model

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.use_local_features:
            return self.backbone(x), None
        return self.backbone.forward_pooled_and_features(x)

    def snapshot_buffers(self) -> dict[str, torch.Tensor]:
        """Copies of all buffers (BatchNorm running statistics), to undo a step whose forward saw NaN/inf."""
        return {name: buf.detach().clone() for name, buf in self.named_buffers()}

    def restore_buffers(self, snapshot: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, buf in self.named_buffers():
                buf.copy_(snapshot[name])

    def forward(self, view0: torch.Tensor, view1: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Two (B, C, H, W) views of the same B images -> (scalar loss, info dict of floats)."""
        n = view0.shape[0]
        pooled, feats = self._encode(torch.cat([view0, view1]))
        z = self.projector(pooled)
        f0, f1 = (feats[:n], feats[n:]) if feats is not None else (None, None)
        loss, info = self.loss(z[:n], z[n:], f0, f1)
        return loss, {"loss": float(loss.detach()), **info}
