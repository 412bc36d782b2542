"""bench/docs.py: the benchmark figures quoted in docs/ are generated blocks, current with bench/results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import docs

REPO = Path(__file__).resolve().parents[2]


def test_doc_blocks_match_the_committed_results():
    for page, block, body in docs.render_all(REPO / "bench" / "results"):
        current = docs.read_block(REPO / page, block)
        assert current == body.strip("\n"), f"{page} [{block}] is stale: run `python bench/docs.py`"


def _copy_results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    shutil.copytree(REPO / "bench" / "results", results)
    return results


def test_gm_loss_block_reads_whatever_sizes_exist(tmp_path):
    results = _copy_results(tmp_path)
    data = json.loads((results / "gm_loss.json").read_text())
    largest = max(data["results"]["factorized"], key=int)
    for table in ("factorized", "pygmtools_dense", "hungarian_first_order", "ntxent"):
        data["results"][table].pop(largest)
    data["solver_breakdown"].pop(largest)
    (results / "gm_loss.json").write_text(json.dumps(data))
    body = docs.gm_loss_block(docs.Result(results / "gm_loss.json"))
    assert f"| {largest} |" not in body
    assert body.count("\n| 32 |") == 2  # timings and breakdown tables


def test_missing_figure_fails_naming_the_key_and_the_bench(tmp_path, capsys):
    results = _copy_results(tmp_path)
    data = json.loads((results / "gm_loss.json").read_text())
    del data["results"]["ntxent"]
    (results / "gm_loss.json").write_text(json.dumps(data))
    with pytest.raises(docs.FigureError, match=r"missing key 'results\.ntxent\.32\.median_ms'.*bench/gm_loss\.py"):
        docs.render_all(results)
    (results / "pretrain.json").unlink()
    assert docs.main(["--results", str(results), "--root", str(tmp_path)]) == 1
    assert "bench/gm_loss.py" in capsys.readouterr().err


def test_quick_run_is_flagged_in_the_block(tmp_path):
    results = _copy_results(tmp_path)
    data = json.loads((results / "data_prep.json").read_text())
    data["quick"] = True
    (results / "data_prep.json").write_text(json.dumps(data))
    body = docs.data_prep_block(docs.Result(results / "data_prep.json"))
    assert "`--quick` run" in body and "backs no claim" in body
