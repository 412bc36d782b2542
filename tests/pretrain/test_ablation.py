"""The ablation harness end to end on a tiny budget: 2 variants × 1 seed, real pretraining and a real probe."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from scipy import stats

from lvmmed.markers import read_block
from pretrain import ablation
from pretrain.ablation_config import AblationConfig, VariantSpec
from pretrain.ablation_report import seed_stats, versus_reference

TINY_PRETRAIN = [
    "max_steps=2", "augment.size=32", "data.batch_size=8", "data.num_workers=0", "data.shuffle_buffer=20",
    "data.shuffle_initial=5", "model.proj_hidden_dim=32", "model.proj_output_dim=16",
    "loss.graph_matching.mp_hidden=16", "loss.graph_matching.k=3", "optim.warmup_steps=1", "trackers=[]",
    "checkpoint_every=2", "log_every=1",
]  # fmt: skip


def _config(tmp_path, shards: dict) -> dict:
    return {
        "name": "test",
        "output_dir": str(tmp_path / "run"),
        "pretrain_overrides": [*TINY_PRETRAIN, f"data.shards=[{shards['mni152']}]"],
        "data_root": str(shards["mni152"].parent),
        "downstream_overrides": ["bootstrap=0", "save_delta=false", "max_per_class=12", "linear.c_grid=[1.0]"],
        "variants": [{"name": "paper_gm"}, {"name": "random", "source": "random"}],
        "evals": [{"task": "tissue", "method": "linear", "config": "configs/downstream/tissue.yaml"}],
        "seeds": [0],
        "baselines": ["random"],
        "headline": "tissue/linear",
        "workers": 1,
        "report": str(tmp_path / "page.md"),
        "readme": str(tmp_path / "readme.md"),
    }


@pytest.mark.slow
def test__harness_runs_resumes_and_writes_the_report_block(tmp_path, bundled_shards, capsys):
    (tmp_path / "page.md").write_text("intro\n<!-- ablation:start -->\n<!-- ablation:end -->\nend\n")
    (tmp_path / "readme.md").write_text("# R\n<!-- ablation-headline:start -->\nold\n<!-- ablation-headline:end -->\n")
    config = tmp_path / "ablation.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path, bundled_shards)))
    assert ablation.main(["--config", str(config)]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    rows = results["summary"]["tissue/linear"]
    assert rows["paper_gm"]["n"] == 1 and rows["random"]["n"] == 1
    assert 0.0 <= rows["paper_gm"]["mean"] <= 1.0 and results["missing"] == []
    block = read_block(tmp_path / "page.md", "ablation")
    assert "python -m pretrain.ablation --config" in block and "| paper_gm |" in block
    assert (tmp_path / "page.md").read_text().startswith("intro\n") and "complete" in block
    quote = read_block(tmp_path / "readme.md", "ablation-headline")
    assert "old" not in quote and "Quoted from `python -m pretrain.ablation --config" in quote
    assert "- paper_gm − random on tissue/linear:" in quote and "pretraining seeds [0]" in quote
    # a rerun skips every finished cell: no new pretraining, same numbers
    assert "pending 0 pretraining runs" not in capsys.readouterr().out
    assert ablation.main(["--config", str(config)]) == 0
    assert "pending 0 pretraining runs (2 steps) and 0 evaluations" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "results.json").read_text())["summary"]["tissue/linear"] == rows


def test__bad_config_exits_2(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"variants": [{"name": "a"}], "reference": "missing"}))
    assert ablation.main(["--config", str(config)]) == 2
    assert "reference" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no pretraining overrides"):
        VariantSpec(name="r", source="random", overrides=["max_steps=1"])
    with pytest.raises(ValueError, match="unique"):
        AblationConfig(variants=[VariantSpec(name="a"), VariantSpec(name="a")], reference="a")


def test__paired_statistics():
    mean, std, low, high = seed_stats([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1) and low < 0.6 < high
    assert high - mean == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)  # t(0.975, 2)
    assert seed_stats([0.5])[0] == 0.5 and all(math.isnan(x) for x in seed_stats([0.5])[1:])
    assert all(math.isnan(x) for x in seed_stats([]))
    cmp = versus_reference({0: 0.6, 1: 0.7, 2: 0.9}, {0: 0.5, 1: 0.5, 2: 0.6})
    assert cmp["n"] == 3 and cmp["diff"] == pytest.approx(0.2) and cmp["ci"][0] < 0.2 < cmp["ci"][1]
    assert cmp["p"] == pytest.approx(stats.ttest_rel([0.6, 0.7, 0.9], [0.5, 0.5, 0.6]).pvalue, rel=1e-12)
    assert versus_reference({0: 0.6}, {1: 0.5})["n"] == 0
    # only the shared seeds pair up; no spread in the differences (zero or constant) means no t-test
    assert versus_reference({0: 0.6, 1: 0.7, 2: 0.9}, {1: 0.5, 2: 0.6})["n"] == 2
    assert math.isnan(versus_reference({0: 0.6, 1: 0.7}, {0: 0.6, 1: 0.7})["p"])
    assert math.isnan(versus_reference({0: 0.6, 1: 0.7}, {0: 0.5, 1: 0.6})["p"])


def test__report_states_the_pretraining_pool_from_the_manifests(tmp_path):
    from pretrain.ablation_report import pool_line

    for name, train in (("a", 5), ("b", 7)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps({"counts": {"train": train, "val": 1, "test": 1}}))
    cfg = AblationConfig(pretrain_overrides=[f"data.shards=[{tmp_path}]"])
    assert pool_line(cfg) == "Pretraining pool (train splits): a 5, b 7; 12 images."


def test__variant_budgets_enter_the_estimate_and_bad_variant_overrides_exit_2(tmp_path, capsys):
    base = {"pretrain_overrides": ["max_steps=100", "data.shards=[/nonexistent]"], "output_dir": str(tmp_path / "r")}
    variants = [
        {"name": "short", "overrides": ["max_steps=10"]},
        {"name": "long", "overrides": ["max_steps=1000"]},
        {"name": "random", "source": "random"},
    ]
    config = tmp_path / "a.yaml"
    config.write_text(yaml.safe_dump({**base, "variants": variants, "reference": "short", "seconds_per_step": 1.0,
                                      "seconds_per_eval": 0.0, "workers": 1}))  # fmt: skip
    assert ablation.main(["--config", str(config), "--estimate"]) == 0
    out = capsys.readouterr().out
    # 3 seeds × (10 + 1000 steps) + 6 runs × 15 s start-up on one worker: 3120 s = 52 min (not 3 × 2 × 100 steps)
    assert "pending 6 pretraining runs (10/1000 steps)" in out and "estimate 52 min" in out
    config.write_text(yaml.safe_dump({**base, "variants": [{"name": "a", "overrides": ["optim.lrr=1"]}],
                                      "reference": "a"}))  # fmt: skip
    assert ablation.main(["--config", str(config), "--estimate"]) == 2
    assert "lrr" in capsys.readouterr().err


def test__headline_phrase_names_the_budgets_when_they_differ():
    from pretrain.ablation_report import _budget

    steps = {"gm_240": 240, "gm_80": 80, "nt_240": 240}
    assert _budget(steps, "gm_240", "nt_240") == "at equal steps, batch and data"
    assert _budget(steps, "gm_240", "gm_80") == "at 240 vs 80 steps (same batch and data)"
    assert _budget(steps, "gm_240", "random") == "at 240 pretraining steps vs none (random init)"


def test__report_only_without_cells_leaves_the_report_block_alone(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("<!-- ablation:start -->\nthe stored table\n<!-- ablation:end -->\n")
    config = tmp_path / "a.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "empty"), "report": str(page),
                                      "variants": [{"name": "paper_gm"}], "reference": "paper_gm"}))  # fmt: skip
    assert ablation.main(["--config", str(config), "--report-only"]) == 1
    assert "no finished cells" in capsys.readouterr().err
    assert read_block(page, "ablation") == "the stored table"
