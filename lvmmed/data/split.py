"""Which samples each (rank, DataLoader worker) reads: a pure function of the shard counts and the ids.

Two modes (``data.resampled``):

* **Resampled** (default): every (rank, worker) stream draws shards with replacement from its own seeded RNG.
  With at least ``world_size * num_workers`` shards in a set, the shards are dealt out first
  (:func:`resampled_shards`) so streams do not even share shards; with fewer, every stream resamples from every
  shard, with an independent seed. Streams are endless; epochs are a sample count.
* **Epoch** (``resampled=false``): every sample is read exactly once per epoch across all ranks and workers, at
  any scale, including fewer shards than ``world_size * num_workers``. The shards of all selected sets are put in a
  seeded per-epoch order (the same on every rank) and concatenated into one sample sequence; part ``p`` of
  ``P = world_size * num_workers`` gets the contiguous slice ``[p·N/P, (p+1)·N/P)`` (:func:`epoch_ranges`), i.e.
  whole shards where shards are plentiful and ranges inside shards where they are not (a part starting inside a
  shard streams past the samples before its range without decoding them). Slices differ by at most one sample.

**The last, partial batch (DDP needs equal batch counts per rank).** In epoch mode every part yields
``ceil(ceil(N/P) / batch_size)`` full batches (:func:`epoch_batches`). A part's last batch is topped up with
repeats of that part's first samples, as ``torch.utils.data.DistributedSampler`` pads by default: each sample is
in exactly one part, and at most ``batch_size`` repeats per worker fill the final batches. Batches report the
number of such repeats as ``padded``.
"""

from __future__ import annotations

import math
import random


def part_of(rank: int, world_size: int, worker: int, num_workers: int) -> tuple[int, int]:
    """``(part, parts)`` of a (rank, worker) among all ``world_size * num_workers`` streams.

    Raises:
        ValueError: An id out of range.
    """
    num_workers = max(1, num_workers)
    if not (0 <= rank < world_size and worker >= 0):
        raise ValueError(f"rank {rank}/{world_size}, worker {worker}/{num_workers} out of range")
    return rank * num_workers + worker, world_size * num_workers


def resampled_shards(urls: list[str], part: int, parts: int) -> list[str]:
    """Shards a resampled stream draws from: its own share when there are enough, else all (seeded apart)."""
    return urls[part::parts] if len(urls) >= parts else list(urls)


def epoch_order(n_shards: int, seed: int, epoch: int) -> list[int]:
    """The shard order of one epoch: a permutation from ``(seed, epoch)`` only, so every rank agrees."""
    order = list(range(n_shards))
    random.Random(f"{seed}/{epoch}/epoch-order").shuffle(order)
    return order


def epoch_ranges(counts: list[int], part: int, parts: int, seed: int, epoch: int) -> list[tuple[int, int, int]]:
    """The samples of one part in one epoch, as ``(shard index, first, stop)`` ranges within shards.

    Args:
        counts: Samples per shard (from the manifests), all selected sets' shards in one list.
        part, parts: From :func:`part_of`.
        seed, epoch: Select the epoch's shard order (:func:`epoch_order`).

    Returns:
        Ranges in reading order; over all parts they cover every sample exactly once.
    """
    total = sum(counts)
    lo, hi = part * total // parts, (part + 1) * total // parts
    ranges, offset = [], 0
    for shard in epoch_order(len(counts), seed, epoch):
        start, stop = offset, offset + counts[shard]
        if stop > lo and start < hi:
            ranges.append((shard, max(lo, start) - start, min(hi, stop) - start))
        offset = stop
    return ranges


def epoch_part_size(total: int, part: int, parts: int) -> int:
    """Samples in one part's slice (``floor`` or ``ceil`` of ``total / parts``)."""
    return (part + 1) * total // parts - part * total // parts


def epoch_batches(total: int, parts: int, batch_size: int) -> int:
    """Batches every part yields per epoch: enough for the largest slice (smaller ones are padded)."""
    return max(1, math.ceil(math.ceil(total / parts) / batch_size))
