"""Learning test: the graph-matching loss alone teaches a projector to match two augmentations of real MRI slices.

Data: 36 distinct slices of the MNI152 T1 template (nilearn's bundled copy via ``lvmmed.data.samples``; sagittal
slices from one hemisphere only, since the symmetric template makes mirrored sagittal slices identical).
Features: a frozen, randomly initialised small CNN. Trained: an MLP projector and the loss's message-passing net,
with the *default* ``GraphMatchingConfig`` (Hamming loss + 0.5 × auxiliary node-affinity cross-entropy), and
with the pure black-box Hamming loss (``aux_weight = 0``, LVM-Med as published), which learns more slowly.
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


@pytest.mark.slow
def test__default_gm_loss_learns_to_match_augmented_mri_slices():
    initial, final = _train(GraphMatchingConfig(), steps=300)
    chance = 1 / (3 * NUM_PER_AXIS)
    print(f"match_acc on fresh augmentations: initial {initial:.3f} (chance {chance:.3f}) → final {final:.3f}")
    assert initial < 0.35, f"the random projector should match poorly, got {initial:.3f}"
    assert final > 0.9, f"the default GM loss did not learn: {initial:.3f} → {final:.3f}"


@pytest.mark.slow
def test__pure_hamming_blackbox_gradient_alone_learns():
    initial, final = _train(GraphMatchingConfig(aux_weight=0.0), steps=300)
    print(f"pure GM match_acc: initial {initial:.3f} → final {final:.3f}")
    assert final > max(0.6, 3 * initial), (
        f"the black-box Hamming gradient alone did not learn: {initial:.3f} → {final:.3f}"
    )
