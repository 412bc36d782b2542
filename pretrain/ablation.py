"""``python -m pretrain.ablation --config configs/ablation/cpu.yaml [key=value ...]``: a pretraining ablation.

For every variant × pretraining seed (a *cell*) the harness runs ``python -m pretrain`` (the shared base config and
overrides + the variant's, ``seed=<s>``), then evaluates the export with ``python -m downstream`` on every
``evals`` entry (``seed=<s>``, so the comparison is paired over pretraining seeds). Both stages run as
subprocesses: ``pretrain`` never imports ``downstream``. Every finished step is recorded in
``<output_dir>/cells/*.json`` and skipped on a rerun (resumable; an interrupted pretraining resumes from its
last checkpoint). At the end ``pretrain.ablation_report`` writes ``results.json``, ``report.md`` and, when
``report`` is set, the ``ablation`` block of that Markdown file (``lvmmed.markers.write_block``).

Exit codes: 0 all cells ok, 1 some cell failed (the report says which), 2 bad config.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvmmed.config import ConfigError, load_config, save_config
from pretrain.ablation_config import AblationConfig, EvalSpec, VariantSpec, resolved_max_steps
from pretrain.ablation_report import write_reports

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Cell:
    """One (variant, pretraining seed)."""

    variant: VariantSpec
    seed: int

    @property
    def id(self) -> str:
        return f"{self.variant.name}__seed{self.seed}"


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    tmp.replace(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Harness:
    """Runs the cells of an :class:`AblationConfig` (see the module docstring)."""

    def __init__(self, cfg: AblationConfig, log=print):
        self.cfg, self.log = cfg, log
        self.out = Path(cfg.output_dir)
        self.cells = [Cell(v, s) for s in cfg.seeds for v in cfg.variants]

    # ---- paths and records -------------------------------------------------------------------------------------
    def pretrain_dir(self, cell: Cell) -> Path:
        return self.out / "pretrain" / cell.variant.name / f"seed{cell.seed}"

    def record_path(self, cell: Cell, stage: str) -> Path:
        return self.out / "cells" / f"{cell.id}__{stage.replace('/', '__')}.json"

    def done(self, cell: Cell, stage: str) -> dict[str, Any] | None:
        record = _read_json(self.record_path(cell, stage))
        return record if record and record.get("status") == "ok" else None

    # ---- subprocesses ------------------------------------------------------------------------------------------
    def _run(self, args: list[str], log_path: Path) -> int:
        env = {**os.environ, "OMP_NUM_THREADS": str(self.cfg.threads_per_worker), "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as handle:
            handle.write("$ python " + shlex.join(args) + "\n")
            handle.flush()
            return subprocess.run(
                [sys.executable, *args], cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT
            ).returncode

    def pretrain(self, cell: Cell) -> dict[str, Any]:
        stage = "pretrain"
        if (record := self.done(cell, stage)) is not None:
            return record
        start = time.perf_counter()
        if cell.variant.source == "random":
            record = {"status": "ok", "weights": "random", "seconds": 0.0}
        else:
            run_dir = self.pretrain_dir(cell)
            args = ["-m", "pretrain", "--config", self.cfg.pretrain_config, *self.cfg.pretrain_overrides,
                    *cell.variant.overrides, f"output_dir={run_dir}", f"seed={cell.seed}", "resume=auto"]  # fmt: skip
            code = self._run(args, run_dir.parent / f"seed{cell.seed}.log")
            export = run_dir / "export"
            ok = code == 0 and (export / "model.safetensors").is_file()
            record = {
                "status": "ok" if ok else "failed",
                "weights": str(export),
                "exit_code": code,
                "seconds": time.perf_counter() - start,
                "train": last_metrics(run_dir / "metrics.csv"),
            }
            if not ok:
                record["error"] = f"python -m pretrain exited {code}; log {run_dir.parent / f'seed{cell.seed}.log'}"
        _atomic_json(self.record_path(cell, stage), record)
        return record

    def evaluate(self, cell: Cell, spec: EvalSpec, weights: str) -> dict[str, Any]:
        if (record := self.done(cell, spec.key)) is not None:
            return record
        start = time.perf_counter()
        out_dir = self.out / "eval" / cell.variant.name / f"seed{cell.seed}" / spec.task / spec.method
        args = ["-m", "downstream", "--config", spec.config, f"method={spec.method}", f"weights={weights}",
                f"weights_name={cell.variant.name}", f"data_root={self.cfg.data_root}", f"output_dir={out_dir}",
                *self.cfg.downstream_overrides, *spec.overrides, f"seed={cell.seed}"]  # fmt: skip
        code = self._run(args, out_dir / "run.log")
        result = next((r for p in sorted(out_dir.rglob("result.json")) if (r := _read_json(p))), None)
        ok = code == 0 and result is not None and result.get("status") == "ok"
        record = {
            "status": "ok" if ok else "failed",
            "seconds": time.perf_counter() - start,
            "metrics": (result or {}).get("metrics"),
            "n_test": (result or {}).get("n_test"),
            "error": "" if ok else ((result or {}).get("error") or f"exit {code}; log {out_dir / 'run.log'}"),
        }
        _atomic_json(self.record_path(cell, spec.key), record)
        return record

    def run_cell(self, cell: Cell) -> bool:
        pre = self.pretrain(cell)
        if pre["status"] != "ok":
            self.log(f"  {cell.id}: pretraining failed ({pre.get('error')})")
            return False
        ok = True
        for spec in self.cfg.evals:
            rec = self.evaluate(cell, spec, pre["weights"])
            ok &= rec["status"] == "ok"
            acc = (rec.get("metrics") or {}).get("accuracy")
            self.log(f"  {cell.id} {spec.key}: " + (f"acc {acc:.3f}" if acc is not None else rec["error"]))
        return ok

    # ---- planning ------------------------------------------------------------------------------------------------
    def pending(self) -> tuple[int, int]:
        """(pretraining runs, evaluations) still to do."""
        pre = sum(1 for c in self.cells if c.variant.source != "random" and not self.done(c, "pretrain"))
        evals = sum(1 for c in self.cells for e in self.cfg.evals if not self.done(c, e.key))
        return pre, evals

    def estimate_seconds(self, steps: dict[str, int]) -> float:
        """Wall time of what is pending on an idle machine, from each variant's step budget (``steps``) and
        ``seconds_per_step`` / ``seconds_per_eval``."""
        pre = [c for c in self.cells if c.variant.source != "random" and not self.done(c, "pretrain")]
        evals = sum(1 for c in self.cells for e in self.cfg.evals if not self.done(c, e.key))
        work = sum(steps[c.variant.name] * self.cfg.seconds_per_step + 15 for c in pre)
        work += evals * self.cfg.seconds_per_eval
        return work / min(self.cfg.workers, max(1, len(self.cells)))

    def prepare_data(self) -> None:
        """Builds the bundled shard sets under ``data_root`` when ``bundled_profile`` is set (idempotent)."""
        if not self.cfg.bundled_profile:
            return
        args = ["-m", "data_prep", "bundled", "--out", self.cfg.data_root, "--profile", self.cfg.bundled_profile,
                "--workers", str(self.cfg.workers), "--quiet"]  # fmt: skip
        code = self._run(args, self.out / "data_prep.log")
        if code != 0:
            raise RuntimeError(f"python -m data_prep bundled failed (exit {code}); log {self.out / 'data_prep.log'}")

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.out / "config.yaml")
        self.prepare_data()
        failed = 0
        with ThreadPoolExecutor(self.cfg.workers) as pool:
            for ok in pool.map(self.run_cell, self.cells):
                failed += not ok
        return failed


def last_metrics(csv_path: Path) -> dict[str, float]:
    """The last logged row of a pretraining ``metrics.csv`` (``{}`` if there is none)."""
    try:
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return {}
    out = {}
    for key, value in (rows[-1] if rows else {}).items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m pretrain.ablation", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="ablation YAML (configs/ablation/*.yaml)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from finished cells")
    parser.add_argument("--estimate", action="store_true", help="print the time estimate and exit")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the ablation config")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(AblationConfig, args.config, args.overrides)
        steps = resolved_max_steps(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"python -m pretrain.ablation: error: {err}", file=sys.stderr)
        return 2
    command = cfg.command or "python -m pretrain.ablation " + shlex.join(argv)
    harness = Harness(cfg)
    pre, evals = harness.pending()
    estimate = harness.estimate_seconds(steps)
    budgets = "/".join(str(n) for n in sorted(set(steps.values()))) or "no"
    print(
        f"ablation {cfg.name!r}: {len(cfg.variants)} variants × {len(cfg.seeds)} seeds, {len(cfg.evals)} evals each; "
        f"pending {pre} pretraining runs ({budgets} steps) and {evals} evaluations; estimate {estimate / 60:.0f} min "
        f"on an idle 2-core machine ({cfg.workers} workers)",
        flush=True,
    )
    if args.estimate:
        return 0
    if args.report_only and not any(harness.done(c, "pretrain") for c in harness.cells):
        print(
            f"python -m pretrain.ablation: error: no finished cells under {cfg.output_dir}; nothing to report, and "
            f"{cfg.report or 'no report'} is left as it is — run the command without --report-only first",
            file=sys.stderr,
        )
        return 1
    try:
        failed = 0 if args.report_only else harness.run()
    except RuntimeError as err:
        print(f"python -m pretrain.ablation: error: {err}", file=sys.stderr)
        return 1
    paths = write_reports(cfg, harness, command)
    print(f"report: {paths['report']}" + (f" and {cfg.report}" if cfg.report else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
