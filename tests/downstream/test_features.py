"""The frozen-feature cache key: every parameter and buffer counts, 0-d buffers included (ResNet BatchNorm)."""

from __future__ import annotations

import torch

from downstream.features import backbone_key
from lvmmed.models import create_backbone


def test_backbone_key_covers_zero_dim_buffers_and_changes_with_the_weights():
    backbone = create_backbone("resnet18", in_chans=1)
    assert any(b.dim() == 0 for b in backbone.buffers())  # num_batches_tracked
    key = backbone_key(backbone)
    assert key == backbone_key(backbone)
    with torch.no_grad():
        next(backbone.parameters()).add_(1e-3)
    assert backbone_key(backbone) != key
