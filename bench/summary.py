"""Collects ``bench/results/*.json`` into the tables of ``bench/README.md`` (``make bench`` runs it after the benches).

Every benchmark writes ``bench/results/<name>.json`` with its figures, machine info, the load average at start and
end, the quick/full flag, targets with ``met`` flags, and ratios against a baseline measured in the same run
(``bench/_common.py``). Older files keep these under other names and deeper (``setup.quick``,
``machine.loadavg_after``, ``targets_met``, ``targets.<name>.met``); the readers below find them at any depth, so no
flag of a nested result is lost. Per file the README shows:

* one status row: full or quick run, load average (1 min) at start → end (⚠ when above the CPU count: the
  figures then measure the load as much as the code), targets met;
* the targets (value, threshold, met ✓/✗), then the ratios in bold (every numeric leaf whose dotted key contains
  ``ratio``, ``_over_`` or ``_vs_``), then the other numeric figures, flattened to dotted keys.

The tables are written between ``<!-- bench-summary:start -->`` and ``<!-- bench-summary:end -->`` with
:func:`lvmmed.markers.write_block`, so hand-written text around them survives. The output depends only on the
result files (no clock), so re-running it on unchanged results changes nothing.

Usage: ``python bench/summary.py [--results bench/results] [--out bench/README.md] [--max-rows 12]``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lvmmed.markers import write_block

BLOCK = "bench-summary"
HEADER = f"""# Benchmarks

`make bench` runs every `bench/*.py` (each writes `bench/results/<name>.json`; `--quick` variants finish in under
a minute and back no claim), then `bench/summary.py`, which rewrites the tables below, and `bench/docs.py`, which
rewrites the figures quoted in `docs/`. Ratios compare against a baseline measured in the same run on the same
machine, so they transfer across machines better than absolute times.

<!-- {BLOCK}:start -->
<!-- {BLOCK}:end -->
"""
# Keys whose subtrees are metadata or shown in the status row, not figures.
SKIP_KEYS = {"machine", "config", "argv", "command", "timestamp", "created", "date", "version", "versions"}
SKIP_KEYS |= {"load_average", "targets", "met", "targets_met", "quick"}
RATIO_MARKERS = ("ratio", "_over_", "_vs_")


def walk(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every leaf of nested dicts as ``(path, value)`` (lists are leaves)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, (*path, str(key)))
    else:
        yield path, value


def find_quick(data: dict) -> bool | None:
    """The quick flag: top level first, else the first boolean ``quick`` at any depth; None when absent."""
    if isinstance(data.get("quick"), bool):
        return data["quick"]
    return next((v for p, v in walk(data) if p and p[-1] == "quick" and isinstance(v, bool)), None)


def _is_load(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(isinstance(x, (int, float)) for x in value)


def find_load(data: dict) -> tuple[list[float] | None, list[float] | None]:
    """Load average ``(start, end)``: ``load_average.start/end``, else any ``*load*`` triple at any depth.

    A key that contains ``after`` or ``end`` is the end; any other (``before``, ``start``, plain ``loadavg``) the start.
    """
    start = end = None
    for path, value in walk(data):
        if not path or "load" not in "".join(path).lower() or not _is_load(value):
            continue
        if any(word in path[-1].lower() for word in ("after", "end")):
            end = end or value
        else:
            start = start or value
    return start, end


def find_met(data: dict) -> dict[str, bool]:
    """Every met flag at any depth as ``{target name: met}``.

    Recognised: ``met: {name: bool}``, ``targets_met: {name: bool}`` and ``targets: {name: {..., "met": bool}}``.
    """
    found: dict[str, bool] = {}
    for path, value in walk(data):
        if not isinstance(value, bool):
            continue
        if path[-1] == "met" and len(path) > 1:
            found.setdefault(path[-2], value)
        elif any(part in ("met", "targets_met") for part in path[:-1]):
            found.setdefault(path[-1], value)
    return found


def overloaded(data: dict) -> bool:
    """True when the 1-minute load average at start or end exceeded the machine's CPU count (shared machine)."""
    machine = data.get("machine") if isinstance(data.get("machine"), dict) else {}
    cores = machine.get("cpu_count", machine.get("cpus"))
    loads = [x[0] for x in find_load(data) if x]
    return isinstance(cores, int) and any(load > cores for load in loads)


def describe_targets(data: dict) -> dict[str, str]:
    """``{name: "value op threshold"}`` for the targets whose value and threshold the file holds."""
    out: dict[str, str] = {}
    ratios = data.get("ratios") if isinstance(data.get("ratios"), dict) else {}
    targets = data.get("targets") if isinstance(data.get("targets"), dict) else {}
    for name, spec in targets.items():
        if isinstance(spec, dict):
            value, threshold = spec.get("value", spec.get("measured")), spec.get("threshold", spec.get("target"))
            op = spec.get("op")
            if op is None and isinstance(value, (int, float)) and isinstance(threshold, (int, float)):
                op = ">=" if (value >= threshold) == bool(spec.get("met")) else "<="  # older files name no op
        else:
            value, threshold, op = ratios.get(name), spec, "≥"
        op = {">=": "≥", "<=": "≤"}.get(op, op)
        if isinstance(value, (int, float)) and isinstance(threshold, (int, float)):
            out[name] = f"{fmt(value)} {op} {fmt(threshold)}"
    return out


def flatten(value: Any, prefix: str = "", depth: int = 3) -> dict[str, float]:
    """Numeric leaves of nested dicts as ``{"a.b.c": x}`` (lists, strings, booleans and ``SKIP_KEYS`` skipped)."""
    out: dict[str, float] = {}
    if isinstance(value, dict) and depth > 0:
        for key, item in value.items():
            if str(key) in SKIP_KEYS:
                continue
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key), depth - 1))
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
        out[prefix] = float(value)
    return out


def fmt(x: float) -> str:
    if x == int(x) and abs(x) < 1e9:
        return str(int(x))
    return f"{x:.4g}"


def _machine(data: dict) -> str:
    machine = data.get("machine")
    if not isinstance(machine, dict):
        return ""
    keys = ("processor", "cpu_count", "cpus", "torch", "torch_threads", "threads", "python")
    return ", ".join(f"{k}={machine[k]}" for k in keys if k in machine)


def status_row(name: str, data: dict) -> str:
    """``| benchmark | run | load average (1 min) start → end | targets met |``."""
    quick = find_quick(data)
    run = {True: "quick", False: "full", None: "not recorded"}[quick]
    if isinstance(data.get("timestamp"), str):
        run += f", {data['timestamp']}"
    start, end = find_load(data)
    load = " → ".join(fmt(round(x[0], 2)) if x else "?" for x in (start, end)) if start or end else "not recorded"
    if overloaded(data):
        load += " ⚠ above the core count"
    met = find_met(data)
    met_text = f"{sum(met.values())}/{len(met)}" if met else "no targets"
    return f"| {name} | {run} | {load} | {met_text} |"


def figure_rows(name: str, data: dict, max_rows: int) -> list[str]:
    """Target rows (✓/✗), bold ratio rows, then the other figures, cut after ``max_rows`` figure rows."""
    described = describe_targets(data)
    rows = [
        f"| {name} | target `{target}` | {described.get(target, '')} {'✓ met' if met else '✗ missed'} |"
        for target, met in find_met(data).items()
    ]
    flat = flatten(data)
    ratios = {k: v for k, v in flat.items() if any(m in k for m in RATIO_MARKERS)}
    figures = [f"| {name} | **{k}** | **{fmt(v)}** |" for k, v in ratios.items()]
    figures += [f"| {name} | {k} | {fmt(v)} |" for k, v in flat.items() if k not in ratios]
    hidden = len(figures) - max_rows
    rows += figures[:max_rows]
    if hidden > 0:
        rows.append(f"| {name} | … {hidden} more in `bench/results/{name}.json` | |")
    return rows


def load_result(path: Path) -> dict | str:
    """The parsed JSON object, or a one-line reason why it cannot be read."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return f"unreadable ({type(err).__name__})"
    return data if isinstance(data, dict) else "not a JSON object"


def build_table(results_dir: Path, max_rows: int = 12) -> str:
    """The Markdown between the markers for every ``*.json`` in ``results_dir``."""
    files = sorted(results_dir.glob("*.json"))
    lines = [f"_Generated by `python bench/summary.py` from {len(files)} file(s) in `bench/results/`._", ""]
    if not files:
        return "\n".join([*lines, "No results yet: run `make bench` (or `python bench/<name>.py --quick`)."])
    status = ["| benchmark | run | load average (1 min) start → end | targets met |", "|---|---|---|---|"]
    figures = ["| benchmark | figure | value |", "|---|---|---|"]
    machines = []
    for path in files:
        data = load_result(path)
        if isinstance(data, str):
            status.append(f"| {path.stem} | {data} | | |")
            continue
        status.append(status_row(path.stem, data))
        figures += figure_rows(path.stem, data, max_rows)
        if machine := _machine(data):
            machines.append(f"{path.stem}: {machine}")
    lines += [*status, "", *figures]
    if machines:
        lines += ["", "Machines: " + "; ".join(machines)]
    return "\n".join(lines)


def write_readme(readme: Path, body: str) -> bool:
    """Writes ``body`` into the summary block of ``readme``.

    A missing file is created with a header; a file without the markers gets them appended after its own text.
    """
    if not readme.is_file():
        readme.write_text(HEADER)
    elif f"<!-- {BLOCK}:start -->" not in (text := readme.read_text()):
        readme.write_text(text.rstrip("\n") + f"\n\n<!-- {BLOCK}:start -->\n<!-- {BLOCK}:end -->\n")
    return write_block(readme, BLOCK, body)


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=here / "results")
    parser.add_argument("--out", type=Path, default=here / "README.md")
    parser.add_argument("--max-rows", type=int, default=12)
    args = parser.parse_args(argv)
    body = build_table(args.results, args.max_rows)
    changed = write_readme(args.out, body)
    print(f"bench summary: {args.out} ({'updated' if changed else 'unchanged'}, {body.count(chr(10)) + 1} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
