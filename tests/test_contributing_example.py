"""CONTRIBUTING.md's "Adding a loss" example runs as written: one registration makes ``loss.name=<name>`` valid,
and the pretraining meta-architecture builds and trains it (one forward and backward on real MR slices)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lvmmed.config import ConfigError, load_config
from lvmmed.data import samples
from lvmmed.losses import LOSSES, build_loss

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Adding a loss (or any named component)"


def example_code() -> str:
    """The first ```python block under SECTION in CONTRIBUTING.md."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    assert SECTION in text, f"CONTRIBUTING.md lost its section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block, f"no python block under {SECTION!r}"
    return block.group(1)


def registered_name(code: str) -> str:
    names = re.findall(r"LOSSES\.register\(\s*[\"']([\w-]+)[\"']", code)
    assert len(names) == 1, f"the example should register exactly one loss, found {names}"
    return names[0]


def mr_slices(n: int, size: int) -> torch.Tensor:
    """``n`` axial slices of the bundled MNI152 T1 volume, scaled to [0, 1], as (n, 1, size, size)."""
    import nibabel as nib

    try:
        volume = np.asarray(nib.load(samples.path("mni152_t1")).dataobj, dtype=np.float32)
    except samples.MissingSampleError as err:
        pytest.skip(str(err))
    depth = volume.shape[2]
    picks = np.linspace(depth * 0.3, depth * 0.7, n).astype(int)
    x = torch.from_numpy(np.stack([volume[:, :, z] for z in picks]))[:, None]
    return F.interpolate(x / x.amax(), size=(size, size), mode="bilinear")


def test_example_is_short_and_one_registration():
    code = example_code()
    lines = code.splitlines()
    assert len(lines) <= 20, f"the example has {len(lines)} lines (the promise is at most 20)"
    registered_name(code)


def test_example_registers_a_loss_that_pretraining_builds_and_trains():
    from pretrain.config import PretrainConfig
    from pretrain.meta_arch import SSLMetaArch

    code = example_code()
    name = registered_name(code)
    overrides = [f"loss.name={name}", "augment.size=32", "model.proj_hidden_dim=32", "model.proj_output_dim=16"]
    config_path = ROOT / "configs/pretrain/tiny_cpu_r18.yaml"
    assert name not in LOSSES
    with pytest.raises(ConfigError, match=rf"unknown loss\.name '{name}'"):
        load_config(PretrainConfig, config_path, overrides)
    try:
        exec(compile(code, "CONTRIBUTING.md", "exec"), {"__name__": "contributing_example"})
        cfg = load_config(PretrainConfig, config_path, overrides)
        assert type(build_loss(cfg.loss, 16)).__module__ == "contributing_example"  # the example's class
        torch.manual_seed(0)
        model = SSLMetaArch.from_config(cfg, load_init=False).train()
        views = mr_slices(8, 32)
        loss, info = model(views, torch.flip(views, dims=[-1]))
        loss.backward()
        assert type(model.loss).__module__ == "contributing_example"
    finally:
        LOSSES.unregister(name)
    assert loss.ndim == 0 and torch.isfinite(loss) and set(info) > {"loss"}
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0, "the loss did not reach the backbone"
