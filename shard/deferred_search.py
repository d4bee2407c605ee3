"""Searches without a time budget, answered once the index has caught up, without holding the shard.

A search with no `budget_ms` promises every write committed before it. When
the index is further behind than a short slice can make up (a large text
value is indexed in steps of about 4 KiB of text: a 15 MiB one takes
seconds), bringing it up to date inside the request held the shard's loop
all that time: every other client of the shard waited, and past the
coordinator's heartbeat timeout the shard was marked unresponsive (a remote
one down). A worker instead gives such a search one slice
(`SEARCH_INLINE_MS`); if the index is still behind, the request waits here
and the loop runs index slices between its turns, back to back while no
request is waiting, serving everyone else meanwhile. Once a slice finds the
index up to date, every waiting search runs, in arrival order, under that
same hold of the engine's lock, so each sees every write committed before it
arrived (and maybe some after, as a search that arrived later would).

While the index is rebuilt after a recovery nothing waits here: a search
then helps the rebuild for a moment and answers from what is indexed
(`index_complete=False`), as documented.
"""

from __future__ import annotations

from inmem.errors import InmemError

from .waiting import Waiting

#: how long a search without a budget may bring the index up to date inline
SEARCH_INLINE_MS = 5.0
#: one slice of index work while searches wait (ms)
SEARCH_SLICE_MS = 3.0
#: searches that may wait at once; past that one is answered inline, as all were
#: before (a client flooding a shard with them cannot grow its memory without bound)
WAITING_MAX = 4096
#: the search operations, and where each takes its `budget_ms`
BUDGET_ARG = {"search.stats": 1, "search.query": 7}


def waits_for_index(engine, op: str, args) -> bool:
    """Whether `op(*args)` is a search without a budget that the index cannot serve
    after one inline slice (call with the engine's lock held)."""
    at = BUDGET_ARG.get(op)
    if at is None or (len(args) > at and args[at] is not None):
        return False
    if engine.index.rebuilding:
        return False
    try:
        return not engine.index_step(SEARCH_INLINE_MS)
    except InmemError:
        return False  # a record the index cannot read: the search itself says so


class SearchWaits(Waiting):
    """The searches waiting for the index: (frames, op, args) in arrival order."""

    __slots__ = ()
    limit = WAITING_MAX

    def step(self, engine) -> list:
        """One slice of `engine`'s index work (hold its lock); once the index is up to
        date, the waiting searches to run now, under the same hold, else []."""
        if not self.queue:
            return []
        try:
            if not engine.index_step(SEARCH_SLICE_MS) and not engine.index.rebuilding:
                return []
        except InmemError:
            pass  # a record the index cannot read: each search says so itself, now
        ready, self.queue = self.queue, []
        return ready
