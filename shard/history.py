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
replay that needs them raises HistoryNotKept); in a durable store they live
on disk (`shard.disk_history`).

The in-memory limit, `history=`: "full" (keep everything, the default), a
count N (keep at least the last N entries of each run; older ones go in
batches once a run holds 2N + 64, so dropping costs nothing per write) or
"none" (keep only what the search index has not yet read). The engine trims,
because the search index must read an entry before it may go.
"""

from __future__ import annotations

import sys

from inmem.errors import HistoryNotKept, InvalidOption

from .effects import JS_DEL, JS_PUT, KV_DEL, KV_PUT, ST_DEL, ST_PUT
from .entries import unpack_entry

#: the codes held as (code, key, entry) items
KEYED = frozenset((KV_PUT, KV_DEL, ST_PUT, ST_DEL, JS_PUT, JS_DEL))
_KV = frozenset((KV_PUT, KV_DEL))
_NO_LIMIT = sys.maxsize


def effect_of(item: tuple) -> tuple:
    """The effect tuple of a history item."""
    if len(item) == 3 and item[0] in KEYED:
        code, key, e = item
        value, version, ts, expires = unpack_entry(e)
        if code in _KV:
            return (code, key, value, version, ts, expires)
        return (code, key, value, version, ts)
    return item


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

    __slots__ = ("items", "base", "limit", "trim_at", "run_id")

    def __init__(self, run_id: str, first: tuple, limit: int | None = None):
        self.run_id = run_id
        self.items: list = [first]
        self.base = 0
        self.limit = limit
        #: trim once this many items are held (sys.maxsize: never)
        self.trim_at = _NO_LIMIT if limit is None else 2 * limit + 64

    # -- writing -------------------------------------------------------------------

    def append(self, item: tuple) -> None:
        self.items.append(item)

    def extend(self, items) -> None:
        self.items.extend(items)

    def truncate(self, length: int) -> None:
        """Cut every position from `length` on (a transaction taken back)."""
        del self.items[length - self.base:]

    def trim(self, keep_from: int) -> None:
        """Drop the positions before `keep_from` (within the limit: the caller indexed them)."""
        keep_from = min(keep_from, len(self), len(self) - (self.limit or 0))
        if keep_from > self.base:
            del self.items[:keep_from - self.base]
            self.base = keep_from

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
            return self._earlier(i, i + 1)[0]
        return effect_of(self.items[i - self.base])

    def __iter__(self):
        return iter(self.effects(0, len(self)))

    def effects(self, start: int, stop: int) -> list:
        """The effect tuples at positions start..stop-1."""
        out = []
        if start < self.base:
            out = self._earlier(start, min(stop, self.base))
            start = self.base
        if start < stop:
            out.extend(map(effect_of, self.items[start - self.base:stop - self.base]))
        return out

    def raw(self, start: int, stop: int) -> list:
        """Positions start..stop-1 as held: items in memory, effect tuples from disk."""
        if start < self.base:
            out = self._earlier(start, min(stop, self.base))
            out.extend(self.items[:stop - self.base])
            return out
        return self.items[start - self.base:stop - self.base]

    def _earlier(self, start: int, stop: int) -> list:
        raise HistoryNotKept(
            f"run {self.run_id!r} kept only its last {len(self.items)} history entries (the "
            f"first {self.base} were dropped under this store's history= limit), so it cannot "
            f"be replayed or diffed; open the store with history='full' to keep it",
            run_id=self.run_id)

    def kept(self) -> int:
        """Entries held in memory."""
        return len(self.items)
