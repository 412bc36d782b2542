"""The pretraining step of ``make demo``: train the tiny config on bundled shards, plot curves, export weights.

    python -m pretrain.demo --shards runs/demo/shards --out runs/demo/pretrain [--loss ntxent] [--max-steps 100]

Returns/prints the paths of the run directory, the exported weights and the loss/matching-accuracy PNG. Call
:func:`run_demo` from Python to get them as a dict (it resets Accelerate's process-global state afterwards, so
it can run twice in one process, e.g. GM and NT-Xent with equal steps).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from accelerate.state import AcceleratorState, GradientState

from pretrain.__main__ import main as train
from pretrain.plot import plot_metrics


def run_demo(
    shards: str | Path,
    out_dir: str | Path,
    loss: str = "graph_matching",
    max_steps: int | None = None,
    config: str | Path = "configs/pretrain/tiny_cpu.yaml",
    extra: list[str] | None = None,
) -> dict:
    """Runs ``python -m pretrain`` in-process on the tiny config and plots its curves."""
    out = Path(out_dir)
    argv = [
        "--config",
        str(config),
        f"output_dir={out}",
        f"data.shards=[{shards}]",
        f"loss.name={loss}",
        "resume=auto",
        *([f"max_steps={max_steps}"] if max_steps else []),
        *(extra or []),
    ]
    try:
        result = train(argv)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    png = plot_metrics(out / "metrics.csv", out / "curves.png", title=f"tiny_cpu pretraining ({loss})")
    return {
        "run_dir": str(out),
        "export": result["export"],
        "curves": str(png),
        "steps": result["step"],
        "checkpoint": result["checkpoint"],
        "last": result["last_info"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pretrain.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--shards", required=True, help="shard-set directory or parent of several")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--loss", default="graph_matching", help="graph_matching | ntxent | vicreg | byol")
    parser.add_argument("--max-steps", type=int, default=None, help="step budget (default: the config's)")
    parser.add_argument("--config", default="configs/pretrain/tiny_cpu.yaml")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides")
    args = parser.parse_args(argv)
    print(json.dumps(run_demo(args.shards, args.out, args.loss, args.max_steps, args.config, args.overrides), indent=1))


if __name__ == "__main__":
    main()
