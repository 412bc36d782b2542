"""Learning test: the graph-matching loss alone teaches a projector to match two augmentations of real MRI slices.

Data: 36 distinct slices of the MNI152 T1 template (nilearn's bundled copy via ``lvmmed.data.samples``; sagittal
slices from one hemisphere only, since the symmetric template makes mirrored sagittal slices identical).
Features: a frozen, randomly initialised small CNN. Trained: an MLP projector and the loss's message-passing net,
with the default ``GraphMatchingConfig``, i.e. the paper's loss alone (black-box Hamming loss, no auxiliary
term). The control run replaces the black-box backward by zeros: with nothing else in the loss it must stay near
its initial accuracy, so the test fails if the learning came from anything but the solver's gradient.

Robustness across CPUs and thread counts. A different CPU or torch thread count changes the float rounding of the
convolutions and matrix products, and after 200 steps the trained accuracy differs as much as it does between
seeds (seed 0: 0.694 at one thread, 0.750 at two). So the thresholds are set from the spread over seeds and thread
counts, measured on 2026-12-06 with ``_train(GraphMatchingConfig(), STEPS, seed, LR)`` for seeds 0–11 (each seed
sets the initialisation, the training augmentations and the evaluation views), at ``torch.set_num_threads(1)`` and
``(2)``, with ``torch.use_deterministic_algorithms(True)``; n = 24 runs per statistic:

=========================  =====  =====  ======  =====  ===========  ==========================
statistic                  mean   std    min     max    threshold    distance from the mean
=========================  =====  =====  ======  =====  ===========  ==========================
initial                    0.171  0.041  0.125   0.250  < 0.35       4.4 std
final                      0.741  0.081  0.514   0.889  > 0.40       4.2 std (control: 4.9 std)
zero_final (control)       0.207  0.039  0.167   0.292  < 0.40       4.9 std (final: 4.2 std)
zero_final − zero_initial  0.036  0.040  −0.028  0.097  < 0.20       4.1 std
final − zero_final         0.534  0.076  0.347   0.667  > 0.25       3.7 std
=========================  =====  =====  ======  =====  ===========  ==========================

(threads 1: final 0.750 ± 0.060; threads 2: final 0.731 ± 0.100; the control and the initial accuracy do not
depend on the thread count.) The learning rate 5e-3 was chosen over 3e-3 on the same seeds because it separates
the trained runs from the control better (3e-3: final 0.752 ± 0.108, min 0.500, so mean − 3 std = 0.43 against
0.50 at 5e-3), at the same runtime. The earlier threshold 0.6 was 1.4 std below the mean at 3e-3, which is why it
failed on another machine.
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


def _train(config: GraphMatchingConfig, steps: int, seed: int = 0, lr: float = 3e-3) -> tuple[float, float]:
    """Trains from initialisation seed ``seed`` (augmentations and evaluation views are seeded from it too) and
    returns the evaluation matching accuracy before and after ``steps`` Adam steps."""
    torch.manual_seed(seed)
    images = _mni_slices()
    encoder = nn.Sequential(
        nn.Conv2d(1, 32, 5, 2, 2), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(4)
    ).eval()
    encoder.requires_grad_(False)
    projector = nn.Sequential(nn.Flatten(), nn.Linear(64 * 16, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 64))
    loss_fn = GraphMatchingLoss(64, config)
    optimizer = torch.optim.Adam([*projector.parameters(), *loss_fn.parameters()], lr=lr)
    eval_gen = torch.Generator().manual_seed(123 + 1000 * seed)
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
    gen = torch.Generator().manual_seed(1 + 1000 * seed)
    for _ in range(steps):
        with torch.no_grad():
            f0, f1 = encoder(_augment(images, gen)), encoder(_augment(images, gen))
        loss, _info = loss_fn(projector(f0), projector(f1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return initial, accuracy()


STEPS, LR, SEED = 200, 5e-3, 0
INITIAL_MAX = 0.35  # a random projector matches poorly
FINAL_MIN = 0.40  # trained with the black-box gradient
CONTROL_FINAL_MAX = 0.40  # trained with the gradient zeroed
CONTROL_GAIN_MAX = 0.20  # how far the control may drift from its initial accuracy (BatchNorm statistics only)
GAP_MIN = 0.25  # trained minus control, same seed


@pytest.fixture
def deterministic_algorithms():
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@pytest.mark.slow
@pytest.mark.learning
def test__paper_gm_loss_learns_and_fails_without_the_blackbox_gradient(monkeypatch, deterministic_algorithms):
    config = GraphMatchingConfig()
    assert config.aux == "none" and config.hamming_weight == 1.0, "the default must be the paper's loss alone"
    initial, final = _train(config, STEPS, SEED, LR)
    monkeypatch.setattr(gm_module, "BlackBoxMatching", _ZeroGradientMatching)
    zero_initial, zero_final = _train(config, STEPS, SEED, LR)
    chance = 1 / (3 * NUM_PER_AXIS)
    print(
        f"match_acc on fresh augmentations (chance {chance:.3f}): black-box gradient {initial:.3f} → {final:.3f}, "
        f"zeroed gradient {zero_initial:.3f} → {zero_final:.3f}"
    )
    assert initial < INITIAL_MAX, f"the random projector should match poorly, got {initial:.3f}"
    assert final > FINAL_MIN, f"the paper's GM loss did not learn: {initial:.3f} → {final:.3f}"
    assert zero_final < CONTROL_FINAL_MAX, f"with the gradient zeroed nothing should learn: {zero_final:.3f}"
    assert zero_final - zero_initial < CONTROL_GAIN_MAX, f"the control drifted: {zero_initial:.3f} → {zero_final:.3f}"
    assert final - zero_final > GAP_MIN, (
        f"learning must come from the black-box gradient: {final:.3f} vs {zero_final:.3f}"
    )
