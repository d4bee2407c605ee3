"""The slot map: which shard owns each of the 4096 slots, persisted in the data directory.

A run lives in slot `crc32c(run_id) % 4096` (`inmem.protocol.slot_of`); the
map says which shard holds that slot. It is written once, when a data
directory is created, and read on every start, so a restart routes every run
to the shard that holds it whatever the config says about shard counts.

`<data_dir>/slotmap.json`::

    {"format": 1, "slot_count": 4096, "shard_count": 2,
     "ranges": [[0, 2047, 0], [2048, 4095, 1]]}

`ranges` are [first slot, last slot, shard], in slot order, covering every
slot exactly once. Moving slots between shards later (resharding) only
rewrites ranges, so the format does not change for it. The file is replaced
atomically: temp file, fsync, rename, directory fsync.
"""

from __future__ import annotations

import json
import os

from inmem.errors import CorruptionError
from inmem.files import NotRegularFile, open_regular, read_data, replace_durably
from inmem.protocol import SLOT_COUNT

FILE_NAME = "slotmap.json"
FORMAT = 1


class SlotMap:
    __slots__ = ("owners", "shard_count")

    def __init__(self, owners: list, shard_count: int):
        self.owners = owners  # slot -> shard, a list indexed by slot
        self.shard_count = shard_count

    @classmethod
    def even(cls, shard_count: int) -> "SlotMap":
        """Contiguous, equal ranges: slot s goes to shard s * n // 4096."""
        return cls([s * shard_count // SLOT_COUNT for s in range(SLOT_COUNT)], shard_count)

    def ranges(self) -> list:
        out = []
        owners = self.owners
        start = 0
        for slot in range(1, SLOT_COUNT + 1):
            if slot == SLOT_COUNT or owners[slot] != owners[start]:
                out.append([start, slot - 1, owners[start]])
                start = slot
        return out

    @classmethod
    def from_ranges(cls, ranges, shard_count: int) -> "SlotMap":
        return cls(_expand(ranges, shard_count, "slot map"), shard_count)

    def to_json(self) -> dict:
        return {"format": FORMAT, "slot_count": SLOT_COUNT, "shard_count": self.shard_count,
                "ranges": self.ranges()}

    # -- the file ------------------------------------------------------------------

    @staticmethod
    def path(data_dir: str) -> str:
        return os.path.join(data_dir, FILE_NAME)

    @classmethod
    def read(cls, data_dir: str) -> "SlotMap | None":
        path = cls.path(data_dir)
        try:
            raw, _ = read_data(path)  # non-blocking: a FIFO here must not stall the start
        except FileNotFoundError:
            return None
        except NotRegularFile as exc:
            raise _damaged(path, f"it is {exc.kind}, not a regular file") from None
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise _damaged(path, f"not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise _damaged(path, f"unknown format {doc.get('format') if isinstance(doc, dict) else doc!r}")
        if doc.get("slot_count") != SLOT_COUNT:
            raise _damaged(path, f"slot_count is {doc.get('slot_count')!r}, not {SLOT_COUNT}")
        n = doc.get("shard_count")
        if type(n) is not int or not 1 <= n <= 1024:
            raise _damaged(path, f"shard_count is {n!r}")
        return cls(_expand(doc.get("ranges"), n, path), n)

    @classmethod
    def peek_shard_count(cls, data_dir: str) -> int | None:
        m = cls.read(data_dir)
        return None if m is None else m.shard_count

    def save(self, data_dir: str) -> None:
        replace_durably(self.path(data_dir),
                        json.dumps(self.to_json(), indent=1).encode("utf-8"))

    @classmethod
    def load_or_create(cls, data_dir: str, shard_count: int, count_is_auto: bool,
                       save: bool = True) -> "SlotMap":
        """The persisted map; a new even one (saved, unless `save` is False: the caller
        saves it once the cluster serves) for a new data directory.

        The persisted shard count wins over "auto"; a config that asks for a
        different number explicitly is refused rather than silently routing
        runs to shards that do not hold them.
        """
        existing = cls.read(data_dir)
        if existing is None:
            found = _check_no_stores(data_dir, shard_count, count_is_auto)
            if found and count_is_auto:
                shard_count = max(found) + 1  # as the stores were made (an even map)
            m = cls.even(shard_count)
            if save:
                m.save(data_dir)
            return m
        if existing.shard_count != shard_count and not count_is_auto:
            from inmem.coordinator.config import ConfigError
            raise ConfigError(
                f"{cls.path(data_dir)} records {existing.shard_count} shards but the config asks "
                f"for {shard_count}; moving runs between shards is not supported yet, so start "
                f"with shards = {existing.shard_count} (or \"auto\"), or use a new data directory")
        return existing


def _holds_records(store: str) -> bool:
    """Whether the store at `store` has a snapshot or a WAL record (a store a start made
    and then left, its segment preallocated and empty, holds none)."""
    snaps = os.path.join(store, "snapshots")
    if os.path.isdir(snaps) and any(n.endswith(".snap") for n in os.listdir(snaps)):
        return True
    wal = os.path.join(store, "wal")
    if not os.path.isdir(wal):
        return False
    for name in os.listdir(wal):
        if not name.endswith(".wal"):
            continue
        if name.strip("0") != ".wal":
            return True  # named after a record past the first: records came before it
        try:
            fd = open_regular(os.path.join(wal, name))  # never waits on a FIFO
            try:
                if os.pread(fd, 8, 0).strip(b"\0"):
                    return True  # a record's header (an empty segment reads as zeros)
            finally:
                os.close(fd)
        except OSError:
            return True  # cannot tell: count it, and refuse rather than guess
    return False


def _shard_stores(data_dir: str) -> set:
    """The shard numbers whose store directories (`shard-N/`) hold records."""
    found = set()
    try:
        names = os.listdir(data_dir)
    except FileNotFoundError:
        return found
    for name in names:
        if name.startswith("shard-") and name[6:].isdigit():
            if _holds_records(os.path.join(data_dir, name)):
                found.add(int(name[6:]))
    return found


def _check_no_stores(data_dir: str, shard_count: int, count_is_auto: bool) -> set:
    """Before a new map is made: refuse a directory whose stores it would not route to;
    the shard numbers whose stores hold records (`_shard_stores`).

    Without slotmap.json a directory is new, unless it holds shard stores (the
    file was lost, say, in a restore that left it out) or an embedded store's
    WAL: then a map for another number of shards, or a cluster over an
    embedded store, would serve runs from stores that do not hold them.
    """
    from inmem.coordinator.config import ConfigError
    if _holds_records(data_dir):
        raise ConfigError(f"{data_dir} holds an embedded store (inmem.open), not a cluster's "
                          "data; give the cluster a directory of its own")
    found = _shard_stores(data_dir)
    if found and not count_is_auto and max(found) + 1 != shard_count:
        raise ConfigError(
            f"{data_dir} holds the stores of shards {sorted(found)} but no slotmap.json; "
            f"start with shards = {max(found) + 1} (the even map they were made with), or "
            "restore slotmap.json")
    return found


def _expand(ranges, shard_count: int, where: str) -> list:
    if not isinstance(ranges, list):
        raise _damaged(where, "ranges is not a list")
    owners = []
    for item in ranges:
        if (not isinstance(item, list) or len(item) != 3
                or not all(type(x) is int for x in item)):
            raise _damaged(where, f"range {item!r} is not [first, last, shard]")
        first, last, shard = item
        if first != len(owners) or last < first or last >= SLOT_COUNT:
            raise _damaged(where, f"range {item!r} leaves a gap or overlaps")
        if not 0 <= shard < shard_count:
            raise _damaged(where, f"range {item!r} names a shard outside 0..{shard_count - 1}")
        owners.extend([shard] * (last - first + 1))
    if len(owners) != SLOT_COUNT:
        raise _damaged(where, f"ranges cover {len(owners)} slots, not {SLOT_COUNT}")
    return owners


def _damaged(where: str, why: str) -> CorruptionError:
    return CorruptionError(f"{where} is damaged: {why}. It decides which shard holds each run; "
                           "restore it from a backup rather than recreating it", path=where)


__all__ = ["SlotMap", "FILE_NAME"]
