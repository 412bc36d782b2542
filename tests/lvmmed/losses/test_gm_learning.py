"""Learning test: the graph-matching loss alone teaches a projector to match two augmentations of real MRI slices.

Data: 36 distinct slices of the MNI152 T1 template (nilearn's bundled copy via ``lvmmed.data.samples``; sagittal
slices from one hemisphere only, since the symmetric template makes mirrored sagittal slices identical).
Features: a frozen, randomly initialised small CNN. Trained: an MLP projector and the loss's message-passing net,
with the default ``GraphMatchingConfig``, i.e. the paper's loss alone (black-box Hamming loss, no auxiliary
term). The control run replaces the black-box backward by zeros: with nothing else in the loss it must stay near
its initial accuracy, so the test fails if the learning came from anything but the solver's gradient.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lvmmed.data import samples
from lvmmed.losses import GraphMatchingConfig, GraphMatchingLoss
from lvmmed.losses import graph_matching as gm_module
from lvmmed.matching.blackbox import BlackBoxMatching

NUM_PER_AXIS = 12


def _mni_slices() -> torch.Tensor:
    volume = np.asarray(nib.load(str(samples.path("mni152_t1"))).dataobj, dtype=np.float32)
    volume = (volume - volume.min()) / (volume.max() - volume.min())
    slices = []
    for axis in range(3):
        n = volume.shape[axis]
        lo, hi = (0.12, 0.45) if axis == 0 else (0.25, 0.75)
        for index in np.linspace(lo * n, hi * n, NUM_PER_AXIS).astype(int):
            image = torch.from_numpy(np.ascontiguousarray(np.take(volume, index, axis=axis)))
            slices.append(F.interpolate(image[None, None], size=(40, 40), mode="bilinear", align_corners=False)[0])
    return torch.stack(slices)


def _augment(x: torch.Tensor, gen: torch.Generator, strength: float = 0.5) -> torch.Tensor:
    """Random rotation, scale, translation (one affine warp to 32×32), contrast/brightness and Gaussian noise."""
    b = x.shape[0]
    angle = (torch.rand(b, generator=gen) - 0.5) * 0.5 * strength
    scale = 0.8 + 0.25 * torch.rand(b, generator=gen)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale * torch.cos(angle)
    theta[:, 0, 1] = -scale * torch.sin(angle)
    theta[:, 1, 0] = scale * torch.sin(angle)
    theta[:, 1, 1] = scale * torch.cos(angle)
    theta[:, :, 2] = (torch.rand(b, 2, generator=gen) - 0.5) * 0.3 * strength
    grid = F.affine_grid(theta, (b, 1, 32, 32), align_corners=False)
    y = F.grid_sample(x, grid, align_corners=False)
    gain = 0.7 + 0.6 * torch.rand(b, 1, 1, 1, generator=gen)
    bias = (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.3
    return gain * y + bias + 0.08 * strength * torch.randn(y.shape, generator=gen)


class _ZeroGradientMatching(BlackBoxMatching):
    """The same forward solve, but the black-box backward returns zeros (the control run)."""

    @staticmethod
    def backward(ctx, grad_x):
        grads = BlackBoxMatching.backward(ctx, grad_x)
        return tuple(None if g is None else torch.zeros_like(g) for g in grads)


def _train(config: GraphMatchingConfig, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    images = _mni_slices()
    encoder = nn.Sequential(
        nn.Conv2d(1, 32, 5, 2, 2), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(4)
    ).eval()
    encoder.requires_grad_(False)
    projector = nn.Sequential(nn.Flatten(), nn.Linear(64 * 16, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 64))
    loss_fn = GraphMatchingLoss(64, config)
    optimizer = torch.optim.Adam([*projector.parameters(), *loss_fn.parameters()], lr=3e-3)
    eval_gen = torch.Generator().manual_seed(123)
    eval_views = [(_augment(images, eval_gen), _augment(images, eval_gen)) for _ in range(2)]

    def accuracy() -> float:
        projector.eval()
        loss_fn.eval()
        with torch.no_grad():
            accs = [loss_fn(projector(encoder(a)), projector(encoder(b)))[1]["match_acc"] for a, b in eval_views]
        projector.train()
        loss_fn.train()
        return float(np.mean(accs))

    initial = accuracy()
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        with torch.no_grad():
            f0, f1 = encoder(_augment(images, gen)), encoder(_augment(images, gen))
        loss, _info = loss_fn(projector(f0), projector(f1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return initial, accuracy()


STEPS = 200


@pytest.mark.slow
def test__paper_gm_loss_learns_and_fails_without_the_blackbox_gradient(monkeypatch):
    config = GraphMatchingConfig()
    assert config.aux == "none" and config.hamming_weight == 1.0, "the default must be the paper's loss alone"
    initial, final = _train(config, steps=STEPS)
    monkeypatch.setattr(gm_module, "BlackBoxMatching", _ZeroGradientMatching)
    zero_initial, zero_final = _train(config, steps=STEPS)
    chance = 1 / (3 * NUM_PER_AXIS)
    print(
        f"match_acc on fresh augmentations (chance {chance:.3f}): black-box gradient {initial:.3f} → {final:.3f}, "
        f"zeroed gradient {zero_initial:.3f} → {zero_final:.3f}"
    )
    assert initial < 0.35, f"the random projector should match poorly, got {initial:.3f}"
    assert final > max(0.6, 3 * initial), f"the paper's GM loss did not learn: {initial:.3f} → {final:.3f}"
    assert zero_final < zero_initial + 0.1, f"with the gradient zeroed nothing should learn: {zero_final:.3f}"
    assert final > zero_final + 0.4, f"learning must come from the black-box gradient: {final:.3f} vs {zero_final:.3f}"
