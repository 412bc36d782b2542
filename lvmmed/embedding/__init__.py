"""Embeddings of a shard set or an image folder for given weights: ``python -m lvmmed embed`` (``lvmmed embed``).

Like lightly-train's ``embed`` command (https://docs.lightly.ai/train/stable/embed.html): pooled backbone features
(``Backbone.forward``) of every image, written as ``embeddings.npy`` + an index with the sample keys, labels,
dataset and center (:mod:`lvmmed.embedding.store`), optionally a 2-D map (:mod:`lvmmed.embedding.plot`).

Inputs are prepared as downstream prepares them (:mod:`downstream.inputs`, whose rules
:func:`lvmmed.weight_sources.input_settings` shares): resized to the weights' ``img_size`` (Pillow bilinear,
antialiased when shrinking, :func:`lvmmed.data.processing.resize`), matched to their input channels (grey
replicated to 3; colour to BT.601 luma for 1), normalised with their mean/std (an export's ``config.json``; ImageNet
statistics for published and general weights). ``img_size`` may be overridden (e.g. the published ViT-B's native
1024 px is slow on a CPU). The model runs in eval mode under ``torch.inference_mode`` in float32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lvmmed import __version__
from lvmmed.data.channels import match_channels, to_chw
from lvmmed.data.processing import resize
from lvmmed.data.shards import sha256_file
from lvmmed.embedding.plot import plot_map
from lvmmed.embedding.sources import Item, open_sources
from lvmmed.embedding.store import EmbeddingStore, read_csv, write_json
from lvmmed.errors import InputError, UsageError
from lvmmed.weight_sources import WEIGHTS_NAME, input_settings, resolve_source
from lvmmed.weights import load_backbone

__all__ = ["embed", "prepare_batch"]


def prepare_batch(images: list[np.ndarray], in_chans: int, img_size: int, mean, std) -> torch.Tensor:
    """[0, 1] (H, W[, C]) images to a normalised (B, in_chans, img_size, img_size) float32 batch."""
    x = torch.stack([match_channels(to_chw(resize(np.asarray(im, np.float32), img_size)), in_chans) for im in images])
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    if m.shape[1] not in (1, in_chans):
        m, s = m.mean(1, keepdim=True), s.mean(1, keepdim=True)
    return (x - m) / s


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _Chunks:
    """Fills chunk after chunk with items; runs the model per batch only for chunks not done yet."""

    def __init__(self, store: EmbeddingStore, model: torch.nn.Module, spec: dict, batch_size: int, device) -> None:
        self.store, self.model, self.spec, self.batch_size, self.device = store, model, spec, batch_size, device
        self.index: int | None = None
        self.rows: list[dict[str, str]] = []
        self.features: list[np.ndarray] = []
        self.pending: list[np.ndarray] = []
        self.computed = 0

    def _forward(self) -> None:
        if not self.pending:
            return
        x = prepare_batch(self.pending, self.spec["in_chans"], self.spec["img_size"], self.spec["mean"],
                          self.spec["std"]).to(self.device)  # fmt: skip
        with torch.inference_mode():
            self.features.append(self.model(x).float().cpu().numpy())
        self.computed += len(self.pending)
        self.pending = []

    def add(self, chunk: int, item: Item) -> None:
        if chunk != self.index:
            self.close()
            self.index, self.rows, self.features = chunk, [], []
        self.rows.append(item.columns)
        if not self.store.done(chunk):
            self.pending.append(item.image)
            if len(self.pending) == self.batch_size:
                self._forward()

    def close(self) -> None:
        if self.index is None:
            return
        if self.store.done(self.index):
            self.store.check_chunk(self.index, [row["key"] for row in self.rows])
        else:
            self._forward()
            self.store.write_chunk(self.index, np.concatenate(self.features), self.rows)
        self.index = None


def _fingerprint(weights: str, resolved, model, spec: dict, sources, chunk_size: int) -> dict[str, Any]:
    file = resolved.path / WEIGHTS_NAME if resolved.path.is_dir() else resolved.path
    return {
        "weights": weights, "weights_sha256": sha256_file(file), "architecture": model.name,
        "inputs": [{"location": s.location, "kind": s.kind, **{k: list(v) if isinstance(v, tuple) else v
                                                               for k, v in s.options.items()}} for s in sources],
        "input": spec, "chunk_size": chunk_size, "lvmmed_version": __version__,
    }  # fmt: skip


def embed(
    weights: str,
    data: list[str],
    out: str | os.PathLike,
    splits: list[str] | None = None,
    batch_size: int = 64,
    chunk_size: int = 2048,
    device: str = "auto",
    img_size: int | None = None,
    axes: tuple[int, ...] = (2,),
    slice_step: int = 1,
    plot: bool = False,
    plot_method: str = "auto",
    color_by: tuple[str, ...] = ("label", "dataset", "center"),
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Embeds every image of ``data`` with ``weights`` into ``out`` (resumable); returns the run summary.

    Raises:
        WeightsNotFoundError, WeightLoadError: The weights are missing or unusable.
        FileNotFoundError, ShardFormatError: An input is missing or unreadable.
        UsageError: ``out`` holds another run's outputs (without ``overwrite``).
        InputError: No image could be read, or the inputs changed under a resumed run.
    """
    from tqdm.auto import tqdm

    if batch_size < 1 or chunk_size < 1:
        raise UsageError(f"--batch-size and --chunk-size must be >= 1, got {batch_size} and {chunk_size}")
    resolved = resolve_source(weights)
    settings = input_settings(resolved)
    model = load_backbone(weights, img_size=img_size or settings.img_size).eval()
    target = _device(device)
    model.to(target)
    size = int(img_size or settings.img_size or model.img_size)
    mean, std = list(settings.mean or (0.5,)), list(settings.std or (0.5,))
    spec = {"in_chans": model.in_chans, "img_size": size, "mean": mean, "std": std, "origin": settings.origin}
    sources = open_sources(list(data), splits, tuple(axes), slice_step)
    store = EmbeddingStore(out, _fingerprint(weights, resolved, model, spec, sources, chunk_size), overwrite)
    if store.complete and not overwrite:
        summary = {**store.state, "out": str(store.out), "resumed": "already complete"}
    else:
        totals = [s.total for s in sources]
        chunks = _Chunks(store, model, spec, batch_size, target)
        bar = tqdm(total=sum(totals) if None not in totals else None, desc="embed", unit="img", disable=not progress)
        count = 0
        try:
            for source in sources:
                for item in source.items():
                    chunks.add(count // chunk_size, item)
                    count += 1
                    bar.update(1)
            chunks.close()
        finally:
            bar.close()
        failures = [f for s in sources for f in s.failures]
        if failures:
            write_json(store.out / "failures.json", {"failures": failures})
        if count == 0:
            raise InputError(f"no readable image in {', '.join(data)} ({len(failures)} file(s) failed)",
                             fix="check the inputs (failures.json lists what failed)")  # fmt: skip
        state = store.finalize(-(-count // chunk_size), {"failures": len(failures), "computed_now": chunks.computed})
        summary = {**state, "out": str(store.out)}
    if plot:
        features = np.load(store.out / "embeddings.npy", mmap_mode="r")
        rows = read_csv(store.out / "index.csv")
        summary["plot"] = plot_map(features, rows, store.out / "map.png", tuple(color_by), plot_method,
                                   title=f"{Path(os.fspath(weights)).name}")  # fmt: skip
    return summary
