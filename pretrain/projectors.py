"""Projection heads by name (``model.projector``): lightly's heads, one :class:`~lvmmed.registry.Registry` entry each.

An entry is ``builder(input_dim, hidden_dim, output_dim, num_layers) -> nn.Module`` mapping (B, input_dim) pooled
features to (B, output_dim) embeddings. LVM-Med leaves its projector h_θ unspecified; ``simclr`` is the default.
``num_layers`` applies to the heads that take it (``simclr``, ``vicreg``); BYOL's and Barlow Twins' heads have
their papers' fixed depth.
"""

from __future__ import annotations

from collections.abc import Callable

from lightly.models.modules import heads
from torch import nn

from lvmmed.registry import Registry

PROJECTORS: Registry[Callable[[int, int, int, int], nn.Module]] = Registry("projector", key="model.projector")

PROJECTORS.register("simclr", lambda i, h, o, n: heads.SimCLRProjectionHead(i, h, o, num_layers=n))
PROJECTORS.register("vicreg", lambda i, h, o, n: heads.VICRegProjectionHead(i, h, o, num_layers=n))
PROJECTORS.register("byol", lambda i, h, o, n: heads.BYOLProjectionHead(i, h, o))
PROJECTORS.register("barlow", lambda i, h, o, n: heads.BarlowTwinsProjectionHead(i, h, o))


def build_projector(kind: str, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> nn.Module:
    """The projection head registered under ``kind``."""
    return PROJECTORS.build(kind, input_dim, hidden_dim, output_dim, num_layers)
