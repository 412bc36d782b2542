"""Cell expansion of benchmark configs: stable ids, fingerprints, skipped weight sources, scaling sweeps."""

from __future__ import annotations

import pytest

from downstream.benchmark.config import BenchmarkConfig, MethodSpec, ScalingSweep, TaskSpec, WeightSpec
from downstream.benchmark.matrix import expand
from lvmmed.config import ConfigError, load_config


def _cfg(tmp_path, **kw) -> BenchmarkConfig:
    export = tmp_path / "ours_gm"
    export.mkdir(exist_ok=True)
    if not (export / "config.json").exists():  # a real export: lvmmed.weights.save_pretrained of a tiny backbone
        from lvmmed.models import create_backbone
        from lvmmed.weights import save_pretrained

        save_pretrained(create_backbone("resnet18", in_chans=1), export)
    base = dict(
        tasks=[TaskSpec("tissue", ["data_root=x"]), TaskSpec("modality")],
        methods=[MethodSpec("linear"), MethodSpec("vpt-deep", overrides=["vpt.num_tokens=4"], tasks=["tissue"])],
        weights=[
            WeightSpec("random", "random"),
            WeightSpec("ours_gm", str(export)),
            WeightSpec("lvmmed_published", str(tmp_path / "lvmmed_vit.pth")),
        ],
        seeds=[0, 1],
    )
    base.update(kw)
    return BenchmarkConfig(**base)


def test_expansion_counts_order_and_stable_ids(tmp_path):
    cells, skipped = expand(_cfg(tmp_path))
    # tissue: 2 methods x 2 usable weights x 2 seeds; modality: linear only (vpt-deep restricted to tissue)
    assert len(cells) == 8 + 4
    assert [s.name for s in skipped] == ["lvmmed_published"] and "does not exist" in skipped[0].reason
    assert cells[0].cell_id == "tissue__linear__random__s0"
    assert len({c.cell_id for c in cells}) == len(cells)
    again, _ = expand(_cfg(tmp_path))
    assert [c.cell_id for c in again] == [c.cell_id for c in cells]
    assert [c.fingerprint for c in again] == [c.fingerprint for c in cells]
    vpt = next(c for c in cells if c.method == "vpt-deep")
    assert vpt.overrides == ("data_root=x", "vpt.num_tokens=4")


def test_fingerprint_changes_only_for_edited_cells(tmp_path):
    before = {c.cell_id: c.fingerprint for c in expand(_cfg(tmp_path))[0]}
    edited = _cfg(tmp_path, methods=[MethodSpec("linear"), MethodSpec("vpt-deep", overrides=["vpt.num_tokens=8"])])
    after = {c.cell_id: c.fingerprint for c in expand(edited)[0]}
    changed = {k for k in before if k in after and before[k] != after[k]}
    assert changed and all("vpt-deep" in k for k in changed)
    assert all(before[k] == after[k] for k in before if "linear" in k)


def test_shots_fractions_and_scaling_sweeps(tmp_path):
    cfg = _cfg(
        tmp_path,
        tasks=[TaskSpec("tissue")],
        methods=[MethodSpec("linear")],
        shots=[4],
        fractions=[0.5],
        scaling=[ScalingSweep(method="vpt-deep", param="vpt.num_tokens", values=["1", "8"])],
    )
    cells, _ = expand(cfg)
    settings = {c.setting for c in cells}
    assert settings == {"full", "4shot", "frac0.5"}
    sweep = [c for c in cells if c.sweep]
    assert len(sweep) == 2 * 2 and {c.weights for c in sweep} == {"ours_gm"}  # reference weights only
    assert sweep[0].overrides[-1] == "vpt.num_tokens=1" and sweep[0].method == "vpt-deep@1"


def test_config_validation_errors(tmp_path):
    with pytest.raises(ValueError, match="labels must be unique"):
        _cfg(tmp_path, methods=[MethodSpec("linear"), MethodSpec("linear")])
    with pytest.raises(ValueError, match="seeds must be distinct"):
        _cfg(tmp_path, seeds=[0, 0])
    with pytest.raises(ValueError, match="reference_weights"):
        _cfg(tmp_path, reference_weights="nope")
    yaml = tmp_path / "b.yaml"
    yaml.write_text("tasks: [{name: tissue}]\nmethodz: []\n")
    with pytest.raises(ConfigError, match="methodz"):
        load_config(BenchmarkConfig, yaml)


def test_published_name_without_its_file_is_skipped_with_the_file_it_needs(tmp_path, monkeypatch):
    monkeypatch.setenv("LVMMED_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = _cfg(tmp_path, weights=[WeightSpec("random", "random"), WeightSpec("lvmmed_vitb", "lvmmed-vitb")])
    cells, skipped = expand(cfg)
    assert {c.weights for c in cells} == {"random"}
    assert [s.name for s in skipped] == ["lvmmed_vitb"] and "lvmmed_vit.pth" in skipped[0].reason


def test_a_seed_placeholder_pairs_each_seed_with_its_own_pretraining_run(tmp_path):
    """``{seed}`` in a weight source: seed s reads export s; a missing seed's export skips the source, naming it."""
    from lvmmed.models import create_backbone
    from lvmmed.weights import save_pretrained

    for seed in (0, 1):
        save_pretrained(create_backbone("resnet18", in_chans=1), tmp_path / f"gm_s{seed}")
    per_seed = WeightSpec("ours_gm", str(tmp_path / "gm_s{seed}"))
    cells, skipped = expand(_cfg(tmp_path, weights=[per_seed], methods=[MethodSpec("linear")]))
    assert not skipped and len(cells) == 4
    assert {(c.seed, c.weights_source) for c in cells} == {(s, str(tmp_path / f"gm_s{s}")) for s in (0, 1)}
    assert len({c.fingerprint for c in cells}) == 4
    cells, skipped = expand(_cfg(tmp_path, weights=[per_seed], methods=[MethodSpec("linear")], seeds=[0, 1, 2]))
    assert not cells and [s.name for s in skipped] == ["ours_gm"] and skipped[0].reason.startswith("seed 2:")
