"""The runs of a shard in the order `runs.list` gives them, which its pages read from.

`runs.list(after=..., limit=...)` asks for the runs after a place in the order
(created_at, then run_id), at most so many: without an order each page
looked at, and sorted, every run of the shard, so paging through N runs cost
N²/limit. `RunOrder` holds the (created_at, run_id) of the runs sorted, so a
page finds where it starts by a bisection and reads on from there.

It is built by the first page asked for, not before, and the paths that add
or remove runs never touch it (a live begin or delete, a WAL record or a
snapshot read back): a begin costs what it cost without it. Instead the
order catches up at the next page, from two facts about the table of runs
(a `dict`):

- a run is added to the table as a new key, so the runs added since the
  order last caught up are the ones after the run that was last then:
  `reversed(table)` reaches them without walking the others;
- a deleted run leaves its place in the order behind: a page steps over a
  place whose run is gone or is another run of the same id (created again),
  and the order starts again from the table once such places are as many as
  the runs.

When the run that was last is gone (deleted since), the order starts again
from the table, as it does the first time.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import islice
from typing import Iterator

#: places of deleted runs kept before the order starts again from the table, at least
STALE_SLACK = 1024


class RunOrder:
    """(created_at, run_id) of a shard's runs, sorted; see the module docstring."""

    __slots__ = ("keys", "last")

    def __init__(self, runs: dict):
        self.keys: list = []
        #: the run last added to the table when the order caught up (None: empty)
        self.last = None
        self._rebuild(runs)

    def _rebuild(self, runs: dict) -> None:
        self.keys = sorted((r.created_at, r.run_id) for r in runs.values())
        self.last = runs[next(reversed(runs))] if runs else None

    def catch_up(self, runs: dict) -> None:
        """Take in the runs added to `runs` since the last call (or start again)."""
        last = self.last
        if runs and runs[next(reversed(runs))] is not last:
            if last is None or runs.get(last.run_id) is not last:
                self._rebuild(runs)  # the boundary is gone: no way to tell what is new
                return
            keys = self.keys
            for run_id in reversed(runs):
                r = runs[run_id]
                if r is last:
                    break
                key = (r.created_at, r.run_id)
                i = bisect_left(keys, key)
                # Created again in the same µs as a deleted run of that id: one place.
                if i == len(keys) or keys[i] != key:
                    keys.insert(i, key)
            self.last = runs[next(reversed(runs))]
        elif not runs:
            self.last = None
        if len(self.keys) - len(runs) > max(STALE_SLACK, len(runs)):
            self._rebuild(runs)

    def after(self, runs: dict, start: tuple | None) -> Iterator:
        """The runs of `runs` after place `start` (None: from the first), in order."""
        keys = self.keys
        at = 0 if start is None else bisect_right(keys, start)
        get = runs.get
        for created_at, run_id in islice(keys, at, None):
            r = get(run_id)
            if r is not None and r.created_at == created_at:
                yield r


__all__ = ["RunOrder", "STALE_SLACK"]
