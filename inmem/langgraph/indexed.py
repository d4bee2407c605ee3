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
that head (another writer, a deleted thread, a copy). Then, and on the
first put of a run id to a namespace, the index entry is written again.
"""

from __future__ import annotations

#: (run id, thread run, namespace) places a saver remembers having indexed
INDEXED_MAX = 4096


class IndexedHeads:
    """(LangGraph run id, thread run, namespace) -> the head version of this saver's last
    put of that run id there, once indexed; the first remembered forgotten past
    INDEXED_MAX. Safe to share between threads.

    A version is kept in a cell of its own, a list of one int, which the put's
    hot path reads (`cell`) and moves on in place: a dict lookup and a list
    store, no call.
    """

    def __init__(self, limit: int = INDEXED_MAX) -> None:
        # One saver serves many threads (and the worker threads of its async
        # methods), without a lock: every change is one dict or list operation,
        # whole under the interpreter lock, and `forget` walks a copy of the keys
        # (a dict walked while another thread adds to it raises RuntimeError). A
        # lock here cost every put more than the rest of this bookkeeping.
        self._heads: dict = {}
        self._limit = limit
        #: `cell(place)`: the [head version] remembered for a place, or None
        self.cell = self._heads.get

    def remember(self, place, version: int) -> None:
        """Remember `place` as indexed, its head at `version` after this saver's put."""
        heads = self._heads
        heads[place] = [version]
        if len(heads) > self._limit:
            try:  # the first remembered: a dict keeps the order of insertion
                heads.pop(next(iter(heads)), None)
            except (StopIteration, RuntimeError):  # emptied or changed meanwhile
                pass

    def forget(self, which) -> None:
        """Forget the places for which `which(place)` is true."""
        heads = self._heads
        for place in [p for p in list(heads) if which(p)]:
            heads.pop(place, None)
