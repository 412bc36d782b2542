"""The downstream step of ``make demo``: pretrained weights vs random init on the tissue task.

``demo.run`` (the ``make demo`` orchestrator) calls :func:`run_demo_downstream` and prints
:func:`format_table`. Each cell is one :func:`downstream.run.run_experiment` with
``configs/downstream/demo.yaml`` (small budget: minutes on 2 CPU cores) plus the caller's overrides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from downstream.config import DownstreamConfig
from downstream.run import run_experiment
from lvmmed.config import load_config
from lvmmed.stats import mean_std

DEMO_METHODS = ("linear", "vp-pad", "movl", "vpt-deep")
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "downstream" / "demo.yaml"


def run_demo_downstream(
    shards_root: str | Path,
    weights: dict[str, str],
    output_dir: str | Path,
    backbone: str = "vit_tiny",
    in_chans: int = 1,
    img_size: int = 32,
    methods: Sequence[str] = DEMO_METHODS,
    seeds: Sequence[int] = (0,),
    task: str = "tissue",
    overrides: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Runs every (method, weights, seed) cell; returns the result dicts of :func:`run_experiment`.

    Args:
        shards_root: Directory holding the bundled shard sets (``mni152``, optionally ``colin27``).
        weights: ``{name: source}``, e.g. ``{"random": "random", "ours": "runs/demo/pretrain/export"}``.
        output_dir: Parent of the per-cell run directories.
        backbone / in_chans / img_size: Must match the pretrained export.
        methods: Registry keys (default: linear, vp-pad, movl, vpt-deep; vpt needs a ViT).
        seeds: Seeds per cell.
        task: Task name.
        overrides: Extra ``key=value`` overrides applied to every cell.
    """
    base = load_config(
        DownstreamConfig,
        DEMO_CONFIG if DEMO_CONFIG.is_file() else None,
        [f"data_root={shards_root}", f"backbone={backbone}", f"in_chans={in_chans}", f"img_size={img_size}",
         f"task={task}", *overrides],
    )  # fmt: skip
    results = []
    for method in methods:
        for name, source in weights.items():
            for seed in seeds:
                out = Path(output_dir) / task / method / name / f"seed{seed}"
                cfg = dataclasses.replace(
                    base, method=method, weights=source, weights_name=name, seed=seed, output_dir=str(out)
                )
                results.append(run_experiment(cfg))
    return results


def format_table(results: Sequence[dict[str, Any]], metric: str = "balanced_accuracy") -> str:
    """Markdown table: one row per method, one column per weight source, ``mean ± std`` over seeds (+ params)."""
    methods = list(dict.fromkeys(r["method"] for r in results))
    weights = list(dict.fromkeys(r["weights_name"] for r in results))
    lines = [f"| method ({metric}) | " + " | ".join(weights) + " | trainable params |",
             "|---" * (len(weights) + 2) + "|"]  # fmt: skip
    for m in methods:
        cells, params = [], ""
        for w in weights:
            runs = [r for r in results if r["method"] == m and r["weights_name"] == w]
            ok = [r for r in runs if r["status"] == "ok"]
            if not ok:
                cells.append("failed" if runs else "")
                continue
            mean, std = mean_std([r["metrics"][metric] for r in ok])
            ood = [r["ood"]["metrics"][metric] for r in ok if r.get("ood")]
            extra = f" (OOD {mean_std(ood)[0]:.3f})" if ood else ""
            cells.append(f"{mean:.3f} ± {std:.3f}{extra}")
            p = ok[0]["params"]
            params = f"{p['trainable']:,} ({p['trainable_pct']:.2f}%)"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {params} |")
    return "\n".join(lines)
