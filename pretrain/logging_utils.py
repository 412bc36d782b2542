"""Run logging: a CSV of metrics (readable without any service), the ``log_with`` trackers, window averages.

``metrics.csv`` is always written by :class:`MetricsCSV`. Everything else goes through Accelerate's trackers
(``Accelerator(log_with=...)``, ``accelerator.log``): ``tensorboard``, ``mlflow`` and ``wandb`` are Accelerate's own;
``jsonl`` is :class:`JsonlTracker`, one JSON object per logged step in ``metrics.jsonl`` (the format lightly-train
and many dashboards read line by line). On resume every logger drops what the lost steps had written: the CSV and the
JSONL rows after the resumed step, and TensorBoard's events through ``SummaryWriter(purge_step=...)``.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker


class MetricsCSV:
    """Appends metric rows to ``metrics.csv``; on resume, rows after the resumed step are dropped first.

    New keys appearing later widen the header (the file is rewritten, which is cheap for metric logs).
    """

    def __init__(self, path: str | Path, resume_step: int = 0) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, str]] = []
        if self.path.is_file() and resume_step > 0:
            with self.path.open(newline="") as fh:
                self.rows = [r for r in csv.DictReader(fh) if int(float(r["step"])) <= resume_step]
        self._rewrite()

    def _fields(self) -> list[str]:
        keys: dict[str, None] = {"step": None}
        for row in self.rows:
            keys.update(dict.fromkeys(row))
        return list(keys)

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".csv.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self._fields())
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.path)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": str(step), **{k: f"{v:.6g}" for k, v in metrics.items()}}
        widen = any(k not in self._fields() for k in row)
        self.rows.append(row)
        if widen:
            self._rewrite()
            return
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self._fields()).writerow(row)


class WindowMeter:
    """Means of finite metric values and image throughput over the steps since the last ``flush``."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.images = 0
        self.seconds = 0.0
        self._t0 = time.perf_counter()

    def start_step(self) -> None:
        self._t0 = time.perf_counter()

    def end_step(self, images: int, info: dict[str, float]) -> None:
        self.seconds += time.perf_counter() - self._t0
        self.images += images
        for key, value in info.items():
            if math.isfinite(value):
                self.sums[key] = self.sums.get(key, 0.0) + value
                self.counts[key] = self.counts.get(key, 0) + 1

    def flush(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums}
        out["images_per_s"] = self.images / self.seconds if self.seconds > 0 else 0.0
        self.__init__()
        return out


class JsonlTracker(GeneralTracker):
    """Accelerate tracker writing ``{"step": s, "time": unix seconds, "<metric>": value, ...}`` lines to a file.

    Non-finite values are written as ``null`` (strict JSON has no NaN). The first ``log`` call of a run rewrites the
    file keeping only the rows before its step (atomically), so a resumed run continues without duplicate steps and
    a fresh run in an old directory starts a fresh file; a line cut by a crash is dropped then too.
    """

    name = "jsonl"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._started = False

    @property
    def tracker(self) -> Path:
        return self.path

    def store_init_configuration(self, values: dict) -> None:
        """Nothing: the resolved config is ``config.yaml`` beside the file."""

    def _keep_rows_before(self, step: int) -> None:
        kept = []
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] < step:
                    kept.append(line)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        tmp.replace(self.path)

    def log(self, values: dict, step: int | None = None, **kwargs: Any) -> None:
        if not self._started:
            self._keep_rows_before(step if step is not None else 0)
            self._started = True
        row: dict[str, Any] = {"step": step, "time": round(time.time(), 3)}
        for key, value in values.items():
            value = float(value) if isinstance(value, int | float) or hasattr(value, "item") else value
            row[key] = value if not isinstance(value, float) or math.isfinite(value) else None
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")


def build_trackers(names: list[str], out: Path) -> list[str | GeneralTracker] | None:
    """``Accelerator(log_with=...)`` for the configured loggers (names checked by the config); None for none."""
    trackers: list[str | GeneralTracker] = [JsonlTracker(out / "metrics.jsonl") if n == "jsonl" else n for n in names]
    return trackers or None


def start_trackers(accelerator: Any, names: list[str], config: dict[str, Any], resumed_step: int = 0) -> None:
    """``accelerator.init_trackers("pretrain", config)``; after a resume TensorBoard purges the lost steps' events."""
    if not names:
        return
    init_kwargs = {"tensorboard": {"purge_step": resumed_step + 1}} if resumed_step > 0 else {}
    accelerator.init_trackers("pretrain", config=config, init_kwargs=init_kwargs)
