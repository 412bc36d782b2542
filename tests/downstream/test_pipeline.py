"""One downstream pipeline for both task families: the CLI, the method registry's one config check, the run-directory
layout and the ``summary.json`` schema, the old segmentation entry point, and ``--eval``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from downstream.__main__ import check_task_and_method, main
from downstream.config import DownstreamConfig
from downstream.contract import Method
from downstream.pipeline import run_seeds, summarise
from downstream.registry import METHODS, method_task, register_method, resolve_key
from downstream.segmentation.__main__ import main as segmentation_main
from downstream.segmentation.config import SegmentationConfig
from lvmmed.config import ConfigError, load_config

SEG_FAST = ["optim.batch_size=4", "optim.max_steps=1", "unet.decoder_channels=[8,8,16,16]", "bootstrap=20",
            "hd95=false", "progress=false"]  # fmt: skip
CLS_FAST = ["backbone=resnet18", "img_size=32", "max_per_class=12", "patch_stride=8", "bootstrap=20",
            "progress=false", "linear.c_grid=[1.0]"]  # fmt: skip
FIXED_KEYS = {"task", "method", "weights", "seeds", "runs", "failed", "params", "task_kind"}


@pytest.fixture
def user_methods():
    """Registers methods for one test and removes them afterwards."""
    added: list[str] = []

    def register(key: str, cls: type[Method], task: str | None = None) -> type[Method]:
        added.append(key)
        return register_method(key, task=task)(cls)

    yield register
    for key in added:
        METHODS.unregister(key)


def test_a_user_registered_segmentation_method_passes_the_one_config_check(user_methods):
    from downstream.segmentation.unet import SegUNet

    class MySeg(SegUNet):
        pass

    class MyProbe(Method):
        pass

    user_methods("my-seg", MySeg)  # declared task (segmentation, from SegUNet)
    user_methods("my-probe-k", MyProbe, task="classification")
    assert method_task("my-seg") == "segmentation" and resolve_key("my-probe-3") == ("my-probe-k", "3")
    assert load_config(SegmentationConfig, overrides=["method=my-seg"]).method == "my-seg"
    assert check_task_and_method("seg_tissue", "my-seg") == "segmentation"
    assert load_config(DownstreamConfig, overrides=["method=my-probe-3"]).method == "my-probe-3"
    with pytest.raises(ConfigError, match="'my-seg' is a segmentation method"):
        load_config(DownstreamConfig, overrides=["method=my-seg"])
    with pytest.raises(ConfigError, match="'linear' is a classification method"):
        load_config(SegmentationConfig, overrides=["method=linear"])
    with pytest.raises(ValueError, match="already registered"):
        register_method("seg-unet")(MySeg)
    with pytest.raises(ValueError, match="task must be one of"):
        register_method("my-detector", task="detection")(MyProbe)


def test_method_capabilities_are_declared_on_the_contract():
    for key in METHODS:
        cls = METHODS.get(key)
        assert cls.task == METHODS.task_of(key)
        assert isinstance(cls.head_only, bool) and isinstance(cls.accepts_plain_features, bool)
    assert METHODS.get("linear").head_only and not METHODS.get("movl").head_only
    assert Method.variant(DownstreamConfig()) is Method


def test_the_cli_picks_the_family_from_the_method_or_the_task():
    assert check_task_and_method("", "") == "classification"
    assert check_task_and_method("", "", default="segmentation") == "segmentation"
    assert check_task_and_method("seg_tissue", "") == "segmentation"
    assert check_task_and_method("", "mask-guided") == "segmentation"
    assert check_task_and_method("tissue", "partial-2") == "classification"
    with pytest.raises(ValueError, match="segmentation task; method 'linear' is not"):
        check_task_and_method("seg_tissue", "linear")
    with pytest.raises(ValueError, match="'tissue' is a classification task; method 'seg-unet'"):
        check_task_and_method("tissue", "seg-unet")
    with pytest.raises(ValueError, match="did you mean 'seg-unet'"):
        check_task_and_method("seg_tissue", "seg-unt")


def _fake_result(cfg, metrics: dict, **extra) -> dict:
    return {"task": cfg.task, "method": cfg.method, "seed": cfg.seed, "status": "ok", "error": "", "seconds": 0.1,
            "output_dir": cfg.output_dir, "metrics": metrics, "params": {"trainable": 1, "total": 2,
            "trainable_pct": 50.0}, **extra}  # fmt: skip


def test_one_layout_and_one_summary_schema_for_both_families(tmp_path, capsys):
    cls_cfg = load_config(DownstreamConfig, overrides=[f"output_dir={tmp_path}", "seeds=[0,1]"])
    seg_cfg = load_config(SegmentationConfig, overrides=[f"output_dir={tmp_path}", "seeds=[0,1]"])
    seen: list[str] = []

    def cls_run(cfg):
        seen.append(cfg.output_dir)
        return _fake_result(cfg, {"accuracy": 0.5 + cfg.seed / 10}, task_kind="classification")

    def seg_run(cfg):
        seen.append(cfg.output_dir)
        return _fake_result(cfg, {"dice_mean": 0.6, "hd95_mean": None if cfg.seed else 3.0})

    assert run_seeds(cls_cfg, cls_run) == 0 and run_seeds(seg_cfg, seg_run) == 0
    layout = ["tissue/linear/random/full/seed0", "tissue/linear/random/full/seed1",
              "seg_tissue/seg-unet/random/full/seed0", "seg_tissue/seg-unet/random/full/seed1"]  # fmt: skip
    assert seen == [str(tmp_path / d) for d in layout]
    cls_summary = json.loads((tmp_path / "tissue/linear/random/full/summary.json").read_text())
    seg_summary = json.loads((tmp_path / "seg_tissue/seg-unet/random/full/summary.json").read_text())
    for summary, metrics in ((cls_summary, {"accuracy"}), (seg_summary, {"dice_mean", "hd95_mean"})):
        assert set(summary) == FIXED_KEYS | metrics and summary["runs"] == 2 and summary["failed"] == 0
        assert all(set(summary[m]) == {"mean", "std"} for m in metrics)
    assert cls_summary["accuracy"]["mean"] == pytest.approx(0.55) and cls_summary["task_kind"] == "classification"
    assert seg_summary["hd95_mean"] == {"mean": 3.0, "std": 0.0} and seg_summary["task_kind"] == "segmentation"
    out = capsys.readouterr().out
    assert "seed 1: accuracy=0.600" in out and "seed 0: dice_mean=0.600" in out and "dice_mean" in out


def test_every_run_failed_gives_no_metric_table(tmp_path):
    cfg = load_config(SegmentationConfig, overrides=[f"output_dir={tmp_path}", "seeds=[0]"])
    failed = {**_fake_result(cfg, {}), "status": "failed", "error": "boom"}
    assert set(summarise(cfg, [0], [failed])) == FIXED_KEYS
    assert run_seeds(cfg, lambda c: {**failed, "output_dir": c.output_dir}, prog="x") == 1


def test_both_families_run_and_reevaluate_through_the_one_cli(bundled_shards, tmp_path, capsys):
    root = bundled_shards["mni152"].parent
    assert main([f"data_root={root}", f"output_dir={tmp_path}", "task=seg_tissue", "method=seg-unet", "seed=0",
                 *SEG_FAST]) == 0  # fmt: skip
    assert main([f"data_root={root}", f"output_dir={tmp_path}", "task=tissue", "method=linear", "seed=0",
                 *CLS_FAST]) == 0  # fmt: skip
    seg_dir, cls_dir = tmp_path / "seg_tissue/seg-unet/random/full", tmp_path / "tissue/linear/random/full"
    seg_summary = json.loads((seg_dir / "summary.json").read_text())
    cls_summary = json.loads((cls_dir / "summary.json").read_text())
    assert {k for k, v in seg_summary.items() if not isinstance(v, dict) or set(v) != {"mean", "std"}} == FIXED_KEYS
    assert {k for k, v in cls_summary.items() if not isinstance(v, dict) or set(v) != {"mean", "std"}} == FIXED_KEYS
    capsys.readouterr()
    for run_dir, metric in ((seg_dir / "seed0", "dice_mean"), (cls_dir / "seed0", "accuracy")):
        assert main(["--eval", str(run_dir)]) == 0
        again = json.loads(capsys.readouterr().out)
        saved = json.loads((run_dir / "result.json").read_text())["metrics"][metric]
        assert again[metric] == pytest.approx(saved, abs=1e-9)
    with pytest.raises(SystemExit) as exc:
        main(["--eval", str(tmp_path)])
    assert exc.value.code == 2 and "no config.yaml" in capsys.readouterr().err


def test_the_old_segmentation_entry_point_runs_the_same_pipeline(bundled_shards, tmp_path, capsys):
    root = bundled_shards["mni152"].parent
    assert segmentation_main(["--print-config"]) == 0  # no method, no task: the segmentation defaults
    assert "method: seg-unet" in capsys.readouterr().out
    config = Path(__file__).resolve().parents[2] / "configs" / "downstream" / "seg_tissue.yaml"
    assert segmentation_main(["--config", str(config), f"data_root={root}", f"output_dir={tmp_path}", "--single",
                              *SEG_FAST]) == 0  # fmt: skip
    assert (tmp_path / "seg_tissue/seg-unet/random/full/seed0/result.json").is_file()
    assert (tmp_path / "seg_tissue/seg-unet/random/full/summary.json").is_file()
    with pytest.raises(SystemExit) as exc:
        segmentation_main(["method=seg-unt"])
    assert exc.value.code == 2 and "did you mean 'seg-unet'" in capsys.readouterr().err
