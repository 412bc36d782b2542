"""``python -m downstream.segmentation --config configs/downstream/seg_tissue.yaml [key=value ...]``.

One run per seed in ``seeds`` (``seed=<n>`` or ``--single`` runs one), each in ``<output_dir>/seed<n>``, then
``summary.json`` with mean ± std over seeds. ``--eval DIR`` reloads a finished run's delta and re-evaluates it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from downstream.segmentation.config import SegmentationConfig
from downstream.segmentation.run import flat_metrics, reevaluate, run_segmentation
from lvmmed.config import parse_args
from lvmmed.stats import mean_std


def main(argv: list[str] | None = None) -> int:
    """Runs one cell per seed in ``seeds`` (or just ``seed`` when ``--single``) and prints a one-line summary each."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--eval"] and len(args) == 2:
        print(json.dumps(flat_metrics(reevaluate(args[1])), indent=1))
        return 0
    # As `python -m downstream`: seed=<n> on the command line (or --single) runs that seed only.
    single = "--single" in args or any(a.startswith("seed=") for a in args)
    args = [a for a in args if a != "--single"]
    cfg = parse_args(SegmentationConfig, args)
    seeds = [cfg.seed] if single else list(cfg.seeds)
    base_dir = cfg.output_dir
    all_ok = True
    per_seed: list[dict] = []
    for seed in seeds:
        cfg.seed = seed
        cfg.output_dir = base_dir if single else f"{base_dir}/seed{seed}"
        res = run_segmentation(cfg)
        brief = {k: res.get(k) for k in ("task", "method", "protocol", "weights_name", "seed", "output_dir")}
        brief.update(status=res["status"], error=res["error"], metrics=res.get("metrics"))
        if "table" in res:
            brief["table"] = res["table"]
        print(json.dumps(brief, default=str))
        all_ok &= res["status"] == "ok"
        per_seed.append(res.get("metrics") or {})
    if len(seeds) > 1:
        keys = sorted({k for m in per_seed for k in m})
        agg = {k: mean_std([m.get(k) for m in per_seed if m.get(k) is not None]) for k in keys}
        summary = {"seeds": seeds, "mean_std": {k: list(v) for k, v in agg.items()}}
        Path(base_dir, "summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary))
    return 0 if all_ok else 1


if __name__ == "__main__":
    from lvmmed.errors import run_cli

    raise SystemExit(run_cli(main, prog="python -m downstream.segmentation"))
