"""inmem: a state store for AI agents, embedded or as a sharded cluster.

    import inmem
    db = inmem.open(None)                        # embedded, in memory
    db = inmem.open("./data", durability="strict")
    db = inmem.connect("ipc:///tmp/inmem/coordinator.sock")
"""

from __future__ import annotations

from .database import Database
from .errors import (ClusterNotReady, CorruptionError, DurabilityError, InmemError, InvalidKey,
                     InvalidPath, InvalidStatusTransition, InvalidValue, ProtocolError,
                     RunExists, RunNotActive, RunNotFound, ShardUnavailable, StateExists,
                     StateNotFound, Timeout, TraceNotFound, TransactionConflict, ValueTooLarge,
                     VersionMismatch)
from .types import (ChainCheck, Event, RecoveryResult, RunInfo, SnapshotInfo, State, Trace,
                    TraceTree, Versioned)

__version__ = "0.1.0"

DURABILITY_MODES = ("inmemory", "buffered", "strict")


def open(path=None, durability: str = "buffered", *, clock=None, **options) -> Database:  # noqa: A001
    """Open an embedded store. `path` None = in memory only (durability is then "inmemory")."""
    from .embedded import EmbeddedBackend
    from .values import DEFAULT_MAX_VALUE_BYTES
    from inmem.shard.engine import Engine

    if durability not in DURABILITY_MODES:
        raise InvalidValue(f"durability must be one of {DURABILITY_MODES}, got {durability!r}")
    max_value_bytes = options.pop("max_value_bytes", DEFAULT_MAX_VALUE_BYTES)
    if path is None or durability == "inmemory":
        if options.keys() - _DURABLE_OPTIONS:
            raise TypeError(f"unknown options: {sorted(options.keys() - _DURABLE_OPTIONS)}")
        engine = Engine(clock=clock, max_value_bytes=max_value_bytes)
        return Database(EmbeddedBackend(engine))
    from inmem.shard.durable import DurableStore
    store, engine = DurableStore.open(path, durability=durability, clock=clock,
                                      max_value_bytes=max_value_bytes, **options)
    backend = EmbeddedBackend(engine, store)
    store.start_scheduler()
    return Database(backend)


_DURABLE_OPTIONS = frozenset(("flush_interval_ms", "max_pending_writes", "snapshot_wal_bytes",
                              "snapshot_interval_s", "snapshot_retention", "snapshot_on_close",
                              "max_corrupt_entries", "segment_bytes_max", "fsync_slow_ms"))


def connect(url: str, timeout: float = 5.0, **options) -> Database:
    """Connect to a cluster's coordinator; waits up to `timeout` for it to be ready."""
    from .client import connect as _connect
    return _connect(url, timeout=timeout, **options)


def __getattr__(name):
    if name == "Cluster":
        from .cluster import Cluster
        return Cluster
    raise AttributeError(f"module 'inmem' has no attribute {name!r}")


__all__ = [
    "open", "connect", "Cluster", "Database", "InmemError", "InvalidKey", "InvalidValue",
    "ValueTooLarge", "InvalidPath", "RunNotFound", "RunExists", "RunNotActive",
    "InvalidStatusTransition", "VersionMismatch", "StateExists", "StateNotFound",
    "TraceNotFound", "TransactionConflict", "ClusterNotReady", "ShardUnavailable", "Timeout",
    "ProtocolError", "CorruptionError", "DurabilityError", "Event", "ChainCheck", "State",
    "Trace", "TraceTree", "RunInfo", "Versioned", "SnapshotInfo", "RecoveryResult",
]
