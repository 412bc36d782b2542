"""Run logging: a CSV of metrics (readable without any service), window averages and throughput."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path


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
