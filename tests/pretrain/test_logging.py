"""The ``jsonl`` tracker: one JSON line per logged step, strict JSON, and lost steps dropped on resume."""

from __future__ import annotations

import json

from pretrain.logging_utils import JsonlTracker, build_trackers


def _steps(path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_jsonl_rows_are_strict_json_and_a_resumed_run_replaces_the_lost_steps(tmp_path):
    path = tmp_path / "metrics.jsonl"
    first = JsonlTracker(path)
    for step in range(1, 6):
        first.log({"loss": 1.0 / step, "grad_norm": float("nan") if step == 2 else 2.0}, step=step)
    with path.open("a") as fh:
        fh.write('{"step": 6, "loss"')  # a line cut by a crash
    row = json.loads(path.read_text().splitlines()[1])
    assert row == {"step": 2, "time": row["time"], "loss": 0.5, "grad_norm": None}
    assert "NaN" not in path.read_text()  # strict JSON: non-finite values are null

    resumed = JsonlTracker(path)  # resumed from the step-3 checkpoint: steps 4, 5 and the cut line were lost
    resumed.log({"loss": 0.2}, step=4)
    assert _steps(path) == [1, 2, 3, 4]

    fresh = JsonlTracker(path)  # a new run in the same directory starts a new file
    fresh.log({"loss": 0.9}, step=1)
    assert _steps(path) == [1]


def test_build_trackers_maps_names_to_accelerate_log_with(tmp_path):
    trackers = build_trackers(["tensorboard", "jsonl"], tmp_path)
    assert trackers[0] == "tensorboard" and isinstance(trackers[1], JsonlTracker)
    assert trackers[1].path == tmp_path / "metrics.jsonl"
    assert build_trackers([], tmp_path) is None
