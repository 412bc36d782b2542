"""GraphMatchingLoss: interface, gradients into the projector and message passing, and edge cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lvmmed.config import ConfigError, load_config
from lvmmed.losses import GraphMatchingConfig, GraphMatchingLoss, LossConfig, build_loss
from lvmmed.losses.graph_matching import INFO_KEYS


def _views(n: int = 24, d: int = 16, noise: float = 0.8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=gen)
    return base + noise * torch.randn(n, d, generator=gen), base + noise * torch.randn(n, d, generator=gen)


class TestGraphMatchingLoss:
    def test__returns_scalar_loss_and_float_info(self):
        z0, z1 = _views()
        loss, info = GraphMatchingLoss(16)(z0, z1)
        assert loss.dim() == 0 and torch.isfinite(loss)
        assert set(INFO_KEYS) <= set(info) and all(isinstance(v, float) for v in info.values())
        assert info["match_acc"] == pytest.approx(1 - info["loss_hamming"])
        assert info["objective"] >= info["objective_identity"] - 1e-4  # the solver maximises

    def test__gradients_reach_projector_and_message_passing(self):
        z0, z1 = _views(noise=1.5)
        projector = nn.Linear(16, 16)
        loss_fn = GraphMatchingLoss(16, mp_layers=2, aux_weight=0.0)
        loss, info = loss_fn(projector(z0), projector(z1))
        assert info["loss_hamming"] > 0
        loss.backward()
        assert projector.weight.grad is not None and projector.weight.grad.abs().sum() > 0
        for name, param in loss_fn.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, name

    @pytest.mark.parametrize("solver", ["factorized", "pygmtools", "hungarian"])
    def test__every_solver_runs_behind_the_interface(self, solver):
        z0, z1 = _views(n=12)
        loss, info = GraphMatchingLoss(16, solver=solver, k=4)(z0.requires_grad_(), z1)
        loss.backward()
        assert 0 <= info["match_acc"] <= 1 and z0.grad is not None

    def test__margin_only_in_training_mode(self):
        z0, z1 = _views(noise=0.0)  # identical views: the plain matching is the identity
        loss_fn = GraphMatchingLoss(16, margin=5.0, aux_weight=0.0)
        _, train_info = loss_fn(z0, z1)
        loss_fn.eval()
        _, eval_info = loss_fn(z0, z1)
        assert eval_info["match_acc"] == 1.0
        assert train_info["match_acc"] < 1.0  # a margin larger than the cosine range forbids the true pairs

    def test__batch_size_one_gives_zero_connected_loss(self):
        z0 = torch.randn(1, 16, requires_grad=True)
        loss, info = GraphMatchingLoss(16)(z0, torch.randn(1, 16))
        loss.backward()
        assert loss.item() == 0 and info["match_acc"] == 1.0
        assert torch.equal(z0.grad, torch.zeros_like(z0))

    def test__duplicated_embeddings_give_finite_values(self):
        z = torch.randn(1, 16).repeat(10, 1).requires_grad_()
        loss, info = GraphMatchingLoss(16)(z, z.detach().clone())
        loss.backward()
        assert math.isfinite(loss.item()) and torch.isfinite(z.grad).all()
        assert all(math.isfinite(v) for v in info.values())

    def test__nan_inputs_give_nan_loss_or_clear_error(self):
        z0, z1 = _views()
        z0[3, 2] = float("nan")
        loss, info = GraphMatchingLoss(16)(z0, z1)
        assert math.isnan(loss.item()) and math.isnan(info["loss_hamming"]) and info["nonfinite_inputs"] == 1.0
        with pytest.raises(FloatingPointError, match="NaN"):
            GraphMatchingLoss(16, on_nonfinite="raise")(z0, z1)

    def test__mismatched_shapes_raise(self):
        loss_fn = GraphMatchingLoss(16)
        with pytest.raises(ValueError, match="same shape"):
            loss_fn(torch.randn(8, 16), torch.randn(7, 16))
        with pytest.raises(ValueError, match=r"\(B, D\)"):
            loss_fn(torch.randn(8, 16, 1), torch.randn(8, 16, 1))
        with pytest.raises(ValueError, match="feature maps"):
            GraphMatchingLoss(16, local_weight=1.0)(*_views(n=8), torch.randn(8, 4, 3, 3), torch.randn(7, 4, 3, 3))
        with pytest.raises(ValueError, match="needs dim"):
            GraphMatchingLoss()

    def test__local_term_sends_gradient_to_feature_maps(self):
        z0, z1 = _views(n=10, noise=1.5)
        f0 = torch.randn(10, 8, 6, 6, requires_grad=True)
        loss, _ = GraphMatchingLoss(16, local_weight=1.0)(z0, z1, f0, torch.randn(10, 8, 6, 6))
        loss.backward()
        assert f0.grad is not None and f0.grad.abs().sum() > 0

    def test__bfloat16_inputs_are_solved_in_fp32(self):
        z0, z1 = _views()
        z0 = z0.bfloat16().requires_grad_()
        loss, _info = GraphMatchingLoss(16)(z0, z1.bfloat16())
        loss.backward()
        assert loss.dtype == torch.float32 and z0.grad.dtype == torch.bfloat16

    @pytest.mark.parametrize("solver", ["factorized", "pygmtools"])
    def test__runs_in_fp32_under_bf16_autocast(self, solver):
        """accelerate's mixed_precision=bf16 wraps the forward in autocast, which would turn the loss's matmuls
        to bf16 (the solvers then mixed dtypes); local term on, as the trainer passes feature maps."""
        z0, z1 = _views(n=12)
        z0.requires_grad_()
        f0, f1 = torch.randn(12, 8, 4, 4, requires_grad=True), torch.randn(12, 8, 4, 4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, info = GraphMatchingLoss(16, solver=solver, local_weight=0.5)(z0.bfloat16(), z1, f0, f1)
        loss.backward()
        assert loss.dtype == torch.float32 and info["local_used"] == 1.0
        assert torch.isfinite(z0.grad).all() and z0.grad.abs().sum() > 0 and f0.grad is not None


class TestPaperLossAndNamedOptions:
    def test__default_is_the_paper_loss_without_auxiliary_term(self):
        z0, z1 = _views()
        loss, info = GraphMatchingLoss(16)(z0, z1)
        assert info["loss_aux"] == 0.0
        assert loss.item() == pytest.approx(info["loss_hamming"])

    def test__infonce_is_a_named_option_and_can_stand_alone(self):
        z0, z1 = _views()
        loss, info = GraphMatchingLoss(16, aux="infonce", aux_weight=0.5)(z0, z1)
        assert info["loss_aux"] > 0
        assert loss.item() == pytest.approx(info["loss_hamming"] + 0.5 * info["loss_aux"], rel=1e-5)
        alone, info_alone = GraphMatchingLoss(16, aux="infonce", aux_weight=1.0, hamming_weight=0.0)(z0, z1)
        assert alone.item() == pytest.approx(info_alone["loss_aux"], rel=1e-5)
        with pytest.raises(ValueError, match="needs an auxiliary term"):
            GraphMatchingConfig(hamming_weight=0.0)
        with pytest.raises(ValueError, match="aux must be one of"):
            GraphMatchingConfig(aux="ntxent")

    def test__batch_node_norm_standardises_and_removes_a_shared_offset(self):
        from lvmmed.matching.affinity import batch_standardize

        z0, z1 = _views(n=16)
        hs, ht = batch_standardize(z0, z1)
        both = torch.cat([hs, ht])
        assert torch.allclose(both.mean(0), torch.zeros(16), atol=1e-5)
        assert torch.allclose(both.var(0, unbiased=False), torch.ones(16), atol=1e-3)
        shifted = batch_standardize(z0 + 25.0, z1 + 25.0)
        assert torch.allclose(shifted[0], hs, atol=1e-3) and torch.allclose(shifted[1], ht, atol=1e-3)
        loss, info = GraphMatchingLoss(16, node_norm="batch")(z0, z1)
        assert torch.isfinite(loss) and 0 <= info["match_acc"] <= 1

    def test__local_term_is_reported_as_used(self):
        z0, z1 = _views(n=8)
        f0, f1 = torch.randn(8, 4, 3, 3), torch.randn(8, 4, 3, 3)
        assert GraphMatchingLoss(16, local_weight=0.5)(z0, z1, f0, f1)[1]["local_used"] == 1.0
        assert GraphMatchingLoss(16, local_weight=0.5)(z0, z1)[1]["local_used"] == 0.0


class TestConfigAndBaselines:
    def test__config_from_overrides_and_validation(self):
        cfg = load_config(LossConfig, overrides=["graph_matching.k=4", "graph_matching.solver=hungarian"])
        assert cfg.graph_matching.k == 4
        with pytest.raises(ConfigError):
            load_config(LossConfig, overrides=["graph_matching.solver=lpmp"])
        with pytest.raises(ConfigError):
            load_config(LossConfig, overrides=["graph_matching.not_a_key=1"])
        with pytest.raises(ValueError):
            GraphMatchingConfig(lambda_val=0.0)

    @pytest.mark.parametrize("name", ["graph_matching", "ntxent", "vicreg", "byol"])
    def test__losses_are_interchangeable_by_config(self, name):
        z0, z1 = _views(n=16)
        z0.requires_grad_()
        loss_fn = build_loss(LossConfig(name=name), dim=16)
        loss, info = loss_fn(z0, z1, torch.randn(16, 4, 3, 3), torch.randn(16, 4, 3, 3))
        loss.backward()
        assert torch.isfinite(loss) and z0.grad is not None
        assert any(k.startswith("loss_") for k in info)
        if name == "byol":
            assert sum(p.numel() for p in loss_fn.parameters()) > 0

    def test__baselines_reject_bad_batches(self):
        with pytest.raises(ValueError, match="same shape"):
            build_loss(LossConfig(name="ntxent"), 16)(torch.randn(4, 16), torch.randn(4, 8))
        with pytest.raises(ValueError, match="at least 2"):
            build_loss(LossConfig(name="vicreg"), 16)(torch.randn(1, 16), torch.randn(1, 16))
