"""End-to-end pretraining on real bundled MR shards: finite loss, exact resume, crash-safe checkpoints, NaN guard,
export round trip."""

from __future__ import annotations

import csv
import errno
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lvmmed.errors import OutputError
from pretrain import checkpoint as ckpt


def _losses(run_dir: Path) -> dict[int, float]:
    with (run_dir / "metrics.csv").open() as fh:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(fh)}


def _weights(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def mni(bundled_shards) -> Path:
    return bundled_shards["mni152"]


def test_few_steps_give_finite_loss_and_logs(tmp_path, mni, run_pretrain, tiny_overrides):
    out = tmp_path / "run"
    result = run_pretrain(tiny_overrides(out, mni, "max_steps=3", "checkpoint_every=0"))
    assert result["step"] == 3 and result["nonfinite_total"] == 0
    info = result["last_info"]
    assert torch.isfinite(torch.tensor(info["loss"])) and 0.0 <= info["match_acc"] <= 1.0
    assert {"loss_hamming", "match_acc"} <= set(info)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert {"loss", "match_acc", "lr", "images_per_s", "grad_norm"} <= set(rows[0])
    assert float(rows[0]["lr"]) < float(rows[1]["lr"])  # warmup
    assert (out / "config.yaml").is_file()
    assert ckpt.find_latest(out).name == "checkpoint_00000003"


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_exact(tmp_path, mni, run_pretrain, crash_after_checkpoint, workers, tiny_overrides):
    """N steps straight == k steps, a crash, and resume to N: identical losses and parameters."""
    args = ["max_steps=4", "checkpoint_every=2", f"data.num_workers={workers}"]
    straight = tmp_path / "straight"
    run_pretrain(tiny_overrides(straight, mni, *args))

    resumed = tmp_path / "resumed"
    crash_after_checkpoint(2)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(tiny_overrides(resumed, mni, *args))
    assert ckpt.find_latest(resumed).name == "checkpoint_00000002"
    crash_after_checkpoint(None)
    result = run_pretrain(tiny_overrides(resumed, mni, *args))
    assert result["step"] == 4

    assert _losses(straight) == _losses(resumed)
    a, b = _weights(ckpt.find_latest(straight)), _weights(ckpt.find_latest(resumed))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_crash_during_checkpoint_write_resumes_from_previous(tmp_path, mni, run_pretrain, monkeypatch, tiny_overrides):
    out = tmp_path / "run"
    args = ["max_steps=4", "checkpoint_every=2", "keep_checkpoints=1"]
    real_write = ckpt.write_trainer_state
    calls = []

    def write_then_die(directory, *a, **kw):
        calls.append(directory)
        if len(calls) == 2:  # the step-4 checkpoint: model/optimizer already written, marker not yet
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        return real_write(directory, *a, **kw)

    monkeypatch.setattr(ckpt, "write_trainer_state", write_then_die)
    with pytest.raises(OutputError, match="checkpoint_00000002 is intact"):
        run_pretrain(tiny_overrides(out, mni, *args))
    root = ckpt.checkpoints_root(out)
    assert not (root / "checkpoint_00000004.tmp").exists()  # the partial save gave its space back
    assert [p.name for p in ckpt.complete_checkpoints(out)] == ["checkpoint_00000002"]
    assert ckpt.checkpoint_problem(root / "checkpoint_00000002") is None

    monkeypatch.setattr(ckpt, "write_trainer_state", real_write)
    result = run_pretrain(tiny_overrides(out, mni, *args))
    assert result["step"] == 4
    assert [p.name for p in ckpt.complete_checkpoints(out)] == ["checkpoint_00000004"]
    assert not list(root.glob("*.tmp"))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]  # rows of the lost steps 3-4 were replaced
    before = (root / "checkpoint_00000004" / "trainer_state.json").stat().st_mtime_ns
    again = run_pretrain(tiny_overrides(out, mni, *args))  # a finished run resumes to a no-op
    assert again["step"] == 4 and again["checkpoint"] == str(root / "checkpoint_00000004")
    assert (root / "checkpoint_00000004" / "trainer_state.json").stat().st_mtime_ns == before


def _inject_nonfinite(monkeypatch, steps: set[int]) -> None:
    """Test-only fault injection: the batches of the given optimiser steps become NaN (one forward per step)."""
    from pretrain.meta_arch import SSLMetaArch

    real_forward = SSLMetaArch.forward
    calls = []

    def forward(self, view0, view1):
        if self.training:
            calls.append(1)
            if len(calls) - 1 in steps:
                view0 = torch.full_like(view0, float("nan"))
        return real_forward(self, view0, view1)

    monkeypatch.setattr(SSLMetaArch, "forward", forward)


def test_nonfinite_batch_is_skipped_and_counted(tmp_path, mni, run_pretrain, tiny_overrides, monkeypatch):
    out = tmp_path / "run"
    _inject_nonfinite(monkeypatch, {1})
    result = run_pretrain(tiny_overrides(out, mni, "max_steps=3", "checkpoint_every=0"))
    assert result["step"] == 3 and result["nonfinite_total"] == 1
    rows = {int(r["step"]): r for r in csv.DictReader((out / "metrics.csv").open())}
    assert float(rows[1]["nonfinite_skips"]) == 0 and float(rows[2]["nonfinite_skips"]) == 1
    assert torch.isfinite(torch.tensor(float(rows[3]["loss"])))
    state = ckpt.read_trainer_state(ckpt.find_latest(out))
    assert state["nonfinite_total"] == 1
    for key, value in _weights(ckpt.find_latest(out)).items():
        assert torch.isfinite(value.float()).all(), key


def test_nonfinite_in_a_row_aborts_naming_the_term(tmp_path, mni, run_pretrain, tiny_overrides, monkeypatch):
    from pretrain.__main__ import NonFiniteLossError

    out = tmp_path / "run"
    _inject_nonfinite(monkeypatch, {0, 1})
    with pytest.raises(NonFiniteLossError, match="loss_hamming"):
        run_pretrain(tiny_overrides(out, mni, "max_steps=5", "max_nonfinite_in_a_row=2"))


def test_export_round_trip(tmp_path, mni, run_pretrain, tiny_overrides):
    from lvmmed.weights import load_backbone
    from pretrain.export import export_checkpoint

    out = tmp_path / "run"
    result = run_pretrain(tiny_overrides(out, mni, "max_steps=2", "checkpoint_every=0", "export_at_end=true"))
    export = Path(result["export"])
    config = json.loads((export / "config.json").read_text())
    assert config["architecture"] == "vit_tiny" and config["in_chans"] == 1 and config["img_size"] == 32
    assert config["pretrain"]["loss"] == "graph_matching" and config["input_mean"] == [0.5]

    from lvmmed.config import load_config
    from pretrain.config import PretrainConfig
    from pretrain.export import backbone_state
    from pretrain.meta_arch import SSLMetaArch

    cfg = load_config(PretrainConfig, out / "config.yaml")
    reference = SSLMetaArch.from_config(cfg).backbone
    reference.load_state_dict(backbone_state(_weights(ckpt.find_latest(out))))
    loaded = load_backbone(export)
    x = torch.rand(3, 1, 32, 32)
    reference.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), reference(x), rtol=0, atol=0)
    # On demand from the checkpoint: the same weights.
    again = export_checkpoint(out, tmp_path / "again")
    with torch.no_grad():
        torch.testing.assert_close(load_backbone(again)(x), reference(x), rtol=0, atol=0)


def test_unknown_key_and_bad_values_are_errors(tmp_path, mni, run_pretrain, tiny_overrides):
    with pytest.raises(SystemExit):
        run_pretrain(tiny_overrides(tmp_path, mni, "max_stepz=3"))
    with pytest.raises(SystemExit):
        run_pretrain(tiny_overrides(tmp_path, mni, "optim.name=sgd"))
