"""``python -m downstream.benchmark --config configs/benchmark/<name>.yaml [key=value ...]``.

Runs the tasks × methods × weights × seeds matrix (resumable: finished cells are skipped) and writes
``report.md``, ``results.csv`` and the figures into ``output_dir``. ``--report-only`` rebuilds the report from the
stored cells without running anything. Exit status 1 when any cell failed (the report is written regardless).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from downstream.benchmark.api import run_benchmark
from downstream.benchmark.config import BenchmarkConfig
from downstream.benchmark.matrix import expand
from downstream.benchmark.report import write_report
from lvmmed.config import parse_args
from lvmmed.errors import run_cli


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    report_only = "--report-only" in args
    if report_only:
        args.remove("--report-only")
    cfg = parse_args(BenchmarkConfig, args, prog="python -m downstream.benchmark", description=__doc__)
    try:
        cells, skipped = expand(cfg)
    except ValueError as err:
        print(f"python -m downstream.benchmark: error: {err}", file=sys.stderr)
        return 2
    if report_only:
        print(f"report: {write_report(cfg, cells, skipped)['report']}")
        return 0
    outcome = run_benchmark(cfg, progress=lambda line: print(line, flush=True))
    return 1 if outcome["counts"]["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog="python -m downstream.benchmark"))
