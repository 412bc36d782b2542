"""The shared bench record: load average at start and end, quick flag, targets with met flags, atomic JSON."""

from __future__ import annotations

import json
import math

import pytest

from bench._common import BenchRun


def test_targets_record_value_threshold_and_met(tmp_path):
    run = BenchRun("demo_bench", quick=True)
    assert run.target("ratio", 1.2, ">=", 0.85) is True
    assert run.target("latency_ms", 120.0, "<=", 100.0) is False
    assert run.target("broken", math.nan, ">=", 0.0) is False
    with pytest.raises(ValueError, match="op must be one of"):
        run.target("x", 1.0, "=>", 1.0)
    out = tmp_path / "results" / "demo_bench.json"
    result = run.finish({"ratios": {"ratio": 1.2}}, out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["benchmark"] == "demo_bench" and result["quick"] is True
    assert result["met"] == {"ratio": True, "latency_ms": False, "broken": False}
    assert result["targets"]["latency_ms"] == {"value": 120.0, "op": "<=", "threshold": 100.0, "met": False}
    assert [len(result["load_average"][k]) for k in ("start", "end")] == [3, 3]
    assert result["machine"]["cpu_count"] >= 1 and "torch" in result["machine"]
    assert not list(out.parent.glob(".*.tmp"))


def test_figures_may_not_shadow_the_common_keys():
    with pytest.raises(ValueError, match="common keys"):
        BenchRun("b", quick=False).finish({"quick": False}, None)
