"""Collects ``bench/results/*.json`` into one summary table in ``bench/README.md`` (``make bench`` runs it last).

Every benchmark script writes ``bench/results/<name>.json`` with its figures, machine info and ratios against a
baseline measured in the same run (CONTRIBUTING.md). The schema beyond that is each script's own, so this
collector is deliberately generic: it shows the ratios first, in bold (every numeric leaf whose dotted key contains
``ratio`` or ``_over_``, e.g. GM-loss step time / NT-Xent step time), then the other numeric figures, flattened to
dotted keys, and the machine line. The
table is written between two markers so hand-written text around it survives.

Usage: ``python bench/summary.py [--results bench/results] [--out bench/README.md] [--max-rows 12]``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

START, END = "<!-- bench-summary:start -->", "<!-- bench-summary:end -->"
HEADER = """# Benchmarks

`make bench` runs every `bench/*.py` (each writes `bench/results/<name>.json`; `--quick` variants finish in under
a minute) and then `bench/summary.py`, which rewrites the table below. Ratios compare against a baseline measured
in the same run on the same machine, so they transfer across machines better than absolute times.
"""
SKIP_KEYS = {"machine", "config", "argv", "command", "timestamp", "created", "date", "version", "versions"}


def flatten(value: Any, prefix: str = "", depth: int = 3) -> dict[str, float]:
    """Numeric leaves of nested dicts as ``{"a.b.c": x}`` (lists, strings and booleans skipped)."""
    out: dict[str, float] = {}
    if isinstance(value, dict) and depth > 0:
        for key, item in value.items():
            if str(key) in SKIP_KEYS:
                continue
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key), depth - 1))
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
        out[prefix] = float(value)
    return out


def _fmt(x: float) -> str:
    if x == int(x) and abs(x) < 1e9:
        return str(int(x))
    return f"{x:.4g}"


def _machine(data: dict) -> str:
    machine = data.get("machine")
    if not isinstance(machine, dict):
        return ""
    keys = ("cpu", "processor", "cpu_count", "cores", "torch", "device", "python")
    return ", ".join(f"{k}={machine[k]}" for k in keys if k in machine)


def summarize_file(path: Path, max_rows: int) -> tuple[list[str], str]:
    """Table rows ``| benchmark | figure | value |`` of one results file, and its machine line."""
    name = path.stem
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return [f"| {name} | unreadable ({type(err).__name__}) | |"], ""
    if not isinstance(data, dict):
        return [f"| {name} | not a JSON object | |"], ""
    flat = flatten(data)
    ratios = {k: v for k, v in flat.items() if "ratio" in k or "_over_" in k}
    figures = {k: v for k, v in flat.items() if k not in ratios}
    rows = [f"| {name} | **{k}** | **{_fmt(v)}** |" for k, v in ratios.items()]
    rows += [f"| {name} | {k} | {_fmt(v)} |" for k, v in figures.items()]
    hidden = len(rows) - max_rows
    rows = rows[:max_rows]
    if hidden > 0:
        rows.append(f"| {name} | … {hidden} more in `bench/results/{path.name}` | |")
    if data.get("quick"):
        rows[0] = rows[0].replace(f"| {name} |", f"| {name} (quick) |", 1)
    return rows, _machine(data)


def build_table(results_dir: Path, max_rows: int = 12) -> str:
    """The markdown block (between the markers) for every ``*.json`` in ``results_dir``."""
    files = sorted(results_dir.glob("*.json"))
    lines = [START, f"_Updated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from {len(files)} file(s)._", ""]
    if not files:
        lines += ["No results yet: run `make bench` (or `python bench/<name>.py --quick`).", END]
        return "\n".join(lines)
    lines += ["| benchmark | figure | value |", "|---|---|---|"]
    machines = {}
    for path in files:
        rows, machine = summarize_file(path, max_rows)
        lines += rows
        if machine:
            machines[path.stem] = machine
    if machines:
        lines += ["", "Machines: " + "; ".join(f"{k}: {v}" for k, v in machines.items())]
    lines.append(END)
    return "\n".join(lines)


def write_readme(readme: Path, block: str) -> Path:
    """Replaces the marked block in ``readme`` (or appends it; creates the file with a header if missing)."""
    text = readme.read_text() if readme.is_file() else HEADER
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(readme)
    return readme


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=here / "results")
    parser.add_argument("--out", type=Path, default=here / "README.md")
    parser.add_argument("--max-rows", type=int, default=12)
    args = parser.parse_args(argv)
    block = build_table(args.results, args.max_rows)
    path = write_readme(args.out, block)
    print(f"bench summary: {path} ({block.count(chr(10)) + 1} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
