"""bench/summary.py keeps the quick flag, load averages and met flags of every result file, at any depth."""

from __future__ import annotations

import json
from pathlib import Path

from bench import summary
from bench._common import BenchRun
from lvmmed.markers import read_block

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"

# An older layout: flags nested under setup/machine, met flags under targets_met and targets.<name>.met.
LEGACY = {
    "setup": {"steps": 4, "quick": True},
    "ratios": {"a_over_b": 1.1},
    "targets": {"a_over_b": 0.85, "latency": {"target": 100.0, "measured": 120.0, "met": False}},
    "targets_met": {"a_over_b": True},
    "machine": {"cpus": 2, "load_avg_before": [9.5, 8.0, 7.0], "load_avg_after": [11.0, 9.0, 7.5]},
}


def test_readers_find_nested_flags_of_older_files():
    assert summary.find_quick(LEGACY) is True
    assert summary.find_load(LEGACY) == ([9.5, 8.0, 7.0], [11.0, 9.0, 7.5])
    assert summary.find_met(LEGACY) == {"latency": False, "a_over_b": True}
    assert summary.describe_targets(LEGACY) == {"a_over_b": "1.1 ≥ 0.85", "latency": "120 ≤ 100"}


def test_readers_on_the_common_schema():
    run = BenchRun("x", quick=False)
    run.target("speedup", 3.0, ">=", 2.0)
    data = run.finish({"ratios": {"speedup": 3.0}}, None)
    assert summary.find_quick(data) is False
    start, end = summary.find_load(data)
    assert start == data["load_average"]["start"] and end == data["load_average"]["end"]
    assert summary.find_met(data) == {"speedup": True}
    data["load_average"] = {"start": [0.5, 0.5, 0.5], "end": [1.0, 1.0, 1.0]}
    data["machine"]["cpu_count"] = 2
    assert not summary.overloaded(data)
    data["load_average"]["end"] = [2.5, 1.0, 1.0]
    assert summary.overloaded(data)


def test_table_is_written_between_markers_and_is_stable(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "legacy.json").write_text(json.dumps(LEGACY))
    (results / "broken.json").write_text("{not json")
    body = summary.build_table(results)
    assert "| legacy | quick | 9.5 → 11 ⚠ above the core count | 1/2 |" in body
    assert "| broken | unreadable (JSONDecodeError) | | |" in body
    assert "| legacy | target `latency` | 120 ≤ 100 ✗ missed |" in body
    assert "| legacy | **ratios.a_over_b** | **1.1** |" in body
    readme = tmp_path / "README.md"
    readme.write_text("# B\n\nhand-written intro\n\n<!-- bench-summary:start -->\nold\n<!-- bench-summary:end -->\n")
    assert summary.main(["--results", str(results), "--out", str(readme)]) == 0
    text = readme.read_text()
    assert "hand-written intro" in text and "old\n" not in text and body in text
    assert summary.write_readme(readme, body) is False  # no clock in the block: same results, same bytes
    plain = tmp_path / "PLAIN.md"
    plain.write_text("# Mine\n\nno markers yet\n")
    assert summary.write_readme(plain, body) and plain.read_text().startswith("# Mine\n\nno markers yet\n\n<!--")
    assert read_block(plain, summary.BLOCK) == body


def test_every_committed_result_records_quick_load_and_met_flags():
    files = sorted(RESULTS.glob("*.json"))
    assert files
    for path in files:
        data = json.loads(path.read_text())
        start, end = summary.find_load(data)
        assert summary.find_quick(data) is not None, f"{path.name}: no quick/full flag"
        assert start and end, f"{path.name}: load average at start and end not recorded"


def test_committed_readme_table_is_current():
    readme = RESULTS.parent / "README.md"
    body = summary.build_table(RESULTS)
    assert read_block(readme, summary.BLOCK) == body, "bench/README.md is stale: run `python bench/summary.py`"
