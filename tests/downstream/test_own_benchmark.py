"""Own datasets in the benchmark: the README's three commands on a fixture tree, published-layout ResNet-50 weights
at their own settings, GMoE-Adapter with a real general weights file, and the multi-label / per-class tables."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch

from downstream.benchmark.api import run_benchmark
from downstream.benchmark.config import BenchmarkConfig
from downstream.inputs import IMAGENET_MEAN, IMAGENET_STD
from lvmmed.config import load_config
from tests.downstream import own_data

REPO = Path(__file__).resolve().parents[2]
FAST = ["bootstrap=50", "optim.max_steps=4", "optim.batch_size=8", "split_mode=group"]


def readme_commands() -> list[list[str]]:
    """The bash block of the README section "Evaluate weights on your own dataset"."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Evaluate weights on your own dataset", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line) for line in block.strip().splitlines()]


@pytest.mark.slow
def test_readme_commands_run_on_a_fixture_tree(tmp_path, monkeypatch):
    from data_prep.cli import main as data_prep_main
    from downstream.__main__ import main as downstream_main
    from downstream.benchmark.__main__ import main as benchmark_main

    convert, run_one, matrix = readme_commands()
    assert convert[:3] == ["python", "-m", "data_prep"] and run_one[:3] == ["python", "-m", "downstream"]
    assert matrix[:3] == ["python", "-m", "downstream.benchmark"]
    monkeypatch.chdir(tmp_path)
    own_data.classification_tree(tmp_path / "my_images")
    assert data_prep_main([*convert[3:], "workers=1", "image_size=32", "--quiet"]) == 0
    assert json.loads((tmp_path / "runs/shards/mine/manifest.json").read_text())["counts"]["total"] == 24

    assert downstream_main([*run_one[3:], "img_size=32", "bootstrap=50", "seeds=[0]"]) == 0
    (result,) = [json.loads(p.read_text()) for p in (tmp_path / "runs/downstream").rglob("result.json")]
    assert result["status"] == "ok" and result["class_names"] == ["fundus", "histology"]

    config = [str(REPO / a) if a.startswith("configs/") else a for a in matrix[3:]]
    overrides = "overrides=[backbone=resnet18,img_size=32," + ",".join(FAST) + "]"
    assert benchmark_main([*config, overrides, "seeds=[0]"]) == 0
    report = (tmp_path / "runs/my_datasets/report.md").read_text()
    assert "Weight sources skipped" in report and "`lvmmed_rn50`" in report  # no published file on this machine
    assert "### mine (full; accuracy)" in report
    assert "† GMoE-Adapter with a randomly initialised general stream" in report
    assert (tmp_path / "runs/my_datasets/results.csv").is_file()


def _torchvision_file(path: Path, arch: str) -> Path:
    """A torchvision-layout checkpoint (the layout of the published ``lvmmed_resnet.torch``)."""
    import torchvision

    torch.manual_seed(0)
    torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), path)
    return path


def _bench(tmp_path: Path, task_dir: Path, methods: list[dict], weights: list[dict], overrides: list[str]):
    cfg = load_config(
        BenchmarkConfig,
        overrides=[
            "name=own",
            f"output_dir={tmp_path / 'bench'}",
            f"tasks=[{{name: own, task: 'shards:{task_dir}'}}]",
            f"methods={json.dumps(methods)}",
            f"weights={json.dumps(weights)}",
            "seeds=[0]",
            f"overrides={json.dumps(overrides)}",
        ],
    )
    outcome = run_benchmark(cfg, progress=lambda _line: None)
    out = tmp_path / "bench"
    records = {p.stem: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}
    return outcome, records, (out / "report.md").read_text()


@pytest.fixture(scope="module")
def own_cls(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("own_bench")
    return own_data.convert(own_data.classification_tree(root / "src"), root / "cls", "image_size=32",
                            "patient_from=labels", "--quiet", labels="labels.csv")  # fmt: skip


@pytest.mark.slow
def test_published_resnet50_runs_at_its_own_settings(own_cls, tmp_path):
    file = _torchvision_file(tmp_path / "lvmmed_resnet.torch", "resnet50")
    outcome, records, report = _bench(
        tmp_path, own_cls, [{"key": "linear"}], [{"name": "lvmmed_rn50", "source": f"lvmmed-resnet50={file}"}],
        ["backbone=resnet18", "img_size=32", *FAST],
    )  # fmt: skip
    assert outcome["counts"]["ok"] == 1
    (record,) = records.values()
    result = record["result"]
    assert result["status"] == "ok" and result["config"]["backbone"] == "resnet50"
    assert result["input"] == {"in_chans": 3, "img_size": 224, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    assert result["params"]["backbone"] == 23_508_032  # torchvision ResNet-50 without fc
    assert "lvmmed_rn50" in report


@pytest.mark.slow
def test_gmoe_dual_stream_with_a_general_weights_file(own_cls, tmp_path):
    general = _torchvision_file(tmp_path / "resnet18_general.pth", "resnet18")
    methods = [
        {"key": "gmoe-adapter", "label": "gmoe-dual", "overrides": ["gmoe.form=dual",
                                                                    f"gmoe.general_weights=torchvision:{general}"]},
        {"key": "gmoe-adapter", "label": "gmoe-random", "overrides": ["gmoe.form=dual"]},
    ]  # fmt: skip
    outcome, records, report = _bench(tmp_path, own_cls, methods, [{"name": "random", "source": "random"}],
                                      ["backbone=resnet18", "img_size=32", *FAST])  # fmt: skip
    assert outcome["counts"]["ok"] == 2, [r.get("error") for r in records.values()]
    flagged = [line for line in report.splitlines() if line.startswith("| random |") and "†" in line]
    assert len(flagged) == 1
    columns = report.split("### own (full; accuracy)")[1].splitlines()[2]
    cells = [c.strip() for c in flagged[0].split("|")[2:-1]]
    heads = [c.strip() for c in columns.split("|")[2:-1]]
    assert "†" in cells[heads.index("gmoe-random")] and "†" not in cells[heads.index("gmoe-dual")]


def test_report_tables_for_multilabel_and_segmentation(tmp_path):
    """Per-label AUROC and per-class Dice tables from stored records (no training)."""
    from downstream.benchmark.matrix import expand
    from downstream.benchmark.report import write_report
    from downstream.benchmark.runner import CellStore

    cfg = load_config(
        BenchmarkConfig,
        overrides=[
            f"output_dir={tmp_path}",
            "tasks=[{name: chest, task: 'shards:/data/chest'}, {name: kidney, task: 'shards:/data/kidney'}]",
            "methods=[{key: linear, tasks: [chest]}, {key: seg-unet, tasks: [kidney]}]",
            "weights=[{name: random, source: random}]",
            "seeds=[0, 1]",
        ],
    )
    cells, skipped = expand(cfg)
    store = CellStore(tmp_path)
    for cell in cells:
        if cell.task == "chest":
            result = {"status": "ok", "headline_metric": "auroc",
                      "metrics": {"auroc": 0.7 + 0.1 * cell.seed, "macro_f1": 0.5, "accuracy": 0.2},
                      "per_label": {"auroc_per_label": {"effusion": 0.6 + 0.1 * cell.seed, "nodule": 0.8}}}  # fmt: skip
        else:
            result = {
                "status": "ok",
                "metrics": {"dice_mean": 0.5, "dice_kidney": 0.7, "dice_tumor": 0.3 + 0.1 * cell.seed},
            }
        store.write(cell, {"cell": cell.as_row(), "fingerprint": cell.fingerprint, "status": "ok", "result": result})
    report = (write_report(cfg, cells, skipped)["report"]).read_text()
    assert "### chest (full; auroc)" in report  # multi-label headline is macro AUROC, not subset accuracy
    assert "#### chest (full): AUROC per label" in report
    assert "| random | LP | 0.650 ± 0.071 | 0.800 ± 0.000 |" in report
    assert "#### kidney (full): Dice per class" in report
    assert "| kidney | tumor |" in report.replace("| weights | method ", "")
    assert "| random | seg-unet | 0.700 ± 0.000 | 0.350 ± 0.071 |" in report
