"""torchvision ResNets under the lvmmed backbone contract (He et al., CVPR 2016).

State-dict keys are exactly torchvision's (``conv1.weight``, ``layer1.0.conv1.weight``, ...) with no prefix and no
``fc``: the published ``lvmmed_resnet.torch`` loads with a strict key check. ``in_chans`` != 3 replaces ``conv1``.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from lvmmed.models.base import Backbone

_RESNETS = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}


class ResNetBackbone(Backbone):
    """A torchvision ResNet without its classifier. Blocks are the four residual stages.

    Args:
        name: ``resnet18``, ``resnet34`` or ``resnet50``.
        in_chans: Input channels (1 for grey medical images, 3 for colour or replicated grey).
        img_size: Nominal input size, recorded in exports only (ResNets accept any size).
    """

    def __init__(self, name: str = "resnet50", in_chans: int = 3, img_size: int = 224) -> None:
        super().__init__()
        if name not in _RESNETS:
            raise ValueError(f"Unknown ResNet '{name}'. Known: {sorted(_RESNETS)}")
        net = _RESNETS[name](weights=None)
        if in_chans != 3:
            net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.name, self.in_chans, self.img_size = name, in_chans, img_size
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        widths = [
            stage[-1].conv3.out_channels if hasattr(stage[-1], "conv3") else stage[-1].conv2.out_channels
            for stage in (net.layer1, net.layer2, net.layer3, net.layer4)
        ]
        self.feature_dim = widths[-1]
        self.feature_channels = (64, *widths)
        self.feature_strides = (2, 4, 8, 16, 32)

    @property
    def blocks(self) -> nn.ModuleList:  # type: ignore[override]
        # Built on access so that state-dict keys stay torchvision's (layer1.*, not blocks.0.*). It is a view:
        # to replace a stage, assign ``layer1``..``layer4``; wrapping via forward hooks works on either.
        return nn.ModuleList([self.layer1, self.layer2, self.layer3, self.layer4])

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.stem(x))

    def finalize(self, h: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1)

    def features_from_hidden(self, h: torch.Tensor) -> torch.Tensor:
        return h

    def forward_multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        s = self.stem(x)
        feats = [s]
        h = self.maxpool(s)
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        return feats
