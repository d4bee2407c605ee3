"""A shard's background upkeep and its info report, the same for the embedded store and a worker.

The embedded store runs `upkeep` from its scheduler thread and a shard worker
from its idle turns, every `UPKEEP_EVERY_S`: the search index follows the
journal in short slices (so a writer waits at most a few milliseconds for the
engine's lock), a durable shard's histories let go of what is on disk and
indexed, a slice of history compaction runs when a file is mostly dead
(`shard.history_compaction`), and the snapshot triggers are checked. While the index is
being rebuilt after a recovery, slices run back to back instead: the worker
runs `index_slice` whenever its socket has nothing waiting, the scheduler
thread every `REBUILD_PAUSE_S` (the pause lets other threads take the lock).
Dead KV entries, state cells and JSON documents past their retention are
reclaimed in a bounded slice each round (`shard.dead_keys`), resuming where
the last one stopped.
`shard_info` is the one description of a shard that `db.info()` reports,
wherever the shard runs.
"""

from __future__ import annotations

import logging
import os
import time

from inmem.errors import InmemError

from .dead_keys import SWEEP_ENTRIES, SWEEP_MS

log = logging.getLogger("inmem.shard")

#: seconds between two rounds of upkeep
UPKEEP_EVERY_S = 0.25
#: the longest slice of index catch-up in one round, in milliseconds
INDEX_STEP_MS = 3
#: seconds between two slices of an index rebuild in the scheduler thread
REBUILD_PAUSE_S = 0.001
#: a rebuild under a load that never lets the worker idle: the index gets this
#: share of the time the loop's turns take, in slices of at least MIN and at
#: most MAX milliseconds, one per turn at most (so a request waits at most MAX)
INDEX_SHARE = 0.5
INDEX_SHARE_MIN_MS = 0.5
INDEX_SHARE_MAX_MS = 2.0


def upkeep(engine, store, lock) -> float:
    """One round: index a slice of the journal (under the engine's lock), then a due snapshot.

    Returns the seconds to wait before the next round.
    """
    try:
        rebuilding = index_slice(engine, lock)
    except InmemError as exc:
        # A history record the index cannot read (a damaged file): searches say so
        # when they need it; the upkeep, and the loop that runs it, go on.
        log.error("search index upkeep failed: %s", exc)
        rebuilding = engine.index_rebuilding()
    with lock:
        engine.release_history()
    with lock:
        engine.sweep_dead(SWEEP_ENTRIES, SWEEP_MS)
    _trim_heap()
    if store is not None:
        try:
            store.compact_step()
        except InmemError as exc:
            log.error("history compaction of %s failed: %s", store.path, exc)
        try:
            store.maybe_snapshot()
        except InmemError as exc:  # the WAL is kept, so a failed snapshot loses nothing
            log.error("snapshot of %s failed: %s", store.path, exc)
        if not rebuilding:
            store.heap_upkeep()
    return REBUILD_PAUSE_S if rebuilding else UPKEEP_EVERY_S


def _libc_trim():
    try:
        import ctypes
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc: its allocator returns memory its own way
        return None


_malloc_trim = _libc_trim()


def _trim_heap() -> None:
    """Hand the C heap's free pages back to the OS.

    The write path's large buffers (WAL records, their payloads, decoded
    history records) are freed soon after use, but glibc keeps the freed
    pages of its heap resident until something at its top is freed too: a few
    bytes per key in a store that is being written. `malloc_trim(0)` returns
    them (a fraction of a millisecond when there is little to return).
    """
    if _malloc_trim is not None:
        _malloc_trim(0)


def upkeep_wait(engine) -> float:
    """Seconds before the first round: none to speak of when a rebuild is waiting."""
    return REBUILD_PAUSE_S if engine.index_rebuilding() else UPKEEP_EVERY_S


def index_slice(engine, lock) -> bool:
    """Index a slice of the journal under the lock; True while a rebuild is still under way."""
    with lock:
        engine.index_step(INDEX_STEP_MS)
        return engine.index_rebuilding()


class IndexShare:
    """The rebuild's fair share of a worker loop that never idles: call it once per turn.

    A worker runs rebuild slices when a turn finds no request waiting; under
    a constant load that never happens, and only the upkeep round's slice
    would be left (a few ms every `UPKEEP_EVERY_S`). So every turn accrues
    `INDEX_SHARE` of the time since the last call, and once that is worth a
    slice, a slice of it runs (bounded by `INDEX_SHARE_MAX_MS`): the index
    then completes in a bounded multiple of its own work, and a request
    waits at most one bounded slice for it. Nothing is owed while no rebuild
    is under way, and a call then costs one attribute check.
    """

    __slots__ = ("engine", "lock", "owed", "since")

    def __init__(self, engine, lock):
        self.engine = engine
        self.lock = lock
        self.owed = 0.0
        self.since = time.monotonic()

    def __call__(self) -> None:
        now = time.monotonic()
        # (a large text value under way is owed its share too, as a rebuild is)
        if not self.engine.index_rebuilding():
            self.owed = 0.0
            self.since = now
            return
        cap = INDEX_SHARE_MAX_MS / 1000
        owed = min(self.owed + (now - self.since) * INDEX_SHARE, cap)
        if owed >= INDEX_SHARE_MIN_MS / 1000:
            with self.lock:
                self.engine.index_step(owed * 1000)
            end = time.monotonic()
            owed = max(owed - (end - now), 0.0)
            now = end
        self.owed = owed
        self.since = now


def shard_info(shard: int, engine, store, **extra) -> dict:
    """What `db.info()` reports of one shard: counts, memory, WAL size, durability."""
    import psutil  # here, not at the top: a shard process starts faster without it

    counts = engine.counts()
    rss = psutil.Process().memory_info().rss
    keys = counts["keys"]
    return {"shard": shard, "pid": os.getpid(), "state": "ready",
            "keys": keys, "runs": counts["runs"],
            "memory_bytes": rss,
            # The whole process's resident memory over its keys: an upper bound
            # on what a key costs, which is the figure a capacity plan needs.
            "bytes_per_key": round(rss / keys, 1) if keys else None,
            "history": engine.history_counts(),
            "wal_bytes": 0 if store is None else store.wal_bytes(),
            "durability": "inmemory" if store is None else store.durability,
            "last_snapshot_pause_ms": None if store is None else store.last_snapshot_pause_ms,
            "index_complete": not engine.index_rebuilding(),
            # Dead entries reclaimed since the shard started: KV (deleted, expired), state
            # cells and JSON documents (deleted): kv_, state_ and json_reclaimed.
            **engine.reclaimed_counts(),
            **extra}
