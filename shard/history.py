"""A run's history (its journal): every effect committed to the run, in order, held compactly.

Replay, `at=` and diff fold a run's history (`shard.replay`), and the search
index follows it with a watermark. A position in it is a journal position:
the first effect (RUN_CREATE) is 0.

What is held for each position (an *item*):

- a keyed write (KV_*, ST_*, JS_*) is `(code, key, entry)`, where `entry` is
  the very `bytes` object the table holds for that key (`shard.entries`)
  until the key is written again: a write held once in history and state
  costs one value, not two;
- any other effect is its effect tuple, shared with the event list or trace
  table that also holds it.

`History[i]` and iteration give effect tuples (`shard.effects`), whichever
form an item is held in. `items` are the positions from `base` on: in an
in-memory store the earlier ones were dropped by its `history=` limit (and a
replay that needs them raises HistoryNotKept); in a durable store the
positions below `disk` are in WAL records, found through a few bytes of index
per record (`ext_*` arrays, see `shard.history_files`), and the items between
`base` and `disk` are held only until the search index has read them.

The in-memory limit, `history=`: "full" (keep everything, the default), a
count N (keep at least the last N entries of each run; older ones go in
batches once a run holds 2N + 64, so dropping costs nothing per write) or
"none" (keep only what the search index has not yet read). The engine trims,
because the search index must read an entry before it may go: what it has
not read stays past those bounds until a later trim (a large text indexed
in steps holds the entries after it; `shard.search_index.TRIM_HELD_MAX`).
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_right

from inmem.errors import CorruptionError, HistoryNotKept, InvalidOption

from .effects import effect_of

_NO_LIMIT = sys.maxsize


def history_limit(history) -> int | None:
    """The per-run count an in-memory store keeps for `history=` (None: all of it)."""
    if history is None or history == "full":
        return None
    if history == "none":
        return 0
    if type(history) is int and history >= 0:
        return history
    raise InvalidOption(f"history must be 'full', 'none' or a count >= 0 of entries kept per "
                        f"run, got {history!r}")


class History:
    """One run's journal: positions `base`.. in memory, earlier ones dropped or on disk."""

    __slots__ = ("items", "base", "disk", "limit", "trim_at", "run_id", "files", "ext_pos",
                 "ext_loc", "ext_skip", "mem", "unread")

    def __init__(self, run_id: str, first: tuple, limit: int | None = None, files=None):
        self.run_id = run_id
        self.items: list = [first]
        #: the search index's set of runs with entries it has not read, which every
        #: append names this run in (None until the index has seen the run once)
        self.unread: set | None = None
        self.base = 0
        #: positions below this are on disk (or in `mem`); `base` <= `disk`: the
        #: items between were written but are held until the search index read them
        self.disk = 0
        self.limit = limit
        #: trim once this many items are held (sys.maxsize: never)
        self.trim_at = _NO_LIMIT if limit is None else 2 * limit + 64
        #: a durable store's history files (shard.history_files); None: in memory only
        self.files = files
        #: the extents before `base`: where each starts in the journal, the place
        #: of its WAL record (-1: held in `mem`), and how many effects of this run
        #: the record holds before it
        self.ext_pos = array("q")
        self.ext_loc = array("q")
        self.ext_skip = array("l")
        #: extent start -> its effects, for stretches with no record to point at
        self.mem: dict | None = None

    # -- moving to disk ------------------------------------------------------------

    def to_disk(self, count: int, place: int, skip: int) -> None:
        """The next `count` positions are in the WAL record at `place`, after `skip` of this run's.

        The items stay held until `drop_held` lets them go. A stretch that
        goes on where the last extent's stretch of the same record ends (the
        run's groups in a record are interleaved with other runs') extends
        that extent: a reader of the record gets all of this run's effects in
        it in order, so one extent per run and record is enough.
        """
        n = len(self.ext_loc)
        if n and self.ext_loc[-1] == place and \
                self.ext_skip[-1] + self.disk - self.ext_pos[-1] == skip:
            self.disk += count
            return
        self.ext_pos.append(self.disk)
        self.ext_loc.append(place)
        self.ext_skip.append(skip)
        self.files.live[place >> 40] += 1
        self.disk += count

    def written(self, count: int, place: int, skip: int, indexed: int, held_at: int) -> bool:
        """`to_disk`, then let go of what the search index has read (`indexed`: its
        position in this run); False, without letting go, when more than `held_at`
        items are held (the caller decides what goes).

        One call for what every record does to each run in it (the commit path's share).
        """
        self.to_disk(count, place, skip)
        if len(self.items) > held_at:
            return False
        self.drop_held(indexed)
        return True

    def drop_held(self, upto: int) -> None:
        """Let go of the held items below position `upto` that are on disk."""
        upto = min(upto, self.disk)
        if upto > self.base:
            del self.items[:upto - self.base]
            self.base = upto

    def pin(self) -> None:
        """Keep every item not on disk as an in-memory extent: no record holds them."""
        end = self.base + len(self.items)
        if self.disk < end:
            if self.mem is None:
                self.mem = {}
            self.mem[self.disk] = self.effects(self.disk, end)
            self.ext_pos.append(self.disk)
            self.ext_loc.append(-1)
            self.ext_skip.append(0)
            self.disk = end
        self.drop_held(end)

    def release(self) -> None:
        """The run is gone: its files no longer need its extents."""
        if self.files is not None:
            live = self.files.live
            for place in self.ext_loc:
                if place >= 0:
                    live[place >> 40] -= 1
            if self.ext_loc:
                self.files.released += 1
            self.ext_loc = array("q")

    # -- writing -------------------------------------------------------------------

    def append(self, item: tuple) -> None:
        self.items.append(item)
        if self.unread is not None:
            self.unread.add(self.run_id)

    def extend(self, items) -> None:
        self.items.extend(items)
        if self.unread is not None:
            self.unread.add(self.run_id)

    def truncate(self, length: int) -> None:
        """Cut every position from `length` on (a transaction taken back)."""
        del self.items[length - self.base:]

    def trim(self, keep_from: int) -> None:
        """Drop the positions before `keep_from` (within the limit: the caller indexed them)."""
        keep_from = min(keep_from, len(self), len(self) - (self.limit or 0))
        if keep_from > self.base:
            del self.items[:keep_from - self.base]
            self.base = self.disk = keep_from

    # -- reading -------------------------------------------------------------------

    def __len__(self) -> int:
        return self.base + len(self.items)

    def __getitem__(self, i):
        if type(i) is slice:
            return [self[j] for j in range(*i.indices(len(self)))]
        n = self.base + len(self.items)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("history position out of range")
        if i < self.base:
            return effect_of(self._earlier(i, i + 1)[0])
        return effect_of(self.items[i - self.base])

    def __iter__(self):
        return iter(self.effects(0, len(self)))

    def effects(self, start: int, stop: int) -> list:
        """The effect tuples at positions start..stop-1."""
        out = []
        if start < self.base:
            out = list(map(effect_of, self._earlier(start, min(stop, self.base))))
            start = self.base
        if start < stop:
            out.extend(map(effect_of, self.items[start - self.base:stop - self.base]))
        return out

    def raw(self, start: int, stop: int) -> list:
        """Positions start..stop-1 as held: items in memory, effects as logged from disk.

        A keyed write is a `(code, key, entry)` item or an effect tuple (a
        record of WAL format 1, or a write logged in its field form)."""
        if start < self.base:
            out = self._earlier(start, min(stop, self.base))
            if stop > self.base:
                out.extend(self.items[:stop - self.base])
            return out
        return self.items[start - self.base:stop - self.base]

    def _earlier(self, start: int, stop: int) -> list:
        if self.files is None and self.mem is None:
            self._not_kept()
        pos, loc, skip = self.ext_pos, self.ext_loc, self.ext_skip
        n = len(pos)
        i = bisect_right(pos, start) - 1
        out: list = []
        while i < n and pos[i] < stop:
            first = pos[i]
            last = pos[i + 1] if i + 1 < n else self.disk
            lo = start - first if start > first else 0
            hi = stop - first if stop < last else last - first
            if loc[i] < 0:
                effs = self.mem[first]
                out.extend(effs[lo:hi] if lo or hi != len(effs) else effs)
            else:
                # Only the positions asked for: the search index reads one at a time.
                s = skip[i]
                effs = self.files.run_effects(loc[i], self.run_id)
                if len(effs) < s + last - first:
                    raise CorruptionError(
                        f"the history record of run {self.run_id!r} at place {loc[i]} holds "
                        f"{max(0, len(effs) - s)} of the {last - first} effects its index names "
                        f"(in {self.files.path_of(loc[i])})",
                        path=self.files.path_of(loc[i]), offset=loc[i] & ((1 << 40) - 1))
                out.extend(effs[s + lo:s + hi])
            i += 1
        return out

    def _not_kept(self):
        raise HistoryNotKept(
            f"run {self.run_id!r} kept only its last {len(self.items)} history entries (the "
            f"first {self.base} were dropped under this store's history= limit), so it cannot "
            f"be replayed or diffed; open the store with history='full' to keep it",
            run_id=self.run_id)

    def index_bytes(self) -> int:
        """What the on-disk part of the history costs on the heap, in bytes."""
        return sum(a.itemsize * len(a) for a in (self.ext_pos, self.ext_loc, self.ext_skip))

    def kept(self) -> int:
        """Entries held in memory."""
        return len(self.items)
