"""The demo orchestrator's config plumbing (cheap: no training here; `make demo` runs it all)."""

from __future__ import annotations

import pytest

from demo.__main__ import main
from demo.run import DemoConfig, _first_table, benchmark_config, monitor_overrides, pretrain_done
from lvmmed.config import load_config


def test_demo_benchmark_config_is_rebased_and_drops_seg_on_request(tmp_path):
    cfg = load_config(DemoConfig, overrides=["seeds=[0,1]", "seg=false"])
    bench = benchmark_config(cfg, tmp_path, notes="scale note")
    assert bench.output_dir == str(tmp_path / "benchmark")
    assert {w.name: w.source for w in bench.weights}["ours_gm"] == str(tmp_path / "pretrain_gm_s{seed}/export")
    assert [run for run, _, _ in cfg.pretrain_runs()] == [
        "pretrain_gm_s0", "pretrain_ntxent_s0", "pretrain_gm_s1", "pretrain_ntxent_s1"
    ]  # fmt: skip
    shared = load_config(DemoConfig, overrides=["seeds=[3,4]", "pretrain_per_seed=false"])
    assert [run for run, _, _ in shared.pretrain_runs()] == ["pretrain_gm_s3", "pretrain_ntxent_s3"]
    shared_bench = benchmark_config(shared, tmp_path, notes="")
    assert {w.name: w.source for w in shared_bench.weights}["ours_gm"] == str(tmp_path / "pretrain_gm_s3/export")
    assert f"data_root={tmp_path}/shards" in bench.overrides
    assert bench.seeds == [0, 1] and bench.notes == "scale note"
    assert [t.name for t in bench.tasks] == ["brain_sector", "tissue"]
    assert "seg-unet" not in [m.key for m in bench.methods]
    with_seg = benchmark_config(load_config(DemoConfig), tmp_path, notes="")
    assert "seg_tissue" in [t.name for t in with_seg.tasks]


def test_the_headline_is_the_brain_sector_task_with_lp_and_knn_at_the_pretraining_resolution(tmp_path):
    from downstream.benchmark.matrix import expand
    from downstream.benchmark.runner import cell_overrides
    from downstream.config import DownstreamConfig

    bench = benchmark_config(load_config(DemoConfig, overrides=["seg=false"]), tmp_path, notes="")
    assert bench.tasks[0].name == "brain_sector"  # the headline table lists it first
    cells, skipped = expand(bench)  # no exports under tmp_path: the pretrained columns are skipped
    assert {s.name for s in skipped} == {"ours_gm", "ours_simclr"}
    sector = [c for c in cells if c.task == "brain_sector"]
    assert {c.method_key for c in sector} == {"linear", "knn"} and len(sector) == 2 * 3
    assert all(c.task == "tissue" for c in cells if c.method_key == "vpt-deep")
    cell = sector[0]
    cfg = load_config(DownstreamConfig, bench.tasks[0].base_config, cell_overrides(cell, tmp_path / "run"))
    assert cfg.task == "brain_sector" and cfg.patch_size == cfg.img_size == 64 and cfg.max_per_class == 0


def test_pretraining_runs_carry_the_monitor_unless_turned_off(tmp_path):
    keys = monitor_overrides(tmp_path / "shards", 25)
    assert f"monitor.eval_set={tmp_path / 'shards' / 'mni152'}" in keys and "monitor.eval_every=25" in keys
    from pretrain.config import PretrainConfig

    cfg = load_config(PretrainConfig, "configs/pretrain/tiny_cpu.yaml", keys)
    assert cfg.monitor.patch_size == cfg.augment.size == 64 and cfg.monitor.labels == "mask"
    assert load_config(DemoConfig).monitor and not load_config(DemoConfig, overrides=["monitor=false"]).monitor


def test_pretrain_done_requires_the_exact_step_budget(tmp_path):
    run = tmp_path / "pretrain_gm"
    assert not pretrain_done(run, 50)
    (run / "export").mkdir(parents=True)
    (run / "export" / "model.safetensors").write_bytes(b"x")
    (run / "export" / "config.json").write_text('{"pretrain": {"steps": 40}}')
    (run / "curves.png").write_bytes(b"x")
    assert not pretrain_done(run, 50)
    assert pretrain_done(run, 40)


def test_first_table_extracts_the_headline_section(tmp_path):
    report = tmp_path / "report.md"
    report.write_text("# R\n\nnotes\n\n## Did our pretraining help? (x)\n\n| a |\n|---|\n\n## Results per task\n")
    assert _first_table(report).startswith("## Did our pretraining help?")
    assert "Results per task" not in _first_table(report)
    assert _first_table(tmp_path / "missing.md") == ""


def test_main_rejects_an_unknown_key_with_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path), "no_such_key=1"])
    assert exit_.value.code == 2
    assert "no_such_key" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_failing_stage_is_one_error_line_with_exit_1(tmp_path, capsys):
    from demo.run import _python_all
    from lvmmed.errors import run_cli

    log = tmp_path / "logs" / "stage.log"
    code = run_cli(lambda _: _python_all([("no_such_module_for_the_demo", [], log)], parallel=False), [], "demo")
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "failed with exit code 1" in err[0] and str(log) in err[0]
    assert "No module named no_such_module_for_the_demo" in log.read_text()


def test_readme_excerpt_is_written_from_the_report_and_states_the_pretraining_seeds(tmp_path):
    from demo.run import write_excerpt
    from lvmmed.markers import read_block

    report = tmp_path / "report.md"
    report.write_text("# R\n\n## Did our pretraining help? (x)\n\n| a |\n|---|\n| 0.5 |\n\n## Results per task\n")
    readme = tmp_path / "README.md"
    readme.write_text("top\n<!-- demo-excerpt:start -->\nold numbers\n<!-- demo-excerpt:end -->\nbottom\n")
    cfg = load_config(DemoConfig, overrides=["seeds=[0,1,2]", "readme=README.md"])
    write_excerpt(cfg, report, 300.0, readme)
    block = read_block(readme, "demo-excerpt")
    assert "old numbers" not in block and "| 0.5 |" in block and "Results per task" not in block
    assert "**3 pretraining runs per loss**" in block and "3 seeds" in block and "spread between pretraining" in block
    shared = load_config(DemoConfig, overrides=["seeds=[0,1,2]", "pretrain_per_seed=false"])
    write_excerpt(shared, report, 300.0, readme)
    assert "**1 pretraining run per loss**" in read_block(readme, "demo-excerpt")
    assert readme.read_text().startswith("top\n") and readme.read_text().endswith("bottom\n")
    assert "pretrain_extra" in cfg.pretrain_sets and not any(s.startswith("colin27") for s in cfg.pretrain_sets)
