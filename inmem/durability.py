"""The durability modes and the options that tune them: one table of names, types, bounds, defaults.

`inmem.open(...)` takes these options as keyword arguments, a cluster's TOML
config takes them in its `[durability]` section, and a shard's durable store
applies them; all three read this table.

| option | default | meaning |
| --- | --- | --- |
| flush_interval_ms | 100 | buffered: the longest a write waits for its fsync |
| max_pending_writes | 1000 | buffered: this many writes pending start a flush at once |
| snapshot_wal_bytes | 64 MiB | a snapshot is taken after this much WAL (0: after every write) |
| snapshot_interval_s | 3600 | ... or after this many seconds with writes (None: never) |
| snapshot_retention | 2 | snapshots kept; the WAL they need is kept with them |
| snapshot_on_close | True | take a snapshot when the store closes cleanly |
| max_corrupt_entries | 0 | damaged WAL records recovery may skip before it refuses |
| segment_bytes_max | 64 MiB | a WAL segment file rolls at this size |
| fsync_slow_ms | 500 | an fsync slower than this is logged as a warning |
| history_compact_dead_fraction | 0.5 | a history file this dead is compacted (None: only on request) |
| snapshot_huge_pages | True | keep the heap in huge pages so a snapshot's fork is short |
| malloc_mmap_threshold | 1 MiB | glibc's mmap threshold, held fixed in the process (0 or None: left alone) |
| commit_wait_us | 100 | strict cluster shards: the longest a turn waits for recently served clients before its fsync (0: never) |
| dead_key_retention_s | 60 | a deleted or expired KV entry, deleted state cell or deleted JSON document is reclaimed once dead this long (0: at the next sweep) |

`dead_key_retention_s` is an engine option rather than a durability one: it
applies to in-memory shards as well, and lives here so that the one table
serves `inmem.open`, the config file and the shard alike.
"""

from __future__ import annotations

from typing import NamedTuple

#: "inmemory": no files; "buffered": fsync every flush interval; "strict": fsync before acknowledging
MODES = ("inmemory", "buffered", "strict")


class Option(NamedTuple):
    types: tuple
    bound: str | None
    default: object
    #: the largest value taken (None: no limit). An infinite flush interval or
    #: commit wait is not "rarely": it stops a thread that must run.
    most: float | None = None


#: "never" in practice, as a config may say it (centuries), but a number time can hold
_CENTURIES_S = 10**10

#: option -> its accepted types, the bound its value must meet, its default and its largest value
OPTIONS = {
    "flush_interval_ms": Option((int, float), "> 0", 100, 3_600_000),
    "max_pending_writes": Option((int,), ">= 1", 1000, 2**32),
    "snapshot_wal_bytes": Option((int,), ">= 0", 64 * 2**20, 2**62),
    "snapshot_interval_s": Option((int, float, type(None)), "> 0", 3600.0, _CENTURIES_S),
    "snapshot_retention": Option((int,), ">= 1", 2, 10_000),
    "snapshot_on_close": Option((bool,), None, True),
    "max_corrupt_entries": Option((int,), ">= 0", 0, 2**62),
    # a WAL record's length is a u32, so a segment past 4 GiB gains nothing
    "segment_bytes_max": Option((int,), ">= 1", 64 * 2**20, 2**32),
    "fsync_slow_ms": Option((int, float), ">= 0", 500, _CENTURIES_S),
    "history_compact_dead_fraction": Option((int, float, type(None)), "in (0, 1]", 0.5),
    "snapshot_huge_pages": Option((bool,), None, True),
    # mallopt takes a C int
    "malloc_mmap_threshold": Option((int, type(None)), ">= 0", 2**20, 2**31 - 1),
    "commit_wait_us": Option((int, float), ">= 0", 100, 1_000_000),
    "dead_key_retention_s": Option((int, float), ">= 0", 60, _CENTURIES_S),
}

_BOUNDS = {">= 0": lambda v: v >= 0, "> 0": lambda v: v > 0, ">= 1": lambda v: v >= 1,
           "in (0, 1]": lambda v: 0 < v <= 1}


def defaults() -> dict:
    return {name: option.default for name, option in OPTIONS.items()}


def problem(name: str, value) -> str | None:
    """Why `value` cannot be option `name` (None when it can); the name must be known."""
    types, bound, _, most = OPTIONS[name]
    # type() rather than isinstance: True is not a count of anything.
    if (type(value) not in types
            or (bound and value is not None and not _BOUNDS[bound](value))
            or (most is not None and value is not None and not value <= most)):
        wanted = " or ".join("None" if t is type(None) else t.__name__ for t in types)
        limits = ("" if bound is None else " " + bound) + ("" if most is None else
                                                            f" and at most {most:,}")
        return f"{name} must be {wanted}{limits}, got {value!r}"
    return None


__all__ = ["MODES", "OPTIONS", "Option", "defaults", "problem"]
