"""The sorted order of a run's KV keys, which listings (`kv.keys`, `kv.items`) page through.

A listing asks for the live keys of a run that start with a prefix, after a
key, at most so many: without an order each call looked at every key of the
run. `KeyOrder` holds the keys of one KV table sorted, in chunks of about
`CHUNK` keys (a list of sorted lists and the last key of each), so a listing
finds where it starts by two bisections and reads on from there: about
O(log n + the keys it looks at), and a key is put in its place with a
bisection and a short list insert.

The order is built by a run's first listing, not before (and kept only by a
run of KEPT_FROM keys or more), and the write paths never touch it: a put
costs exactly what it cost without it. Instead the order catches up at the
next listing, from two facts about the table (a `dict`):

- keys are added to it by a put of a new key, whatever the path (one put, a
  series, `put_many`, a WAL record or a snapshot read back). A delete
  leaves an entry that says so, and an expired entry stays until
  overwritten or reclaimed: both stay in the order meanwhile and a listing
  skips them;
- a dict keeps its keys in the order they were added, so the keys added
  since the order last caught up are the last `len(table) - synced` keys,
  which `reversed(table)` reaches without walking the others.

The two paths that take a key out of the table say so: the sweep of dead
entries (`shard.dead_keys`) reclaiming one (`drop`: the key leaves the order
at once, a bisection and a short list delete), and a transaction taking back
a put of a new key (`forget`). Anything the order cannot account for (a
table smaller than it knows, or whose key before the new ones is not the
last one it saw) makes it start again from the table: a listing may then be
slow, never wrong.

A listing steps over the deleted and expired keys in its range (by slices, in
C-level loops: `shard.kv`), so it costs what it returns plus the dead keys
between them. The first listing of a run sorts its keys (about what a whole
listing cost before); the order then takes a pointer per key.

A listing changes the order, so listings need the serialisation writes have
(the worker's single loop, the embedded store's lock), not only the GIL.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import chain, islice

#: a run keeps its order once it has this many keys (smaller ones sort theirs per listing)
KEPT_FROM = 256
#: keys per chunk when the order is built; a chunk that grows to twice this splits
CHUNK = 512
#: when more keys than 1 / REBUILD_SHARE of the table are new, merge them all at once
REBUILD_SHARE = 8

_NO_KEY = object()
#: `last` when the key it was left the table: found again at the next catch-up
_UNKNOWN = object()


class KeyOrder:
    """The keys of one KV table, sorted; `catch_up` before reading it."""

    __slots__ = ("table", "chunks", "maxes", "synced", "last")

    def __init__(self, table: dict):
        #: the table this order is of (a run's `kv`)
        self.table = table
        self._fill(sorted(table))

    def _fill(self, keys: list) -> None:
        """Hold `keys` (sorted, every key of the table) as the order."""
        self.chunks = [keys[i:i + CHUNK] for i in range(0, len(keys), CHUNK)]
        self.maxes = [c[-1] for c in self.chunks]
        #: how many of the table's keys, the first in its order, the order holds
        self.synced = len(self.table)
        #: the last of those keys (_NO_KEY: none)
        self.last = next(reversed(self.table), _NO_KEY)

    def catch_up(self) -> None:
        """Take in the keys added to the table since the last call."""
        table = self.table
        n = len(table)
        new = n - self.synced
        if self.last is _UNKNOWN and new >= 0:
            # The synced keys are still the table's first ones (a key leaves the order
            # as it leaves the table): the last of them is `new` keys from the end.
            self.last = next(islice(reversed(table), new, None), _NO_KEY)
        if new == 0 and (n == 0 or next(reversed(table)) == self.last):
            return
        if new < 0:
            self._fill(sorted(table))
            return
        tail = list(islice(reversed(table), new + 1))
        if self.synced and (len(tail) <= new or tail[new] != self.last):
            self._fill(sorted(table))  # not only additions: start again from the table
            return
        added = tail[:new]
        if new * REBUILD_SHARE > n:
            # Many new keys: one merge of two sorted runs (timsort finds them) beats
            # putting each in its place.
            keys = list(chain.from_iterable(self.chunks))
            added.sort()
            keys += added
            keys.sort()
            self._fill(keys)
            return
        insert = self._insert
        for key in reversed(added):
            insert(key)
        self.synced = n
        self.last = tail[0]

    def _insert(self, key: str) -> None:
        maxes, chunks = self.maxes, self.chunks
        if not maxes:
            chunks.append([key])
            maxes.append(key)
            return
        i = bisect_left(maxes, key)
        if i == len(maxes):  # after every key: the end of the last chunk
            i -= 1
            chunk = chunks[i]
            chunk.append(key)
            maxes[i] = key
        else:
            chunk = chunks[i]
            j = bisect_left(chunk, key)
            if j < len(chunk) and chunk[j] == key:
                return
            chunk.insert(j, key)
        if len(chunk) >= 2 * CHUNK:
            chunks[i:i + 1] = [chunk[:CHUNK], chunk[CHUNK:]]
            maxes[i:i + 1] = [chunk[CHUNK - 1], chunk[-1]]

    def discard(self, key: str) -> None:
        """`key` left the table: take it out of the order (nothing when it never was in)."""
        maxes, chunks = self.maxes, self.chunks
        i = bisect_left(maxes, key)
        if i == len(maxes):
            return
        chunk = chunks[i]
        j = bisect_left(chunk, key)
        if j == len(chunk) or chunk[j] != key:
            return  # added after the order last caught up: the table's tail, not synced
        del chunk[j]
        if not chunk:
            del chunks[i]
            del maxes[i]
        elif j == len(chunk):
            maxes[i] = chunk[-1]
        self.synced -= 1
        if key == self.last:
            self.last = _UNKNOWN

    def holds(self, key: str) -> bool:
        """Whether `key` is in the order."""
        i = bisect_left(self.maxes, key)
        if i == len(self.maxes):
            return False
        chunk = self.chunks[i]
        j = bisect_left(chunk, key)
        return j < len(chunk) and chunk[j] == key

    def find(self, start: str, inclusive: bool) -> tuple:
        """Where the keys from `start` on (after it when not `inclusive`) begin, for `take`."""
        find = bisect_left if inclusive else bisect_right
        i = find(self.maxes, start)
        return (i, 0) if i == len(self.maxes) else (i, find(self.chunks[i], start))

    def take(self, place: tuple, size: int) -> tuple:
        """(the next keys from `place` in order, at most `size` of them; the place after them).

        No keys: the end. Fewer than `size` need not be the end: a slice stays
        within one chunk.
        """
        i, j = place
        chunks = self.chunks
        if i >= len(chunks):
            return [], place
        chunk = chunks[i]
        keys = chunk[j:j + size]
        j += len(keys)
        return keys, ((i + 1, 0) if j >= len(chunk) else (i, j))


def order_of(r) -> KeyOrder:
    """The sorted order of run `r`'s KV keys, up to date (built on first use).

    A run of fewer than KEPT_FROM keys gets one for the listing only: sorting
    so few costs about what catching up would, and its run does not keep it.
    """
    order = r.kv_order
    if order is None or order.table is not r.kv:
        order = KeyOrder(r.kv)
        if len(r.kv) >= KEPT_FROM:
            r.kv_order = order
    else:
        order.catch_up()
    return order


def drop(r, key: str) -> None:
    """Run `r`'s KV table no longer holds `key`: a dead entry was reclaimed."""
    order = r.kv_order
    if order is not None:
        order.discard(key)


def forget(r, key: str) -> None:
    """Run `r`'s KV table no longer holds `key` (a put of a new key taken back)."""
    order = r.kv_order
    if order is not None and order.holds(key):
        # Never the case today (a transaction runs whole, with no listing inside
        # it, so the key came after the order last caught up): start again.
        r.kv_order = None
