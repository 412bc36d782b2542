"""bench/summary.py: collects bench/results/*.json into the marked table of bench/README.md."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SUMMARY = Path(__file__).resolve().parents[2] / "bench" / "summary.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_summary", SUMMARY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_table_replaces_only_the_marked_block(tmp_path):
    summary = _module()
    results = tmp_path / "results"
    results.mkdir()
    (results / "gm_loss.json").write_text(
        json.dumps(
            {
                "quick": True,
                "machine": {"cpu_count": 2},
                "ratios": {"gm_over_ntxent": 3.25},
                "figures": {"gm_step_s": 0.13, "flag": True, "series": [1, 2]},
            }
        )
    )
    (results / "broken.json").write_text("{not json")
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nHand-written intro.\n")
    assert summary.main(["--results", str(results), "--out", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written intro.")
    assert "| gm_loss (quick) | **ratios.gm_over_ntxent** | **3.25** |" in text
    assert "| gm_loss | figures.gm_step_s | 0.13 |" in text
    assert "flag" not in text and "series" not in text  # booleans and lists are not figures
    assert "| broken | unreadable (JSONDecodeError) | |" in text
    (results / "broken.json").unlink()
    summary.main(["--results", str(results), "--out", str(readme)])
    again = readme.read_text()
    assert again.count(summary.START) == 1 and "broken" not in again and "Hand-written intro." in again
