"""A shard's background upkeep and its info report, the same for the embedded store and a worker.

The embedded store runs `upkeep` from its scheduler thread and a shard worker
from its idle turns, every `UPKEEP_EVERY_S`: the search index follows the
journal in short slices (so a writer waits at most a few milliseconds for the
engine's lock), and the snapshot triggers are checked. `shard_info` is the
one description of a shard that `db.info()` reports, wherever the shard runs.
"""

from __future__ import annotations

import logging
import os

import psutil

from inmem.errors import InmemError

log = logging.getLogger("inmem.shard")

#: seconds between two rounds of upkeep
UPKEEP_EVERY_S = 0.25
#: the longest slice of index catch-up in one round, in milliseconds
INDEX_STEP_MS = 3


def upkeep(engine, store, lock) -> None:
    """One round: index a slice of the journal (under the engine's lock), then a due snapshot."""
    with lock:
        engine.index_step(INDEX_STEP_MS)
    if store is not None:
        try:
            store.maybe_snapshot()
        except InmemError as exc:  # the WAL is kept, so a failed snapshot loses nothing
            log.error("snapshot of %s failed: %s", store.path, exc)


def shard_info(shard: int, engine, store, **extra) -> dict:
    """What `db.info()` reports of one shard: counts, memory, WAL size, durability."""
    counts = engine.counts()
    return {"shard": shard, "pid": os.getpid(), "state": "ready",
            "keys": counts["keys"], "runs": counts["runs"],
            "memory_bytes": psutil.Process().memory_info().rss,
            "wal_bytes": 0 if store is None else store.wal_bytes(),
            "durability": "inmemory" if store is None else store.durability,
            "last_snapshot_pause_ms": None if store is None else store.last_snapshot_pause_ms,
            **extra}
