"""inmem: a state store for AI agents, embedded or as a sharded cluster.

    import inmem
    db = inmem.open(None)                        # embedded, in memory
    db = inmem.open("./agent-data", durability="strict")
    db = inmem.connect("ipc:///tmp/inmem/coordinator.sock")
"""

from __future__ import annotations

import os
from typing import Callable

from . import durability as _durability
from .errors import (ClusterNotReady, CorruptionError, DurabilityError, HistoryNotKept,
                     InmemError, InvalidKey,
                     InvalidOption, InvalidPath, InvalidStatusTransition, InvalidURL,
                     InvalidValue, ProtocolError, RunExists, RunNotActive, RunNotFound,
                     ShardUnavailable, SlotMoved, StateExists, StateNotFound, StoreOpenError,
                     Timeout, TraceNotFound, TransactionConflict, ValueTooLarge,
                     VersionMismatch)
from .types import (ChainCheck, Event, RecoveryResult, RunInfo, SnapshotInfo, State, Trace,
                    TraceTree, Versioned)

__version__ = "0.1.0"

#: "inmemory" (no files), "buffered" (fsync every flush interval), "strict" (fsync before acknowledging)
DURABILITY_MODES = _durability.MODES


#: the latest time a clock may give, µs since the epoch (the year 146,000 or so)
_CLOCK_MAX = 1 << 62


def _checked_clock(clock: Callable) -> Callable[[], int]:
    """`clock` as the engine needs it: int microseconds, checked at every reading.

    Every timestamp of the store is a reading, and the engine's entries pack
    them as ints: a float (time.time() * 1e6 without int()) once failed writes
    half way. Floats are taken as their int part; anything else that is not a
    time since the epoch is InvalidOption, here at open and at any reading.
    """
    if not callable(clock):
        raise InvalidOption("clock must be a function returning microseconds, or None")

    def now() -> int:
        t = clock()
        if type(t) is int:
            if 0 <= t < _CLOCK_MAX:
                return t
        elif type(t) is float and 0 <= t < _CLOCK_MAX:  # (NaN fails the comparison)
            return int(t)
        raise InvalidOption(f"clock returned {t!r}: it must return microseconds since the "
                            "epoch, an int >= 0")

    now()
    return now


def open(path: str | os.PathLike | None = None, durability: str = "buffered", *,  # noqa: A001
         clock: Callable[[], int] | None = None, **options) -> Database:
    """Open an embedded store in this process.

    `path` None keeps everything in memory only (durability is then "inmemory");
    a directory path opens (or creates) a durable store there, "buffered" or
    "strict". `clock` returns int microseconds since the epoch (tests pin it).
    Options: `max_value_bytes` and those of `inmem.durability.OPTIONS`
    (flush_interval_ms, max_pending_writes, snapshot_*, segment_bytes_max, ...).
    `history` (in memory only): how much of each run's journal replay and diff
    can use: "full" (the default), a count N of entries kept per run (at least
    the last N), or "none"; a replay of a run that lost entries raises
    HistoryNotKept, and `info()` reports how many were dropped. A durable
    store keeps every run's full history on disk.
    Raises InvalidOption, StoreOpenError, CorruptionError.
    """
    from .database import Database
    from .embedded import EmbeddedBackend
    from .values import DEFAULT_MAX_VALUE_BYTES
    from inmem.shard.engine import Engine

    if durability not in DURABILITY_MODES:
        raise InvalidValue(f"durability must be one of {DURABILITY_MODES}, got {durability!r}")
    _check_options(options)
    if clock is not None:
        clock = _checked_clock(clock)
    max_value_bytes = options.pop("max_value_bytes", DEFAULT_MAX_VALUE_BYTES)
    history = options.pop("history", "full")
    if path is None or durability == "inmemory":
        # Of the durability options, only the dead keys' retention means anything
        # without files.
        retention = options.get("dead_key_retention_s")
        engine = Engine(clock=clock, max_value_bytes=max_value_bytes, history=history,
                        **({} if retention is None else {"dead_key_retention_s": retention}))
        return Database(EmbeddedBackend(engine))
    if history != "full":
        raise InvalidOption("history= limits an in-memory store; a durable store keeps every "
                            f"run's history on disk (got history={history!r})")
    path = _store_path(path)
    _refuse_a_cluster_directory(path)
    from inmem.shard.durable import DurableStore
    try:
        store, engine = DurableStore.open(path, durability=durability, clock=clock,
                                          max_value_bytes=max_value_bytes, **options)
    except StoreOpenError:
        raise  # says what is wrong and where already
    except OSError as exc:
        # Name the file that failed too: in a store that opened before, it is
        # that one file (unreadable, a directory) the operator must look at.
        what = exc.filename if exc.filename not in (None, path) else None
        where = f" ({what})" if what is not None else ""
        raise StoreOpenError(f"cannot open the store at {path}: {exc.strerror or exc}{where}; "
                             "pass a directory you may write to (it is created if missing), "
                             "and check that the files in it are yours and readable",
                             path=path) from exc
    backend = EmbeddedBackend(engine, store)
    store.start_scheduler()
    return Database(backend)


def _check_options(options: dict) -> None:
    """InvalidOption for an option `open` does not take or a value it cannot use."""
    known = ("max_value_bytes", "history", *_durability.OPTIONS)
    unknown = options.keys() - set(known)
    if unknown:
        raise InvalidOption(f"inmem.open() got unknown options {sorted(unknown)}; it takes "
                            f"clock and {', '.join(sorted(known))}")
    for name, value in options.items():
        if name == "history":
            from inmem.shard.history import history_limit
            history_limit(value)
            continue
        if name == "max_value_bytes":
            if type(value) is not int or value < 1:
                raise InvalidOption(f"option max_value_bytes must be int >= 1, got {value!r}")
            continue
        why = _durability.problem(name, value)
        if why:
            raise InvalidOption(f"option {why}")


def _store_path(path) -> str:
    """The store directory as a str; StoreOpenError if it names something else."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidOption(f"path must be None, a str or an os.PathLike, got "
                            f"{type(path).__name__}")
    path = os.fspath(path)
    if type(path) is not str:
        raise InvalidOption("path must be a str path, not bytes")
    if not path:
        # os.environ.get("STORE", "") made a store of the current directory, taking over
        # whatever wal/ was there: an empty path is a slip, not a wish.
        raise InvalidOption("path is empty: give a directory (\".\" for the current one), or "
                            "None for an in-memory store")
    if os.path.exists(path) and not os.path.isdir(path):
        raise StoreOpenError(f"{path} exists and is not a directory; a durable store is a "
                             "directory: pass a new or existing directory path, or None for "
                             "an in-memory store", path=path)
    return path


def _refuse_a_cluster_directory(path: str) -> None:
    """StoreOpenError if `path` is, or is inside, the data directory of a running cluster.

    The cluster's shards own the WALs there; an embedded store beside or
    inside them would be a second writer the cluster knows nothing about.
    """
    from .files import CLUSTER_LOCK_NAME, lock_file_pid, serving_cluster_root
    root = serving_cluster_root(path)
    if root is None:
        _refuse_a_stopped_clusters_directory(path)
        return
    pid = lock_file_pid(os.path.join(root, CLUSTER_LOCK_NAME))
    who = f" (coordinator pid {pid})" if pid else ""
    raise StoreOpenError(
        f"{path} is inside {root}, the data directory of a running cluster{who}; connect to "
        f"the cluster with inmem.connect(...) instead, or open an embedded store in another "
        f"directory", path=path)


def _refuse_a_stopped_clusters_directory(path: str) -> None:
    """StoreOpenError if `path` is itself the data directory of a cluster that is not running.

    Opened as a store it reads as empty (a cluster's runs are in its shards'
    directories), and the wal/, snapshots/ and LOCK it makes there stop the
    cluster's next start. Beside or inside it (a shard's directory) is fine.
    """
    from inmem.coordinator.slotmap import FILE_NAME as SLOTMAP_NAME
    from .files import is_cluster_dir, is_store_dir
    if not (is_cluster_dir(path) or os.path.isfile(os.path.join(path, SLOTMAP_NAME))):
        return
    try:
        names = os.listdir(path)
    except OSError:
        names = []  # opening it says what is wrong with it
    shards = sorted(name for name in names
                    if name.startswith("shard-") and name[6:].isdigit()
                    and os.path.isdir(os.path.join(path, name)))
    if not shards and is_store_dir(path):
        return  # a store's own directory, where a cluster's start was tried and refused
    look = (f"open one shard's directory ({os.path.join(path, shards[0])}) to look at its "
            "data" if shards else "open a store in another directory")
    raise StoreOpenError(
        f"{path} is the data directory of a cluster (not running); its runs are in its "
        f"shards' directories, and a store made here would stop the cluster's next start: "
        f"start the cluster (inmem serve, inmem.Cluster) and connect to it, or {look}",
        path=path)


def connect(url: str, timeout: float = 5.0, **options) -> Database:
    """A Database on the cluster at `url`, once every shard is ready.

    `url`: the endpoint `inmem serve` prints, ipc://path or tcp://host:port
    (else InvalidURL). Waits up to `timeout` seconds, then ClusterNotReady.
    Options: `request_timeout` (seconds per call, default `timeout`; Timeout
    after it; in a pipeline, per chunk of 1,000 operations),
    `max_message_bytes` (match the cluster's), `direct` (True: send each
    run's operations straight to its shard; False: through the
    coordinator), `keys` (for a tcp endpoint with CurveZMQ: see
    `inmem.client.connect`). InvalidOption for anything else.
    """
    from .client import connect as _connect
    return _connect(url, timeout=timeout, **options)


def __getattr__(name):
    # Imported on first use: a shard or coordinator process imports this package
    # for its errors and types, and needs neither class.
    if name == "Cluster":
        from .cluster import Cluster
        return Cluster
    if name == "Database":
        from .database import Database
        return Database
    raise AttributeError(f"module 'inmem' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})


__all__ = [
    "open", "connect", "Cluster", "Database", "InmemError", "InvalidKey", "InvalidValue",
    "ValueTooLarge", "InvalidPath", "RunNotFound", "RunExists", "RunNotActive",
    "InvalidStatusTransition", "VersionMismatch", "StateExists", "StateNotFound",
    "TraceNotFound", "TransactionConflict", "ClusterNotReady", "ShardUnavailable", "Timeout",
    "ProtocolError", "CorruptionError", "DurabilityError", "HistoryNotKept", "InvalidOption", "InvalidURL",
    "StoreOpenError", "SlotMoved", "Event", "ChainCheck", "State",
    "Trace", "TraceTree", "RunInfo", "Versioned", "SnapshotInfo", "RecoveryResult",
]
