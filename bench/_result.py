"""One benchmark result file as the doc blocks read it: :class:`Result`, and :class:`FigureError` when a quoted
figure is missing (used by ``bench/docs.py`` and its block helpers, e.g. ``bench/_gm_docs.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.summary import describe_targets, find_load, find_met, find_quick, fmt, overloaded


class FigureError(RuntimeError):
    """A figure that a doc block quotes is missing from its result file."""


class Result:
    """One ``bench/results/<name>.json`` with key lookups that fail with a clear message."""

    def __init__(self, path: Path) -> None:
        self.path, self.bench = path, path.stem
        try:
            self.data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FigureError(f"{path} is missing: run `python bench/{self.bench}.py`") from None
        except (OSError, json.JSONDecodeError) as err:
            raise FigureError(f"{path} cannot be read ({err}): re-run `python bench/{self.bench}.py`") from None

    def get(self, dotted: str) -> Any:
        value: Any = self.data
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                raise FigureError(
                    f"{self.path}: missing key '{dotted}' (quoted in docs): re-run `python bench/{self.bench}.py` "
                    "or update bench/docs.py to the file's keys"
                )
            value = value[part]
        return value

    def num(self, dotted: str) -> float:
        value = self.get(dotted)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise FigureError(f"{self.path}: '{dotted}' is {value!r}, not a number")
        return float(value)

    def conditions(self) -> str:
        """``full run (…Z), load average 1.2 → 1.4 (1 min, start → end)`` or the quick-run warning."""
        quick = find_quick(self.data)
        when = f" ({self.data['timestamp']})" if isinstance(self.data.get("timestamp"), str) else ""
        start, end = find_load(self.data)
        load = " → ".join(fmt(round(x[0], 2)) if x else "?" for x in (start, end))
        text = {True: "`--quick` run", False: "full run", None: "run (quick/full not recorded)"}[quick]
        text += f"{when}, load average {load} (1 min, start → end)"
        return text + ("; above the core count, so the figures measure the load too" if overloaded(self.data) else "")

    def caveat(self) -> list[str]:
        """A paragraph that warns about a quick run (empty for a full run)."""
        if find_quick(self.data) is False:
            return []
        return ["", f"**A quick run backs no claim**: run `python bench/{self.bench}.py` (full) before quoting these."]

    def targets_table(self) -> list[str]:
        met, described = find_met(self.data), describe_targets(self.data)
        if not met:
            raise FigureError(f"{self.path}: no met flags (targets) recorded: re-run `python bench/{self.bench}.py`")
        rows = ["| target | measured vs target | met? |", "|---|---|---|"]
        rows += [f"| `{k}` | {described.get(k, 'see JSON')} | {'yes' if ok else '**no**'} |" for k, ok in met.items()]
        return rows
