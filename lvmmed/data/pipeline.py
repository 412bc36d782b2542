"""Streaming two-view training data from lvmmed shard sets (WebDataset), resumable exactly.

Stages per rank and DataLoader worker (webdataset building blocks)::

    ResampledShards(urls of set i, seeded)  ->  tarfile_to_samples  ->  shuffle(buffer, seeded rng)   (one per set)
      -> weighted mix of the sets (seeded)  ->  [skip to resume position]  ->  decode npy/json (no pickle)
      -> two augmented views (torch RNG seeded per sample)  ->  batches

* **Resampled, split by node and worker** (default). Shards are drawn with replacement (``resampled=True``
  semantics). When a set has at least ``world_size * num_workers`` shards each (rank, worker) resamples from its
  own disjoint part (``split_by_node``/``split_by_worker``); otherwise all resample from every shard with distinct
  seeds. ``webdataset.WebDataset(resampled=True)`` is not used because its shard resampler cannot be seeded.
  Epochs are sized from the manifest (``with_epoch`` semantics): ``ceil(N / (world * workers * batch))`` batches
  per worker, ``N`` the manifests' sample count of the selected splits.
* **Epoch mode** (``data.resampled=false``): every sample exactly once per epoch across all ranks and workers, at
  any number of shards (split by shard and by sample; see :mod:`lvmmed.data.split`, which also states how the last
  partial batch is padded). In both modes every rank yields the same number of batches, so DDP never waits on a
  short rank. The stream is endless; each epoch re-seeds it.
* **Remote shard sets** (``https://``, ``s3://``, ``gs://``, brace patterns, ``pipe:``; :mod:`lvmmed.data.remote`)
  stream through webdataset's URL handling, optionally through a local cache directory (``data.cache_dir``).
* **Exact resume.** Everything random is a function of ``(seed, epoch, rank, worker, sample index)``: shard
  draws, the shuffle buffer, the mixing and, per sample, the torch RNG of the augmentations. Every batch carries
  its worker, epoch and stream index, so :class:`StreamPosition` knows exactly where each worker stands. On resume
  a worker fast-forwards through *undecoded* raw samples (no decoding or augmentation) and the DataLoader's
  round-robin is rotated so the next batch comes from the right worker. Exact for any ``num_workers`` as long as
  it equals the value of the interrupted run (enforced).
* **Bad samples.** A :class:`SkipCounter` handler (webdataset ``warn_and_continue`` style) logs and counts
  unreadable tars, dropped connections (the rest of that shard is lost; the shard is named) and undecodable
  samples, and raises :class:`DataQualityError` once more than
  ``max_skip_fraction`` of the samples seen (and at least ``min_skips_to_fail``) were skipped.
* **Only the ``train`` split is read by default** (``splits``): val/test stay held out for downstream evaluation.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lvmmed.config import ConfigError
from lvmmed.data.augment import AugmentConfig, TwoViewTransform
from lvmmed.data.channels import to_chw
from lvmmed.data.remote import cache_name, check_cache_dir, describe_failure, require_backend
from lvmmed.data.shard_sets import DataConfig, DataQualityError, ShardSet, resolve_shard_sets
from lvmmed.data.shards import ShardFormatError, decode_sample
from lvmmed.data.split import epoch_batches, epoch_part_size, epoch_ranges, part_of, resampled_shards

log = logging.getLogger(__name__)

__all__ = [
    "DataConfig",
    "DataQualityError",
    "ShardSet",
    "SkipCounter",
    "StreamPosition",
    "TwoViewStream",
    "build_loader",
    "resolve_shard_sets",
    "stable_seed",
]


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from any printable parts, identical across processes and Python runs."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SkipCounter:
    """webdataset exception handler that logs, counts and finally refuses too many bad samples.

    Returns True (continue) like ``wds.warn_and_continue``, and raises :class:`DataQualityError` once
    ``skipped > max(min_skips, max_fraction * seen)``. ``shards`` counts failures per shard URL when the error
    names one (webdataset appends the URL to errors of unreadable or truncated tars and dropped connections).
    """

    def __init__(self, max_fraction: float, min_skips: int) -> None:
        self.max_fraction, self.min_skips = max_fraction, min_skips
        self.skipped = 0
        self.seen = 0
        self.last: list[str] = []
        self.shards: dict[str, int] = {}
        self._truncated_member = False

    def __call__(self, exn: BaseException) -> bool:
        shard = next(
            (a for a in reversed(getattr(exn, "args", ())) if isinstance(a, str) and _looks_like_shard(a)), None
        )
        # A truncated tar is reported twice by webdataset: by its member reader (message "... @ <stream>", no URL),
        # then by the shard expander with the URL. Count the event once, and name it with the second report.
        truncation = type(exn).__name__ == "ReadError"
        if truncation and shard is not None and self._truncated_member:
            self._truncated_member = False
            self.last = self.last[:-1]
        else:
            self._truncated_member = truncation and shard is None and " @ <" in str(exn)
            self.skipped += 1
        if shard is not None:
            self.shards[shard] = self.shards.get(shard, 0) + 1
        self.last = [*self.last[-4:], (f"[shard {shard}] " if shard else "") + repr(exn)[:300]]
        log.warning(
            "skipping bad sample or shard (%d so far)%s: %r", self.skipped, f" in {shard}" if shard else "", exn
        )
        if self.skipped > max(self.min_skips, self.max_fraction * max(self.seen, 1)):
            what = (
                f"{self.skipped} of {self.seen} samples were unreadable"
                if self.seen
                else f"{self.skipped} shard or sample reads failed before any sample could be read"
            )
            raise DataQualityError(
                f"{what} (limit {self.max_fraction:.1%}, min {self.min_skips}). Last errors: {self.last}"
            ) from exn
        return True


def _looks_like_shard(text: str) -> bool:
    return text.startswith("pipe:") or (text.endswith(".tar") and " " not in text)


class TwoViewStream(IterableDataset):
    """Endless stream of two-view batches for one rank (see the module docstring).

    Batches are dicts: ``view0``, ``view1`` (B, C, S, S) float32; ``index`` (B,) stream indices; ``worker``,
    ``epoch``, ``skipped``, ``seen`` and ``padded`` (ints, per worker; ``padded``: repeats topping up the last
    batch of an epoch-mode epoch).
    """

    def __init__(
        self,
        sets: list[ShardSet],
        data: DataConfig,
        augment: AugmentConfig,
        in_chans: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        self.sets, self.data, self.transform = sets, data, TwoViewTransform(augment, in_chans)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.num_workers = max(1, data.num_workers)
        self.total = sum(s.size for s in sets)
        parts = world_size * self.num_workers
        if data.resampled:
            n = data.epoch_samples or self.total
            self.batches_per_worker = max(1, math.ceil(n / (parts * data.batch_size)))
        else:
            self.batches_per_worker = epoch_batches(self.total, parts, data.batch_size)
        self.resume: dict[str, Any] | None = None  # set by StreamPosition.apply
        check_cache_dir(data.cache_dir)

    def _set_urls(self, s: ShardSet, worker: int) -> list[str]:
        return resampled_shards(s.urls, *part_of(self.rank, self.world_size, worker, self.num_workers))

    def _tar_samples(self, handler: SkipCounter) -> Any:
        """webdataset stage: shard URLs -> raw samples, through the file cache when ``data.cache_dir`` is set."""
        for s in self.sets:  # fsspec gopen handlers (s3://, gs://) in this worker process too
            require_backend(s.urls[0])
        if not self.data.cache_dir:
            return wds.tarfile_to_samples(handler=handler)
        cache = wds.cache.FileCache(cache_dir=self.data.cache_dir, url_to_name=cache_name)

        def cached(urls: Iterator[Any]) -> Iterator[dict[str, Any]]:
            """webdataset's FileCache fetch, but a failed shard is one named skip (curl already retried), instead of
            ten retries with growing sleeps that each count as an unnamed skip."""
            for item in urls:
                url = item["url"] if isinstance(item, dict) else item
                try:
                    path = cache.get_file(url)
                    stream = open(path, "rb")  # noqa: SIM115 - closed by webdataset's tar expander
                except Exception as exn:
                    for partial in Path(self.data.cache_dir).glob(cache_name(url) + ".temp*"):
                        partial.unlink(missing_ok=True)  # what a failed download leaves behind
                    handler(OSError(f"cannot fetch into data.cache_dir: {describe_failure(exn)}", url))
                    continue
                yield {"url": url, "stream": stream, "local_path": path}

        def stage(urls: Iterator[Any]) -> Iterator[dict[str, Any]]:
            yield from wds.tariterators.group_by_keys(
                wds.tariterators.tar_file_expander(cached(urls), handler), handler=handler
            )

        return stage

    def epoch_samples(self, epoch: int, worker: int, handler: SkipCounter) -> Iterator[dict[str, Any]]:
        """Epoch mode: the undecoded samples of this (rank, worker)'s slice of one epoch, each once, shuffled."""
        part, parts = part_of(self.rank, self.world_size, worker, self.num_workers)
        urls = [u for s in self.sets for u in s.urls]
        counts = [c for s in self.sets for c in s.counts]

        def ranges() -> Iterator[dict[str, Any]]:
            for shard, first, stop in epoch_ranges(counts, part, parts, self.seed, epoch):
                pipe = wds.DataPipeline(wds.SimpleShardList([urls[shard]]), self._tar_samples(handler))
                for i, sample in enumerate(pipe):
                    if i >= stop:
                        break
                    if i >= first:
                        yield sample

        rng = random.Random(stable_seed(self.seed, epoch, self.rank, worker, "shuffle"))
        yield from wds.filters.shuffle(self.data.shuffle_buffer, self.data.shuffle_initial, rng=rng)(ranges())

    def raw_samples(self, epoch: int, worker: int, handler: SkipCounter) -> Iterator[dict[str, Any]]:
        """Undecoded samples of one (epoch, worker) stream, endless.

        Resampled: seeded resampling, shuffling and mixing. Epoch mode: this worker's slice of the epoch, then
        (padding only) the slice again from its start.
        """
        if not self.data.resampled:
            while True:
                yield from self.epoch_samples(epoch, worker, handler)
        base = stable_seed(self.seed, epoch, self.rank, worker)
        streams = []
        for i, s in enumerate(self.sets):
            pipe = wds.DataPipeline(
                wds.ResampledShards(
                    self._set_urls(s, worker),
                    seed=stable_seed(base, i, "shards"),
                    worker_seed=lambda: 0,
                    deterministic=True,
                ),
                self._tar_samples(handler),
                wds.shuffle(
                    self.data.shuffle_buffer,
                    self.data.shuffle_initial,
                    rng=random.Random(stable_seed(base, i, "shuffle")),
                ),
            )
            streams.append(iter(pipe))
        mixer = random.Random(stable_seed(base, "mix"))
        weights = [s.weight for s in self.sets]
        while True:
            yield next(streams[mixer.choices(range(len(streams)), weights)[0]])

    def _two_views(self, raw: dict[str, Any], sample_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = decode_sample(raw)
        image = np.asarray(sample["image"], dtype=np.float32)
        if image.ndim not in (2, 3) or min(image.shape[:2]) < 8 or not np.isfinite(image).all():
            raise ShardFormatError(f"sample {sample['key']} in {sample['url']}: bad image {image.shape}")
        # Per-sample seed of the CPU generator (restored afterwards, so the caller's RNG stream is untouched), and
        # one intra-op thread: small per-image ops are ~20x slower when two threads contend (measured on 2 cores).
        generator, threads = torch.default_generator, torch.get_num_threads()
        state = generator.get_state()
        try:
            generator.manual_seed(sample_seed)
            torch.set_num_threads(1)
            return self.transform(to_chw(image))
        finally:
            generator.set_state(state)
            torch.set_num_threads(threads)

    def _worker_batches(
        self, worker: int, epoch: int, start: int, n_batches: int, handler: SkipCounter
    ) -> Iterator[dict[str, Any]]:
        base = stable_seed(self.seed, epoch, self.rank, worker)
        part, parts = part_of(self.rank, self.world_size, worker, self.num_workers)
        real = float("inf") if self.data.resampled else epoch_part_size(self.total, part, parts)
        views0, views1, indices = [], [], []
        for index, raw in enumerate(self.raw_samples(epoch, worker, handler)):
            if index < start:
                continue
            handler.seen += 1
            try:
                v0, v1 = self._two_views(raw, stable_seed(base, index))
            except Exception as exn:  # name the shard and sample in the skip report
                where = f"sample {raw.get('__key__', '?')} in {raw.get('__url__', '?')}"
                handler(exn if where in str(exn) else ShardFormatError(f"{where}: {type(exn).__name__}: {exn}"))
                continue
            views0.append(v0)
            views1.append(v1)
            indices.append(index)
            if len(indices) == self.data.batch_size:
                yield {
                    "view0": torch.stack(views0),
                    "view1": torch.stack(views1),
                    "index": torch.tensor(indices),
                    "worker": worker,
                    "epoch": epoch,
                    "skipped": handler.skipped,
                    "seen": handler.seen,
                    "skip_errors": list(handler.last),  # the last few skip reasons (naming the shard), for reports
                    "skip_shards": dict(handler.shards),  # skips per shard URL/path, for reports
                    "padded": sum(i >= real for i in indices),
                }
                views0, views1, indices = [], [], []
                n_batches -= 1
                if n_batches == 0:
                    return

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        if (info.num_workers if info else 1) != self.num_workers:
            found = info.num_workers if info else 0
            raise RuntimeError(f"stream built for data.num_workers={self.num_workers}, DataLoader has {found}")
        physical = info.id if info else 0
        resume = self.resume or {
            "offset": 0,
            "epoch": [0] * self.num_workers,
            "next_index": [0] * self.num_workers,
            "batches": [0] * self.num_workers,
        }
        worker = (physical + resume["offset"]) % self.num_workers
        epoch, start = resume["epoch"][worker], resume["next_index"][worker]
        left = self.batches_per_worker - resume["batches"][worker]
        handler = SkipCounter(self.data.max_skip_fraction, self.data.min_skips_to_fail)  # counts over epochs
        while True:
            if left > 0:
                yield from self._worker_batches(worker, epoch, start, left, handler)
            epoch, start, left = epoch + 1, 0, self.batches_per_worker


class StreamPosition:
    """The exact data position of one rank: per worker its epoch, batches done and next stream index.

    ``update(batch)`` after each consumed batch; ``state_dict``/``load_state_dict`` for checkpoints; ``apply``
    configures a fresh :class:`TwoViewStream` to continue exactly after the last consumed batch.
    """

    def __init__(self, num_workers: int) -> None:
        self.num_workers = max(1, num_workers)
        self.consumed = 0
        self.epoch = [0] * self.num_workers
        self.next_index = [0] * self.num_workers
        self.batches = [0] * self.num_workers

    def update(self, batch: dict[str, Any]) -> None:
        w = int(batch["worker"])
        if int(batch["epoch"]) != self.epoch[w]:
            self.epoch[w], self.batches[w] = int(batch["epoch"]), 0
        self.batches[w] += 1
        self.next_index[w] = int(batch["index"].max()) + 1
        self.consumed += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "consumed": self.consumed,
            "epoch": list(self.epoch),
            "next_index": list(self.next_index),
            "batches": list(self.batches),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["num_workers"]) != self.num_workers:

            def said(n: int) -> str:  # 0 and 1 both give one stream
                return "0 or 1" if n == 1 else str(n)

            raise ConfigError(
                f"the checkpoint was written with data.num_workers={said(int(state['num_workers']))}; exact resume "
                f"needs the same (got {said(self.num_workers)})"
            )
        self.consumed = int(state["consumed"])
        self.epoch, self.next_index = list(state["epoch"]), list(state["next_index"])
        self.batches = list(state["batches"])

    def apply(self, stream: TwoViewStream, batches_per_worker: int) -> None:
        # A worker that finished its epoch starts the next one; the others continue where they stopped.
        epoch, start, done = list(self.epoch), list(self.next_index), list(self.batches)
        for w in range(self.num_workers):
            if done[w] >= batches_per_worker:
                epoch[w], start[w], done[w] = epoch[w] + 1, 0, 0
        stream.resume = {
            "offset": self.consumed % self.num_workers,
            "epoch": epoch,
            "next_index": start,
            "batches": done,
        }


def _worker_init(worker_id: int) -> None:
    # Everything random in the stream is explicitly seeded; this only pins libraries that use global RNGs.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def build_loader(stream: TwoViewStream, num_workers: int, seed: int = 0) -> DataLoader:
    """A DataLoader over the stream (already batched), with workers seeded and kept alive.

    Its own generator keeps the caller's global torch RNG untouched when iterators are created.
    """
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        worker_init_fn=_worker_init,
        persistent_workers=num_workers > 0,
        prefetch_factor=2 if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(stable_seed(seed, "loader") % 2**63),
    )
