"""End-to-end cells of ``run_experiment`` and the ``python -m downstream`` CLI on the real bundled shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from downstream.__main__ import main
from downstream.config import DownstreamConfig
from downstream.demo import format_table
from downstream.run import load_delta, prepare_inputs, run_experiment
from downstream.splits import load_splits
from downstream.tasks import load_task
from downstream.train_loop import predict_probs
from lvmmed.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "downstream"
FAST = ["backbone=sam_vit_tiny", "img_size=32", "optim.max_steps=2", "optim.batch_size=16", "max_per_class=12",
        "patch_stride=8", "bootstrap=50", "progress=false", "linear.c_grid=[0.1,1.0]"]  # fmt: skip


@pytest.fixture(scope="module")
def data_root(bundled_shards):
    return str(next(iter(bundled_shards.values())).parent)


def cfg_for(data_root, tmp_path, *overrides):
    return load_config(
        DownstreamConfig, overrides=[*FAST, f"data_root={data_root}", f"output_dir={tmp_path}", *overrides]
    )


def test_linear_probe_cell_writes_every_output(data_root, tmp_path):
    res = run_experiment(cfg_for(data_root, tmp_path, "method=linear", "task=tissue"))
    assert res["status"] == "ok", res["error"]
    for name in ("result.json", "result.csv", "config.yaml", "splits.json", "delta.safetensors", "delta.json"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["metrics"] == res["metrics"] and set(res["metrics"]) == {"accuracy", "balanced_accuracy",
                                                                          "macro_f1", "auroc"}  # fmt: skip
    assert all(lo <= res["metrics"][k] <= hi for k, (lo, hi) in res["ci95"].items())
    assert res["params"]["trainable"] == 96 * 4 + 4 and res["best_hparams"]["C"] in (0.1, 1.0)
    splits = load_splits(tmp_path / "splits.json")
    task = load_task("tissue", data_root, 16, 8, 12)
    assert len(splits["test"]) == res["n_test"] and set(task.splits[splits["test"]]) == {"test"}
    assert not set(task.groups[splits["train"]]) & set(task.groups[splits["test"]])
    header = (tmp_path / "result.csv").read_text().splitlines()[0]
    assert "balanced_accuracy" in header and "params_trainable" in header


def test_sgd_cell_grid_and_delta_reload(data_root, tmp_path):
    cfg = cfg_for(data_root, tmp_path, "method=vpt-deep", "vpt.num_tokens=2", "optim.lr_scale_grid=[0.5,1.0]",
                  "tuning.enabled=false", "shot=4")  # fmt: skip
    res = run_experiment(cfg)
    assert res["status"] == "ok", res["error"]
    assert len(res["grid"]) == 2 and res["n_train"] == 4 * 4
    assert res["params"]["trainable"] == 4 * 2 * 96 + 96 * 4 + 4
    method = load_delta(tmp_path)
    task = load_task("tissue", data_root, 16, 8, 12)
    test = load_splits(tmp_path / "splits.json")["test"]
    probs = predict_probs(method, prepare_inputs(task.images[test], cfg, torch.device("cpu")))
    acc = float((probs.argmax(1) == task.labels[test]).mean())
    assert acc == pytest.approx(res["metrics"]["accuracy"])


@pytest.mark.learning
def test_lp_separates_clearly_different_real_classes(data_root, tmp_path, zeroed_backbones):
    """A linear probe on frozen random-init ``sam_vit_tiny`` features ranks fundus tiles above histology tiles
    (bundled ``color2d``, group-wise split of seed 0, 18 test tiles of which 4 histology); the control run, with
    every backbone weight zeroed (constant features), cannot.

    The asserted metric is the test AUROC (separation), not accuracy: the accuracy depends on where the probe puts
    its decision threshold for a histology block it has never seen, and was < 0.9 for 11 of 60 seeds (min 0.778,
    the all-fundus answer) although the ranking stayed almost perfect.
    Measured 2026-12-06 by rerunning this cell with ``seed`` = 0..59 and the control with 0..11 (the seed sets the
    split and the initialisation), at ``torch.set_num_threads(1)`` and ``(2)`` (identical values):

    ==================  =====  =====  =====  =====  ==  ==========  ===================================
    statistic           mean   std    min    max    n   threshold   distance
    ==================  =====  =====  =====  =====  ==  ==========  ===================================
    test AUROC          0.997  0.010  0.964  1.000  60  >= 0.9      9.7 std below the mean
    control AUROC       0.500  0      0.500  0.500  12  < 0.9       constant features: exactly chance
    (accuracy)          0.972  0.062  0.778  1.000  60  (none)      the old ``>= 0.9`` was 1.2 std away
    ==================  =====  =====  =====  =====  ==  ==========  ===================================
    """
    cells = ["task=color2d", "method=linear", "split_mode=group", "in_chans=3", "max_per_class=200"]
    res = run_experiment(cfg_for(data_root, tmp_path / "trained", *cells))
    assert res["status"] == "ok", res["error"]
    assert res["n_test"] >= 6 and res["metrics"]["auroc"] >= 0.9
    zeroed_backbones()
    control = run_experiment(cfg_for(data_root, tmp_path / "control", *cells))
    assert control["status"] == "ok", control["error"]
    assert control["metrics"]["auroc"] < 0.9


def test_incompatible_cell_is_recorded_not_raised(data_root, tmp_path):
    res = run_experiment(cfg_for(data_root, tmp_path, "method=vpt-shallow", "backbone=resnet18"))
    assert res["status"] == "failed" and "ViT" in res["error"]
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "failed"
    assert (tmp_path / "error.txt").is_file()


def test_cli_runs_seeds_and_summarises(data_root, tmp_path, capsys):
    grid = ["optim.lr_scale_grid=[1.0]", "optim.wd_grid=[0.0]"]
    code = main(["--config", str(CONFIGS / "tissue.yaml"), "method=movl", *FAST, f"data_root={data_root}",
                 f"output_dir={tmp_path}", "seeds=[0,1]", *grid])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "balanced_accuracy" in out and "±" in out
    summary = json.loads((tmp_path / "tissue/movl/random/full/summary.json").read_text())
    assert summary["runs"] == 2 and summary["failed"] == 0
    results = [json.loads((tmp_path / f"tissue/movl/random/full/seed{s}/result.json").read_text()) for s in (0, 1)]
    assert results[0]["seed"] == 0 and results[1]["seed"] == 1
    assert "movl" in format_table(results)
    with pytest.raises(SystemExit):
        main(["method=linear", "no_such_key=1"])


@pytest.mark.optional_data
def test_ood_task_tests_on_the_other_template(data_root, tmp_path, bundled_shards):
    if "colin27" not in bundled_shards:
        pytest.skip("mricron-data not installed (make data)")
    res = run_experiment(cfg_for(data_root, tmp_path, "task=tissue_ood", "method=linear"))
    assert res["status"] == "ok", res["error"]
    assert res["split"] == "ood" and res["test_source"] == "colin27" and res["n_test"] > 0
