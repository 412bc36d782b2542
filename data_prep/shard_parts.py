"""Shard file I/O done in the worker processes: writing samples at their place in a shard, hashing a full shard.

With a process pool, a worker keeps the tar bytes of a task's samples and sends the main process only
``(split, length, payload bytes)`` per sample. The main process places the samples in task order (the rotation of
:class:`~data_prep.writer.ShardSetWriter`: which shard, at which byte offset) and tells the worker, which writes
them straight into the shard's ``.tar.tmp`` (:func:`write_runs`; workers write disjoint ranges of a file). When a
full shard has all its bytes, a worker appends the end-of-archive blocks, hashes the file and fsyncs it, the two at
once (:func:`finish_shard`); the main process then renames and journals it. The bytes are those one process
writes.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

from .tar_format import end_of_archive

_CHUNK = 1 << 20
_CALL_BYTES = 1 << 20  # bytes per pwritev call: two workers writing one file (disjoint ranges) take turns on its
# inode lock, and a waiter spins while the holder copies; 1 MiB calls kept the CPU per byte at that of one writer
# (50 MB calls cost 7x more CPU per byte, measured on this project's 2-core machine)
_IOV_MAX = 512  # buffers per call (Linux allows 1024)


def write_runs(tars: list[bytes], runs: list[tuple[str, int, list[int]]]) -> None:
    """Writes samples into shard files: ``(path, offset, sample indices)`` = those samples, back to back, from
    ``offset``. The file is created if this is its first write (no truncation: other workers fill other ranges)."""
    for path, offset, indices in runs:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            batch: list[bytes] = []
            size = 0
            for i in indices:
                batch.append(tars[i])
                size += len(tars[i])
                if size >= _CALL_BYTES or len(batch) == _IOV_MAX:
                    offset = _pwritev_all(fd, batch, offset)
                    batch, size = [], 0
            if batch:
                _pwritev_all(fd, batch, offset)
        finally:
            os.close(fd)


def _pwritev_all(fd: int, buffers: list[bytes], offset: int) -> int:
    total = sum(len(b) for b in buffers)
    written = os.pwritev(fd, buffers, offset)
    if written < total:  # a short write (rare: signals, quotas): the rest in plain pwrite calls
        data = memoryview(b"".join(buffers))[written:]
        while data:
            n = os.pwrite(fd, data, offset + written)
            data, written = data[n:], written + n
    return offset + total


def finish_shard(path: str, end: int) -> tuple[str, int]:
    """Appends the end-of-archive blocks at ``end`` (the shard's last sample byte), hashes the whole file and fsyncs
    it; the fsync runs in a thread while the file is read back and hashed (both release the GIL), so the disk flush
    costs no time of its own here and none of the main process, which renames the shard when this returns.

    Returns:
        ``(sha256 hex, bytes)``, once the file's data is on disk.
    """
    tail = end_of_archive(end)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if os.pwrite(fd, tail, end) != len(tail):
            raise OSError(f"short write at the end of {os.path.basename(path)}")
        with ThreadPoolExecutor(1) as flusher:
            synced = flusher.submit(os.fsync, fd)
            digest = _hash_fd(fd, end + len(tail), path)
            synced.result()  # re-raises an fsync error (e.g. EIO)
    finally:
        os.close(fd)
    return digest, end + len(tail)


def _hash_fd(fd: int, size: int, path: str) -> str:
    """sha256 of the first ``size`` bytes of an open file."""
    digest, buffer = hashlib.sha256(), bytearray(_CHUNK)
    view, left, offset = memoryview(buffer), size, 0
    while left:
        n = os.preadv(fd, [view[: min(left, _CHUNK)]], offset)
        if not n:
            raise OSError(f"{os.path.basename(path)} ends at byte {offset}, before {size}")
        digest.update(view[:n])
        offset, left = offset + n, left - n
    return digest.hexdigest()
