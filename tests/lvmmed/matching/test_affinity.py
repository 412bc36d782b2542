"""``unit_rows`` is ``F.normalize`` (value and gradient), including zero rows and low-precision inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lvmmed.matching.affinity import unit_rows
from lvmmed.matching.graph import edge_features, knn_graph


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_unit_rows_matches_f_normalize_in_value_and_gradient(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=gen, dtype=torch.float64)
    x[5] = 0.0  # a zero edge feature: duplicated embeddings give these
    x[6] *= 1e-9
    grad = torch.randn(64, 16, generator=gen, dtype=torch.float64)
    ours, ref = x.to(dtype).requires_grad_(), x.to(dtype).requires_grad_()
    unit_rows(ours).backward(grad.to(dtype))
    F.normalize(ref, dim=1).backward(grad.to(dtype))
    tol = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 2e-2}[dtype]  # about 2 ulps of the dtype
    assert unit_rows(x.to(dtype)).dtype == dtype
    assert torch.allclose(unit_rows(x.to(dtype)).double(), F.normalize(x.to(dtype), dim=1).double(), atol=tol)
    # gradients of tiny rows are huge (1/‖x‖): compare each row relative to its own largest entry
    row_scale = ref.grad.double().abs().amax(dim=1, keepdim=True)
    assert ((ours.grad.double() - ref.grad.double()).abs() / row_scale).max() <= tol


def test_unit_rows_on_real_edge_features_is_unit_length():
    z = torch.nn.functional.normalize(torch.randn(32, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    unit = unit_rows(edge_features(z, knn_graph(z, 4)))
    assert unit.shape == (32 * 4, 8)
    assert torch.allclose(unit.norm(dim=1), torch.ones(32 * 4), atol=1e-5)
