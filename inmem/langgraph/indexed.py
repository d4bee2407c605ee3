"""The saver's memory of which LangGraph run ids it has indexed on which threads.

`delete_for_runs` finds the threads holding a LangGraph run's checkpoints
through the index run (`<prefix>runs`, see `keys.py`): one JSON document per
run id listing its threads. Writing that entry at every put would cost each
put a second operation, on another shard; a saver remembers instead where
it has indexed a run id, and a put it can trust the index for sends its
checkpoint alone.

That memory is of this process, and another saver (another process, or
another object over the same database) may delete the index entry: its
`delete_for_runs` of the run. A put trusting a stale memory would leave its
checkpoint out of the index, and a later `delete_for_runs` would not find
it. So what is remembered is checked by what every put already gets back:
for each (run id, thread run, namespace) the version `kv.put_many` gave the
namespace's head at this saver's last put of that run there. A
`delete_for_runs` of the run that found the thread has moved or deleted that
head (it was that run's checkpoint), so the next put's head version is not
one more than the one remembered; neither is it after any other write to
that head (another writer, a copy). Then, and on the first put of a run id
to a namespace, the index entry is written again.

A thread deleted and made again (by this saver's put or another's) starts
its heads' versions over, and a head version could then be one more than the
one remembered from before: the memory would stand for an entry another
saver's `delete_for_runs` took away before the thread was deleted. So each
saver also puts a mark of its own in a thread with every checkpoint of a run
id (`mark_key`, a random name: `saver/<hex>`, an empty value), and remembers
its version per thread: no one else writes it, so it is one more than the
version remembered while the thread is the one this saver knew, and starts
over at 1 in a thread made again. A head whose version agrees, in a thread
whose mark agrees, is trusted; anything else writes the entry again.

How many marks a thread holds. A mark stands for one memory, so every saver
over one database object (and prefix) in a process shares one memory and one
mark (`shared_heads`): a server that makes an `InmemSaver(db)` per request
puts one mark in a thread, not one per request. Sharing is as safe as one
saver shared by threads (the memory is all this process's savers have written
over that database object), and no more than that: two database objects, or
two processes, keep a memory and a mark each. A put that writes a run's
index entry (`_put_plan`: the first put of a run id to a namespace, or one
the memory did not trust) also lists the thread's marks and, when there are
others than its own, reads when each was last put (the entries' timestamps,
against its own mark's, just put: one clock, the shard's) and deletes those
not put for `MARK_IDLE_S`: their memory is gone with its process, or has not
used the thread for an hour. The usual put writes its mark as before, an
empty value. Deleting a
live mark is safe: no one else writes it, so its owner's next put there gets
a version that is not one more than it remembers (a delete counts as a
write, and a reclaimed key starts above its old versions, see
`shard.dead_keys`), and it writes the index entry again, as after any doubt.
So a thread holds at most the marks of the database objects that put a run's
checkpoint in it within the hour before its last new run, and
`delete_thread` takes every one.
"""

from __future__ import annotations

import uuid
import weakref

from inmem.types import Versioned

#: threads a saver remembers indexed places in, and places per thread
INDEXED_MAX = 4096
#: a mark not put for this long is deleted by the next put that indexes a run in its thread
MARK_IDLE_S = 3600
#: the start of every mark's key
MARK_PREFIX = "saver/"


def idle_marks(keys: list, found: list, own) -> list:
    """The marks among `keys` (others' marks of a thread, `found` their kv.get_versioned)
    not put for MARK_IDLE_S before `own` (the get_versioned of this memory's mark, just
    put): the shard's timestamps, one clock. None when `own` was not found."""
    if type(own) is not Versioned:
        return []
    since = own.timestamp - MARK_IDLE_S * 1_000_000
    return [k for k, f in zip(keys, found) if type(f) is Versioned and f.timestamp < since]


#: database object -> {prefix: the IndexedHeads its savers share} (see the docstring)
_SHARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared_heads(db, prefix: str) -> "IndexedHeads":
    """The IndexedHeads (memory and mark) of every saver over `db` with `prefix` in this
    process; one of its own for a database that cannot be held weakly."""
    try:
        by_prefix = _SHARED.get(db)
        if by_prefix is None:
            by_prefix = _SHARED.setdefault(db, {})
    except TypeError:  # not weakly referable, or not hashable
        return IndexedHeads()
    heads = by_prefix.get(prefix)
    if heads is None:
        heads = by_prefix.setdefault(prefix, IndexedHeads())
    return heads


class _Thread:
    """What a saver remembers of one thread: its mark's version at the saver's last put
    there of a checkpoint with a run id, and (run id, namespace) -> [head version]."""

    __slots__ = ("mark", "cells")

    def __init__(self, mark: int) -> None:
        self.mark = mark
        self.cells: dict = {}


class IndexedHeads:
    """Thread run -> this saver's mark version there and, for each (LangGraph run id,
    namespace) it indexed there, the head version of its last put of that run id
    there; the first thread remembered forgotten past INDEXED_MAX. Safe to share
    between threads.

    A head version is kept in a cell of its own, a list of one int, which the
    put's hot path reads (`place`) and moves on in place: dict lookups and a
    list store, no call beyond the lookups.
    """

    def __init__(self, limit: int = INDEXED_MAX) -> None:
        # One saver serves many threads (and the worker threads of its async
        # methods), without a lock: every change is one dict, list or attribute
        # operation, whole under the interpreter lock, and `forget` walks copies
        # (a dict walked while another thread adds to it raises RuntimeError). A
        # lock here cost every put more than the rest of this bookkeeping.
        self._threads: dict = {}
        self._limit = limit
        #: this memory's mark in a thread (see the module docstring)
        self.mark_key = f"{MARK_PREFIX}{uuid.uuid4().hex}"

    def place(self, run_id: str, run: str, ns: str) -> tuple:
        """(the thread's memory or None, the [head version] of the place or None)."""
        thread = self._threads.get(run)
        if thread is None:
            return None, None
        return thread, thread.cells.get((run_id, ns))

    def cell(self, place):
        """The [head version] remembered for (run id, thread run, namespace), or None."""
        return self.place(*place)[1]

    def remember(self, place, version: int, mark: int) -> None:
        """Remember `place` as indexed, its head at `version` and this saver's mark in its
        thread at `mark` after this saver's put. A mark that is not one more than the
        one remembered may be a thread made again: what was remembered of it goes."""
        run_id, run, ns = place
        threads = self._threads
        thread = threads.get(run)
        if thread is None or thread.mark != mark - 1:
            thread = threads[run] = _Thread(mark)
            if len(threads) > self._limit:
                try:  # the first remembered: a dict keeps the order of insertion
                    threads.pop(next(iter(threads)), None)
                except (StopIteration, RuntimeError):  # emptied or changed meanwhile
                    pass
        thread.mark = mark
        cells = thread.cells
        if len(cells) >= self._limit:
            cells.clear()
        cells[(run_id, ns)] = [version]

    def forget(self, which) -> None:
        """Forget the places (run id, thread run, namespace) for which `which` is true."""
        for run, thread in list(self._threads.items()):
            cells = thread.cells
            for key in [k for k in list(cells) if which((k[0], run, k[1]))]:
                cells.pop(key, None)

    def forget_threads(self, runs) -> None:
        """Forget what was remembered of the thread runs `runs` (a set)."""
        threads = self._threads
        for run in [r for r in list(threads) if r in runs]:
            threads.pop(run, None)
