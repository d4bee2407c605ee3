"""Where a trace stands in its run's record order, for pages of traces that start after one.

`traces.by_type`, `by_tag` and `roots` page with `after=` a trace id: the page
starts after that trace's place in record order. The run's indexes by type,
by tag and of roots are lists of trace ids in record order, so a page is a
bisection of one of them by place, then a slice: about the page, not the run.
A trace's place is its position in the run's `trace_order`; `TracePlaces`
maps trace id -> position for one run, as nothing else does.

It is built by the first page that starts after a trace, not before, and
recording a trace never touches it: it catches up at the next such page,
with the traces recorded since (the tail of `trace_order` past what it
covers). A trace leaves a run only when the failed transaction that recorded
it takes it back, the last of `trace_order`, inside the commit, before any
page can have seen it. Should the order change under the map all the same,
each place read from the map is checked against `trace_order` (one
comparison), and a map that does not agree is built again from the order.

The engine keeps one per run paged this way (`Places`), tied to the run's
table object: a run deleted, or read back from a WAL or a snapshot, is a new
object and gets a new map; the maps of deleted runs are dropped as they
accumulate.
"""

from __future__ import annotations

from bisect import bisect_right

#: maps kept at least, before those of deleted runs are looked for and dropped
SWEEP_AT = 64


class Stale(Exception):
    """A place read from the map is not the trace's place any more."""


class TracePlaces:
    """trace id -> its position in `run.trace_order`, for one run; see the module docstring."""

    __slots__ = ("run", "place", "covered", "last")

    def __init__(self, run):
        self.run = run
        self.place: dict = {}
        #: positions of trace_order the map holds, from 0
        self.covered = 0
        #: the trace id at position covered - 1 when the map last caught up
        self.last = None
        self._rebuild()

    def _rebuild(self) -> None:
        order = self.run.trace_order
        self.place = dict(zip(order, range(len(order))))
        self.covered = len(order)
        self.last = order[-1] if order else None

    def catch_up(self) -> None:
        """Take in the traces recorded since the last call (or build again)."""
        order = self.run.trace_order
        n = self.covered
        if n == len(order) and (n == 0 or order[n - 1] == self.last):
            return
        if n > len(order) or (n and order[n - 1] != self.last):
            self._rebuild()  # a transaction took traces back: the tail is not what it was
            return
        self.place.update(zip(order[n:], range(n, len(order))))
        self.covered = len(order)
        self.last = order[-1]

    def of(self, trace_id: str) -> int:
        """The place of a trace of the run; Stale when the map does not agree."""
        p = self.place.get(trace_id)
        order = self.run.trace_order
        if p is None or p >= len(order) or order[p] != trace_id:
            raise Stale(trace_id)
        return p

    def start(self, ids: list, after: str) -> int:
        """The index in `ids` (trace ids in record order) of the first one recorded after
        trace `after` (a trace of the run: the caller checks); O(log len(ids))."""
        for attempt in (0, 1):
            try:
                return bisect_right(ids, self.of(after), key=self.of)
            except Stale:
                if attempt:
                    raise
                self._rebuild()
        raise AssertionError("unreachable")


class Places:
    """The `TracePlaces` of an engine's runs, by run id; see the module docstring."""

    __slots__ = ("by_run", "sweep_at")

    def __init__(self):
        self.by_run: dict = {}
        self.sweep_at = SWEEP_AT

    def of_run(self, runs: dict, r) -> TracePlaces:
        """The places of run `r` (the table object `runs` holds), caught up."""
        places = self.by_run.get(r.run_id)
        if places is None or places.run is not r:
            places = self.by_run[r.run_id] = TracePlaces(r)
            if len(self.by_run) >= self.sweep_at:
                self._sweep(runs)
        else:
            places.catch_up()
        return places

    def _sweep(self, runs: dict) -> None:
        # Amortised: a sweep is due only once the maps kept have doubled since the last.
        get = runs.get
        self.by_run = {rid: p for rid, p in self.by_run.items() if get(rid) is p.run}
        self.sweep_at = max(SWEEP_AT, 2 * len(self.by_run))


__all__ = ["Places", "TracePlaces", "Stale", "SWEEP_AT"]
