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

import threading
from collections import OrderedDict

#: (run id, thread run, namespace) places a saver remembers having indexed
INDEXED_MAX = 4096


class IndexedHeads:
    """(LangGraph run id, thread run, namespace) -> the head version of this saver's last
    put of that run id there, once indexed; the oldest forgotten past INDEXED_MAX. Safe
    to share between threads."""

    def __init__(self, limit: int = INDEXED_MAX) -> None:
        self._heads: OrderedDict = OrderedDict()
        self._limit = limit
        #: one saver serves many threads (and the worker threads of its async
        #: methods), and a dict walked while another thread adds to it raises
        #: RuntimeError
        self._lock = threading.Lock()
        #: the head version remembered for a place, or None (the put's hot path:
        #: a plain dict lookup)
        self.last = self._heads.get

    def remember(self, place, version: int) -> None:
        """Remember `place` as indexed, its head at `version` after this saver's put."""
        with self._lock:
            self._heads[place] = version
            if len(self._heads) > self._limit:
                self._heads.popitem(last=False)

    def forget(self, which) -> None:
        """Forget the places for which `which(place)` is true."""
        with self._lock:
            for place in [p for p in self._heads if which(p)]:
                del self._heads[place]
