"""The benchmark runner end to end on real bundled shards: report files, resume, CI columns, failed cells.

The matrix is 2 methods × 2 weight sources × 2 seeds on the ``tissue`` task (MNI152 patches), with tiny settings
(32-px ViT-Tiny, a few patches per class, one epoch) so that it runs in well under a minute on 2 cores. The second
weight source is a real ``save_pretrained`` export of a differently initialised backbone.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest
from scipy import stats as sps

from downstream.benchmark.api import run_benchmark
from downstream.benchmark.config import BenchmarkConfig, MethodSpec, TaskSpec, WeightSpec
from downstream.benchmark.matrix import expand
from downstream.benchmark.runner import CellStore

pytestmark = pytest.mark.slow  # real training of 8 + 4 tiny cells (about a minute of CPU)

TINY = [
    "img_size=32",
    "patch_size=16",
    "patch_stride=8",
    "max_per_class=12",
    "bootstrap=20",
    "optim.epochs=1",
    "optim.batch_size=32",
    "optim.lr_scale_grid=[1.0]",
    "optim.wd_grid=[0.0]",
    "linear.c_grid=[1.0]",
    "linear.max_iter=200",
    "vpt.num_tokens=2",
    "save_delta=false",
]


@pytest.fixture(scope="module")
def bench_setup(bundled_shards, tmp_path_factory):
    import torch

    from lvmmed.models import create_backbone
    from lvmmed.weights import save_pretrained

    root = tmp_path_factory.mktemp("bench")
    torch.manual_seed(123)
    export = root / "other_export"
    save_pretrained(create_backbone("vit_tiny", in_chans=1, img_size=32), export)
    data_root = bundled_shards["mni152"].parent
    return {"root": root, "export": export, "data_root": data_root}


def _config(setup, name: str, methods=None, weights=None, **kw) -> BenchmarkConfig:
    return BenchmarkConfig(
        name=name,
        output_dir=str(setup["root"] / name),
        overrides=[*TINY, f"data_root={setup['data_root']}"],
        tasks=[TaskSpec("tissue")],
        methods=methods or [MethodSpec("linear"), MethodSpec("vpt-deep")],
        weights=weights or [WeightSpec("random", "random"), WeightSpec("other", str(setup["export"]))],
        **{"reference_weights": "other", "seeds": [0, 1], **kw},
    )


@pytest.fixture(scope="module")
def finished(bench_setup):
    cfg = _config(bench_setup, "matrix")
    lines: list[str] = []
    outcome = run_benchmark(cfg, progress=lines.append)
    return cfg, outcome, lines


def test_matrix_writes_report_files(finished):
    cfg, outcome, lines = finished
    assert outcome["counts"] == {"total": 8, "skipped": 0, "ok": 8, "failed": 0}, lines
    out = cfg.output_dir
    for name in ("report.md", "results.csv", "summary.json", "config.yaml", "weights_ablation_tissue.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    assert sum(line.startswith("[") for line in lines) == 8  # one progress line per cell
    report = Path(out, "report.md").read_text()
    first_table = report.index("## Did our pretraining help?")
    assert first_table < report.index("## Results per task")
    assert "| tissue | accuracy | LP |" in report and "| tissue | accuracy | VPT-d |" in report
    with open(os.path.join(out, "results.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and {r["status"] for r in rows} == {"ok"}
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in rows)
    assert {int(r["trainable_params"]) for r in rows if r["method"] == "linear"} != {
        int(r["trainable_params"]) for r in rows if r["method"] == "vpt-deep"
    }


def test_ci_columns_match_hand_computation_from_per_seed_numbers(finished):
    cfg, _outcome, _ = finished
    with open(os.path.join(cfg.output_dir, "results.csv")) as handle:
        rows = list(csv.DictReader(handle))
    summary = json.loads(Path(cfg.output_dir, "summary.json").read_text())
    for group in summary["groups"]:
        values = [
            float(r["value"])
            for r in sorted(rows, key=lambda r: int(r["seed"]))
            if r["method"] == group["method"] and r["weights"] == group["weights"]
        ]
        assert group["values"] == pytest.approx(values)
        n = len(values)
        mean = sum(values) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = sps.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
        assert group["mean"] == pytest.approx(mean)
        assert group["std"] == pytest.approx(sd)
        assert group["ci95"] == pytest.approx([mean - half, mean + half])
    report = Path(cfg.output_dir, "report.md").read_text()
    lp_random = next(g for g in summary["groups"] if g["method"] == "linear" and g["weights"] == "random")
    lo, hi = lp_random["ci95"]
    if lo != hi:  # identical seeds would give a zero-width interval, still printed
        assert f"[{lo:.3f}, {hi:.3f}]" in report


def test_resume_skips_done_cells_and_reruns_missing_ones(finished, bench_setup):
    cfg, _outcome, _ = finished
    cells, _ = expand(cfg)
    store = CellStore(cfg.output_dir)
    mtimes = {c.cell_id: store.record_path(c).stat().st_mtime_ns for c in cells}
    lines: list[str] = []
    again = run_benchmark(_config(bench_setup, "matrix"), progress=lines.append)
    assert again["counts"] == {"total": 8, "skipped": 8, "ok": 0, "failed": 0}
    assert {c.cell_id: store.record_path(c).stat().st_mtime_ns for c in cells} == mtimes
    removed = next(c for c in cells if c.method == "linear")
    store.record_path(removed).unlink()
    third = run_benchmark(_config(bench_setup, "matrix"), progress=lines.append)
    assert third["counts"] == {"total": 8, "skipped": 7, "ok": 1, "failed": 0}
    assert store.load(removed)["status"] == "ok"


def test_failed_cell_is_recorded_and_the_rest_continues(bench_setup):
    broken = bench_setup["root"] / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    cfg = _config(
        bench_setup,
        "failing",
        methods=[MethodSpec("linear"), MethodSpec("vpt-deep", overrides=["backbone=resnet18"])],  # VPT needs a ViT
        weights=[WeightSpec("random", "random"), WeightSpec("broken", str(broken))],
        seeds=[0],
        reference_weights="",
    )
    outcome = run_benchmark(cfg, progress=lambda _line: None)
    assert outcome["counts"]["ok"] == 1 and outcome["counts"]["failed"] == 3
    store = CellStore(cfg.output_dir)
    records = {c.cell_id: store.load(c) for c in expand(cfg)[0]}
    assert records["tissue__linear__random__s0"]["status"] == "ok"
    unknown = records["tissue__vpt-deep__random__s0"]
    assert unknown["status"] == "failed" and "ViT" in unknown["error"]
    assert records["tissue__linear__broken__s0"]["status"] == "failed"
    report = Path(cfg.output_dir, "report.md").read_text()
    assert "## Failed cells" in report and "tissue__vpt-deep__random__s0" in report
    assert "Traceback" in unknown["traceback"]
    # resume: done cells are skipped; failed ones are retried unless retry_failed=false
    cfg.retry_failed = False
    again = run_benchmark(cfg, progress=lambda _line: None)
    assert again["counts"] == {"total": 4, "skipped": 4, "ok": 0, "failed": 0}


def test_an_unknown_method_key_stops_the_benchmark_before_anything_is_written(bench_setup):
    cfg = _config(bench_setup, "typo", methods=[MethodSpec("linear"), MethodSpec("vpt-deeep")], seeds=[0])
    with pytest.raises(ValueError, match="unknown method 'vpt-deeep'"):
        run_benchmark(cfg, progress=lambda _line: None)
    assert not Path(cfg.output_dir).exists()
