"""What every benchmark records, in one place: machine, load average at start and end, quick/full, targets + met.

A bench script opens a :class:`BenchRun` before it measures anything and calls :meth:`BenchRun.finish` with its
figures at the end::

    run = BenchRun("pretrain", quick=args.quick)
    ...  # measure, including a baseline in the same run
    run.target("full_gm_over_backbone", ratio, ">=", 0.85)
    run.finish({"results": ..., "ratios": ...}, args.out)

The JSON then holds, besides the script's own figures, the keys that ``bench/summary.py`` and ``bench/docs.py``
read the same way for every benchmark:

* ``benchmark``, ``quick`` (``true`` for ``--quick``: a smoke run whose figures back no claim), ``seconds``;
* ``load_average``: ``{"start": [1, 5, 15 min], "end": [...]}`` (the machine may be shared: a high or rising
  load means the figures measure the load, not the code);
* ``targets``: ``{name: {"value", "op", "threshold", "met"}}`` and ``met``: ``{name: bool}``;
* ``machine``: platform, Python, CPU count, torch version and intra-op threads.
"""

from __future__ import annotations

import json
import math
import operator
import os
import platform
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded to 2 decimals."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    """Platform, Python, CPU count, and torch's version and intra-op threads when torch is importable."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        import torch
    except ImportError:
        return info
    info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info


class BenchRun:
    """One benchmark run: records the load average now, collects targets, writes the JSON at the end."""

    def __init__(self, name: str, quick: bool) -> None:
        self.name, self.quick = name, bool(quick)
        self.load_start = load_average()
        self.started = time.perf_counter()
        self.targets: dict[str, dict[str, Any]] = {}

    def target(self, name: str, value: float, op: str, threshold: float) -> bool:
        """Records target ``name`` (``value op threshold``, e.g. ``ratio >= 0.85``) and returns whether it is met.

        A non-finite value never meets its target.
        """
        if op not in OPS:
            raise ValueError(f"target {name!r}: op must be one of {sorted(OPS)}, got {op!r}")
        value = float(value)
        met = math.isfinite(value) and bool(OPS[op](value, threshold))
        self.targets[name] = {"value": value, "op": op, "threshold": threshold, "met": met}
        return met

    def finish(self, figures: dict[str, Any], out: str | os.PathLike[str] | None) -> dict[str, Any]:
        """Adds the common keys to ``figures``; writes the JSON atomically to ``out`` (skipped when None)."""
        reserved = {"benchmark", "quick", "targets", "met", "load_average", "machine", "seconds"} & set(figures)
        if reserved:
            raise ValueError(f"figures may not use the common keys {sorted(reserved)}")
        result = {
            "benchmark": self.name,
            "quick": self.quick,
            **figures,
            "targets": self.targets,
            "met": {name: t["met"] for name, t in self.targets.items()},
            "load_average": {"start": self.load_start, "end": load_average()},
            "machine": machine_info(),
            "seconds": round(time.perf_counter() - self.started, 1),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if out is not None:
            path = Path(out)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(result, indent=1) + "\n")
            os.replace(tmp, path)
        return result
