"""The process pool of a conversion: workers convert tasks and write their own samples into the shards.

Per task, a worker runs the processor, keeps the encoded tar bytes of its samples and returns
``(split, length, payload bytes)`` per sample: a few hundred bytes instead of the samples (the main process used
to receive every sample through a pipe, hash it and write it: a third of the run's CPU). The main process places
the samples in task order (:meth:`~data_prep.writer.ShardSetWriter.place`) and sends the placement to the worker
that holds them; a thread of that worker writes them at their offsets (:func:`~data_prep.shard_parts.write_runs`)
while its main thread converts the next task. A full shard whose samples are all written is hashed and fsynced by
a worker (:func:`~data_prep.shard_parts.finish_shard`); the main process renames and journals it, in the order a
single process would. At most ``window`` tasks are in flight, so the samples held in the workers stay few.

A worker that dies (killed, out of memory) takes its task and the samples it holds with it: the run stops with an
error that says so (``multiprocessing.Pool`` alone would wait for the lost task forever); a re-run resumes.
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable
from typing import Any

from lvmmed.errors import LvmmedError

from .shard_parts import finish_shard, write_runs
from .tasks import Task, run_one, worker_init
from .writer import ShardSetWriter

_HELD: dict[int, list[bytes]] = {}  # in a worker: task position -> tar bytes of its samples, until written
_SLOT = 0  # in a worker: which placement inbox is this worker's


def init_worker(slots, inboxes: list, acks) -> None:
    """Pool initializer: single-threaded work, a slot (= an inbox), and the thread that writes placed samples."""
    global _SLOT
    worker_init()
    with slots.get_lock():
        _SLOT = slots.value % len(inboxes)  # a replacement for a dead worker takes over an inbox
        slots.value += 1
    threading.Thread(target=_write_placed, args=(inboxes[_SLOT], acks), daemon=True).start()


def _write_placed(inbox, acks) -> None:
    """Worker thread: ``(position, runs)`` from the main process -> write the held samples -> acknowledge."""
    while (message := inbox.get()) is not None:
        position, runs = message
        try:
            held = _HELD.pop(position, None)
            if held is None:  # only after a worker died and a new one took over its inbox
                raise WorkerDied(f"the samples of task {position} were lost with a worker process that died")
            write_runs(held, runs)
            acks.put((position, None))
        except BaseException as err:  # reported to the main process, which stops the run with it
            try:
                acks.put((position, err))
            except Exception:  # an error that does not pickle: its text
                acks.put((position, RuntimeError(f"{type(err).__name__}: {err}")))


def convert_and_hold(args: tuple[Task, dict[str, Any], int]) -> tuple[int, list[tuple[str, int, int]], list, int]:
    """Pool task: runs a task, keeps its samples' tar bytes; returns ``(index, [(split, length, payload)], failures,
    slot)``."""
    task, cfg, position = args
    index, samples, failures = run_one((task, cfg))
    if samples:
        _HELD[position] = [s.tar for s in samples]
    return index, [(s.split, len(s.tar), s.nbytes) for s in samples], failures, _SLOT


def write_pooled(
    ctx, n_workers: int, tasks: list[Task], cfg: dict[str, Any], writer: ShardSetWriter,
    on_result: Callable[..., None], window: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """Converts ``tasks`` on ``n_workers`` processes of ``ctx``; returns the completed shard records."""
    inboxes, acks = [ctx.SimpleQueue() for _ in range(n_workers)], ctx.SimpleQueue()
    events: queue.SimpleQueue = queue.SimpleQueue()  # (kind, position, payload), from callbacks and the acks
    forwarder = threading.Thread(target=_forward, args=(acks, events), daemon=True)
    forwarder.start()
    try:
        with ctx.Pool(n_workers, initializer=init_worker, initargs=(ctx.Value("i", 0), inboxes, acks)) as pool:
            records = _run(pool, tasks, cfg, writer, on_result, window, inboxes, events, list(pool._pool))
            for inbox in inboxes:
                inbox.put(None)
            return records
    finally:  # stop the forwarder; from a thread, as a worker killed while writing to acks leaves its lock taken
        threading.Thread(target=acks.put, args=(None,), daemon=True).start()
        forwarder.join(timeout=5)


def _forward(acks, events: queue.SimpleQueue) -> None:
    while (ack := acks.get()) is not None:
        events.put(("written", *ack))


class WorkerDied(LvmmedError):
    """A pool worker exited in the middle of a conversion (killed, out of memory, crashed in a decoder): exit 1."""

    default_fix = "completed shards are kept: run the same command again to resume (fewer --workers use less memory)"


def _next_event(events: queue.SimpleQueue, workers: list) -> tuple:
    """The next event; raises :class:`WorkerDied` when a worker has exited meanwhile (its task would never end)."""
    while True:
        try:
            return events.get(timeout=1.0)
        except queue.Empty:
            dead = [p.exitcode for p in workers if p.exitcode is not None]
            if dead:
                code = dead[0]
                how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                how += " (SIGKILL, e.g. out of memory)" if code == -signal.SIGKILL else ""
                raise WorkerDied(f"a data_prep worker process died ({how})") from None


def _run(pool, tasks: list[Task], cfg: dict[str, Any], writer: ShardSetWriter, on_result: Callable[..., None],
         window: int, inboxes: list, events: queue.SimpleQueue, workers: list) -> list[dict[str, Any]]:  # fmt: skip
    def submit(position: int) -> None:
        pool.apply_async(convert_and_hold, ((tasks[position], cfg, position),),
                         callback=lambda r: events.put(("done", position, r)),
                         error_callback=lambda e: events.put(("failed", position, e)))  # fmt: skip

    writer.hasher = lambda path, end: pool.apply_async(
        finish_shard, (path, end), callback=lambda _: events.put(("hashed", -1, None)),
        error_callback=lambda _: events.put(("hashed", -1, None)),
    )  # fmt: skip
    submitted = min(window, len(tasks))
    for position in range(submitted):
        submit(position)
    ready: dict[int, tuple] = {}
    unwritten: set[int] = set()
    placed = 0
    while placed < len(tasks) or unwritten:
        kind, position, payload = _next_event(events, workers)
        if kind == "failed" or (kind == "written" and payload is not None):
            raise payload
        if kind == "done":
            ready[position] = payload
            if submitted < len(tasks):
                submit(submitted)
                submitted += 1
        elif kind == "written":
            unwritten.discard(position)
            writer.mark_written(position)
        while placed in ready:
            _place(ready.pop(placed), placed, writer, inboxes, unwritten, on_result)
            placed += 1
            if placed == len(tasks):
                writer.close_open()
        writer.collect()
    while writer.hashing:  # the last shards: wait for their hashes here, where a dead worker is noticed
        _next_event(events, workers)
        writer.collect()
    return writer.close()


def _place(result: tuple, position: int, writer: ShardSetWriter, inboxes: list, unwritten: set[int],
           on_result: Callable[..., None]) -> None:  # fmt: skip
    """Places a task's samples and sends the worker that holds them where to write them."""
    index, samples, failures, slot = result
    runs: dict[str, tuple[int, list[int]]] = {}  # shard path -> (offset of the task's first sample there, samples)
    ends: dict[str, int] = {}
    for i, (split, length, nbytes) in enumerate(samples):
        spot = writer.place(split, position, length, nbytes)
        if spot is not None:
            path, offset = spot
            if ends.setdefault(path, offset) != offset:  # a task's samples in one shard are back to back
                raise RuntimeError(f"sample {i} of task {position} placed at {offset}, expected {ends[path]}")
            ends[path] = offset + length
            runs.setdefault(path, (offset, []))[1].append(i)
    if samples:  # also when resume skips them all: the worker drops what it holds
        inboxes[slot].put((position, [(path, offset, indices) for path, (offset, indices) in runs.items()]))
        unwritten.add(position)
    on_result(index, len(samples), failures)
