"""The saver's memory of which LangGraph run ids it has indexed on which threads.

`delete_for_runs` finds the threads holding a LangGraph run's checkpoints
through the index run (`<prefix>runs`, see `keys.py`): one JSON document per
run id listing its threads. Writing that entry at every put would cost each
put a second operation, on another shard; a saver remembers instead the
(run id, thread run) pairs it has indexed, and a put of a remembered pair
sends its checkpoint alone.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

#: (run id, thread run) pairs a saver remembers having indexed
INDEXED_MAX = 4096


class IndexedPairs:
    """(LangGraph run id, thread run) pairs indexed by this saver, the oldest forgotten
    past INDEXED_MAX. Safe to share between threads."""

    def __init__(self, limit: int = INDEXED_MAX) -> None:
        self._pairs: OrderedDict = OrderedDict()
        self._limit = limit
        #: one saver serves many threads (and the worker threads of its async
        #: methods), and a dict walked while another thread adds to it raises
        #: RuntimeError
        self._lock = threading.Lock()
        #: whether a pair is remembered (the put's hot path: a plain dict lookup)
        self.has = self._pairs.__contains__

    def remember(self, pair) -> None:
        """Remember `pair` as indexed."""
        with self._lock:
            self._pairs[pair] = None
            if len(self._pairs) > self._limit:
                self._pairs.popitem(last=False)

    def forget(self, which) -> None:
        """Forget the pairs for which `which(pair)` is true."""
        with self._lock:
            for pair in [p for p in self._pairs if which(p)]:
                del self._pairs[pair]
