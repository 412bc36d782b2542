"""Helpers for pretraining tests: run ``python -m pretrain`` in-process on the bundled real shards."""

from __future__ import annotations

from pathlib import Path

import pytest


def _tiny_overrides(out, shards, *extra: str) -> list[str]:
    """A very small but real run: ViT-Tiny/16 at 32 px on 1-channel MR slices, GM loss, batch 8, CPU."""
    return [
        "--config",
        "configs/pretrain/tiny_cpu.yaml",
        f"output_dir={out}",
        f"data.shards=[{shards}]",
        "augment.size=32",
        "data.batch_size=8",
        "data.num_workers=0",
        "data.shuffle_buffer=50",
        "data.shuffle_initial=10",
        "model.proj_hidden_dim=64",
        "model.proj_output_dim=32",
        "loss.graph_matching.mp_hidden=32",
        "loss.graph_matching.k=3",
        "trackers=[]",
        "log_every=1",
        "optim.warmup_steps=2",
        "export_at_end=false",
        *extra,
    ]


@pytest.fixture
def tiny_overrides():
    """``tiny_overrides(out_dir, shard_dir, *extra_overrides) -> argv`` for ``python -m pretrain``."""
    return _tiny_overrides


@pytest.fixture
def run_pretrain(monkeypatch):
    """Calls ``pretrain.__main__.main`` in this process and resets Accelerate's singletons afterwards."""
    from accelerate.state import AcceleratorState, GradientState

    monkeypatch.chdir(Path(__file__).resolve().parents[2])

    def run(argv: list[str]) -> dict:
        from pretrain.__main__ import main

        try:
            return main(argv)
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()

    return run


@pytest.fixture
def crash_after_checkpoint(monkeypatch):
    """``crash_after_checkpoint(step)``: the next run raises ``KeyboardInterrupt`` right after writing the
    checkpoint of ``step`` (a simulated preemption); ``crash_after_checkpoint(None)`` restores normal saving."""
    from pretrain import checkpoint as ckpt

    real_save = ckpt.save_checkpoint

    def arm(step: int | None) -> None:
        def save_then_crash(accelerator, output_dir, saved_step, *a, **kw):
            path = real_save(accelerator, output_dir, saved_step, *a, **kw)
            if saved_step == step:
                raise KeyboardInterrupt(f"simulated preemption after the step-{step} checkpoint")
            return path

        monkeypatch.setattr("pretrain.__main__.save_checkpoint", real_save if step is None else save_then_crash)

    return arm
