"""Resumable, chunked embedding outputs.

Layout of ``--out``:

* ``embed_config.json``: what the run embeds (weights and their hash, inputs, input settings, chunk size) and its
  state (``complete``); a second run with another configuration into the same folder is refused (exit 2).
* ``chunks/{c:06d}.npy`` + ``chunks/{c:06d}.csv``: items ``c * chunk_size`` up to the next chunk. Each file is
  written to a temporary name and renamed; the ``.csv`` is written last and marks the chunk as done. A resumed run
  skips done chunks (their keys are checked against the items read again, so changed inputs are an error).
* ``embeddings.npy`` (N, D) float32 and ``index.csv`` (``row`` + :data:`~lvmmed.embedding.sources.COLUMNS`), plus
  ``index.parquet`` when pyarrow is installed: written at the end from the chunks (atomically), after which the
  chunks are removed and ``complete`` is set.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from lvmmed.embedding.sources import COLUMNS
from lvmmed.errors import InputError, UsageError

CONFIG_NAME, EMBEDDINGS_NAME, INDEX_NAME, PARQUET_NAME = (
    "embed_config.json", "embeddings.npy", "index.csv", "index.parquet"
)  # fmt: skip


def _atomic(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = _atomic(path)
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def write_csv(path: Path, rows: list[dict[str, str]], fields: tuple[str, ...]) -> None:
    tmp = _atomic(path)
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows({k: row.get(k, "") for k in fields} for row in rows)
    tmp.replace(path)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


class EmbeddingStore:
    """The output folder of one ``embed`` run (see the module docstring).

    Args:
        out: The folder.
        fingerprint: What the run embeds; must equal the stored one to resume.
        overwrite: Remove earlier outputs of any configuration first.
    """

    def __init__(self, out: str | Path, fingerprint: dict[str, Any], overwrite: bool = False) -> None:
        self.out = Path(out)
        self.chunks = self.out / "chunks"
        self.fingerprint = fingerprint
        config_path = self.out / CONFIG_NAME
        if overwrite:
            for name in (CONFIG_NAME, EMBEDDINGS_NAME, INDEX_NAME, PARQUET_NAME, "failures.json"):
                (self.out / name).unlink(missing_ok=True)
            shutil.rmtree(self.chunks, ignore_errors=True)
        self.state: dict[str, Any] = {"complete": False}
        if config_path.is_file():
            stored = json.loads(config_path.read_text())
            if stored.get("fingerprint") != fingerprint:
                changed = sorted(k for k in set(fingerprint) | set(stored.get("fingerprint", {}))
                                 if stored.get("fingerprint", {}).get(k) != fingerprint.get(k))  # fmt: skip
                raise UsageError(
                    f"{self.out} holds embeddings of another configuration (differs in {', '.join(changed)})",
                    fix="use a new --out, or --overwrite to replace them",
                )
            self.state = stored.get("state", self.state)
        elif self.out.exists() and any(self.out.iterdir()):
            raise UsageError(f"{self.out} is not empty and holds no {CONFIG_NAME}", fix="use a new or empty --out")
        self.chunks.mkdir(parents=True, exist_ok=True)
        self._save_config()

    @property
    def complete(self) -> bool:
        return bool(self.state.get("complete")) and (self.out / EMBEDDINGS_NAME).is_file()

    def _save_config(self) -> None:
        write_json(self.out / CONFIG_NAME, {"fingerprint": self.fingerprint, "state": self.state})

    def _chunk(self, index: int, suffix: str) -> Path:
        return self.chunks / f"{index:06d}{suffix}"

    def done(self, index: int) -> bool:
        return self._chunk(index, ".csv").is_file() and self._chunk(index, ".npy").is_file()

    def check_chunk(self, index: int, keys: list[str]) -> None:
        """A done chunk must hold the keys that the inputs give again; else the inputs changed since."""
        stored = [row["key"] for row in read_csv(self._chunk(index, ".csv"))]
        if stored != keys:
            raise InputError(
                f"chunk {index} in {self.chunks} was written for other samples than the inputs give now "
                f"(e.g. {stored[:1]} vs {keys[:1]}, {len(stored)} vs {len(keys)} items): the inputs changed",
                fix="use a new --out, or --overwrite to embed again",
            )

    def write_chunk(self, index: int, embeddings: np.ndarray, rows: list[dict[str, str]]) -> None:
        npy = self._chunk(index, ".npy")
        tmp = _atomic(npy)
        with tmp.open("wb") as fh:
            np.save(fh, np.ascontiguousarray(embeddings, dtype=np.float32), allow_pickle=False)
        tmp.replace(npy)
        write_csv(self._chunk(index, ".csv"), rows, COLUMNS)  # last: marks the chunk as done

    def finalize(self, num_chunks: int, extra_state: dict[str, Any]) -> dict[str, Any]:
        """Concatenates the chunks into ``embeddings.npy`` + ``index.csv`` (+ parquet), then removes the chunks."""
        parts = [np.load(self._chunk(c, ".npy"), mmap_mode="r") for c in range(num_chunks)]
        rows = [row for c in range(num_chunks) for row in read_csv(self._chunk(c, ".csv"))]
        total = sum(p.shape[0] for p in parts)
        dim = parts[0].shape[1] if parts else 0
        target = self.out / EMBEDDINGS_NAME
        tmp = _atomic(target)
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, dim))
        start = 0
        for part in parts:
            array[start : start + part.shape[0]] = part
            start += part.shape[0]
        array.flush()
        del array
        tmp.replace(target)
        rows = [{"row": str(i), **row} for i, row in enumerate(rows)]
        write_csv(self.out / INDEX_NAME, rows, ("row", *COLUMNS))
        parquet = write_parquet(self.out / PARQUET_NAME, rows)
        self.state = {"complete": True, "items": total, "dim": dim, "parquet": parquet, **extra_state}
        self._save_config()
        shutil.rmtree(self.chunks, ignore_errors=True)
        return self.state


def write_parquet(path: Path, rows: list[dict[str, str]]) -> bool:
    """``index.parquet`` beside the CSV when pyarrow is installed; returns whether it was written."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    fields = ("row", *COLUMNS)
    table = pa.table({k: [int(r["row"]) for r in rows] if k == "row" else [r.get(k, "") for r in rows]
                      for k in fields})  # fmt: skip
    tmp = _atomic(path)
    pq.write_table(table, tmp)
    tmp.replace(path)
    return True
