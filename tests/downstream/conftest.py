"""Controls for the downstream learning tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def zeroed_backbones(monkeypatch):
    """Calling it makes every later ``run_experiment`` / ``python -m downstream`` run in this test build its method
    with every backbone weight zeroed: constant features, so a probe can only predict from its bias (AUROC and
    balanced accuracy exactly 0.5). The control run of a learning test: it must fail the test's threshold."""
    from downstream import run

    real_build = run.build_for

    def build_zeroed(cfg, num_classes):
        method = real_build(cfg, num_classes)
        with torch.no_grad():
            for param in method.backbone.parameters():
                param.zero_()
        return method

    return lambda: monkeypatch.setattr(run, "build_for", build_zeroed)
