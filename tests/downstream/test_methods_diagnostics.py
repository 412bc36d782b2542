"""Method diagnostics of the benchmark report: flags, chosen hyper-parameters and curve PNGs from cell records."""

from __future__ import annotations

from downstream.benchmark import diagnostics


def record(method: str, seed: int, flags: dict, best: dict) -> dict:
    curve = [
        {"step": 0, "train_loss": None, "val": 0.40},
        {"step": 20, "train_loss": 1.2, "val": 0.45},
        {"step": 40, "train_loss": float("nan"), "val": None},
    ]
    tuning = {
        "metric": "balanced_accuracy",
        "initial_val": 0.40,
        "chosen": "c0",
        "chosen_val": 0.45,
        "chance_val": 0.25,
        "candidates": [{"name": "c0", "curve": curve}, {"name": "c1", "curve": curve[:2]}],
    }
    return {
        "status": "ok",
        "cell": {"task": "region", "method": method, "weights": "random", "seed": seed},
        "result": {"metrics": {"accuracy": 0.5}, "tuning": tuning, "flags": flags, "best_hparams": best},
    }


def test_section_lists_flags_hparams_and_writes_one_png_per_task_method(tmp_path):
    records = [
        record("movl", 0, {"val_at_chance": False, "diverged": [], "collapsed": []}, {"initial": True}),
        record(
            "movl",
            1,
            {"val_at_chance": True, "diverged": ["c1"], "collapsed": []},
            {"lr": 0.5, "lr_base": 4.0, "movl.weight": 0.1, "step": 20},
        ),
        {
            "status": "ok",
            "cell": {"task": "region", "method": "linear", "weights": "random", "seed": 0},
            "result": {"metrics": {"accuracy": 0.4}, "best_hparams": {"C": 1.0}},
        },
    ]
    lines, figures = diagnostics.section(records, tmp_path, "accuracy")
    text = "\n".join(lines)
    assert "| region | movl | random | 0 | 0.500 | 0.450 | 0.400 | initial state | – |" in text
    assert "lr=0.5 movl.weight=0.1 @20" in text and "chance, diverged (1 cand.)" in text
    assert "| C=1 |" in text and "Flagged cells: 1 of 3." in text
    assert [p.name for _, p in figures] == ["curves_region_movl.png"] and figures[0][1].stat().st_size > 1000


def test_val_transfer_pairs_each_val_gain_with_the_test_gain_over_the_probe():
    def cell(method: str, seed: int, test: float, initial: float, chosen_val: float, chosen: str) -> dict:
        tuning = {"initial_val": initial, "chosen_val": chosen_val, "chosen": chosen}
        return {
            "status": "ok",
            "cell": {"task": "region", "method": method, "weights": "random", "seed": seed},
            "result": {"metrics": {"accuracy": test}, "tuning": tuning},
        }

    probe = [cell("linear", s, 0.5, 0.0, 0.0, "") for s in range(3)]
    trained = [
        cell("movl", 0, 0.40, 0.30, 0.50, "c0"),  # val +0.20, test -0.10
        cell("movl", 1, 0.45, 0.30, 0.40, "c1"),  # val +0.10, test -0.05
        cell("movl", 2, 0.55, 0.30, 0.35, "c0"),  # val +0.05, test +0.05
        cell("vpt-deep", 0, 0.60, 0.30, 0.30, "initial"),  # kept its starting point: not counted
    ]
    lines = diagnostics.val_transfer(probe + trained, "accuracy")
    row = next(line for line in lines if line.startswith("| region | movl |"))
    assert row == "| region | movl | 3 | +0.117 | -0.033 | 1/3 | -1.000 |"
    assert not any(line.startswith("| region | vpt-deep |") for line in lines)
    assert diagnostics.val_transfer(probe, "accuracy") == []
