"""Search operations of a shard: the engine's side of a cluster-wide BM25 search.

`SearchOps` is one of the parts the `Engine` is assembled from. The index
itself (`shard.search_index`) is built from the runs' journals and never
stored (after a recovery it is rebuilt once the shard is ready); these
operations bring it up to date within a time budget, report
this shard's term statistics, answer a query scored with the statistics of
every shard, and cut snippets from the matched entries.
"""

from __future__ import annotations

import time
from typing import Callable

from inmem.errors import InvalidValue

from .effects import EV_PAYLOAD, EV_TYPE, TR_DATA, TR_TYPE
from .entries import entry_value
from .runs import RunData
from .search_index import PRIMITIVES, SearchIndex
from .search_text import snippet, snippet_texts


class SearchOps:
    """The search operations of the engine."""

    runs: dict[str, RunData]
    clock: Callable[[], int]
    index: SearchIndex

    def search_stats(self, terms: list[str], budget_ms: float | None = None) -> list:
        """[docs, total length, {term: df}, index complete] of this shard."""
        terms = _check_terms(terms)
        complete = self.index.catch_up_for_search(self.runs, self.clock(), _deadline(budget_ms))
        return [*self.index.stats(terms), complete]

    def index_step(self, max_ms: float) -> bool:
        """Background work: bring the search index up to date for at most `max_ms`."""
        return self.index.catch_up(self.runs, self.clock(), time.monotonic() + max_ms / 1000)

    def index_rebuilding(self) -> bool:
        """Whether the search index has work its background slices do back to back.

        A rebuild after a recovery, or a large text value under way (indexed in
        steps: left to the upkeep's few milliseconds every round, a 15 MiB text
        took minutes). The shard's info reports the index incomplete meanwhile.
        """
        return self.index.rebuilding or self.index.long_work()

    def search_query(self, terms: list[str], n_docs: int, total_len: int, dfs: dict,
                     run: str | None = None, primitives: list[str] | None = None, top: int = 10,
                     budget_ms: float | None = None) -> list:
        """[[primitive, run, ref, score, snippet], ...], match count, budget exhausted, index complete.

        Budget exhausted: `budget_ms` ran out (catching up or scoring). Index
        complete: the index held every committed write when it was queried.
        """
        terms = _check_terms(terms)
        if primitives is not None:
            if type(primitives) not in (list, tuple) or not set(primitives) <= set(PRIMITIVES):
                raise InvalidValue(f"primitives must be a subset of {PRIMITIVES}")
        if type(top) is not int or top < 0:
            raise InvalidValue("top must be an int >= 0")
        if type(dfs) is not dict or type(n_docs) is not int or type(total_len) is not int:
            raise InvalidValue("search statistics are malformed")
        deadline = _deadline(budget_ms)
        complete = self.index.catch_up_for_search(self.runs, self.clock(), deadline)
        hits, matches, exhausted = self.index.query(terms, n_docs, total_len, dfs, run, primitives,
                                                    top, deadline)
        exhausted = exhausted or (deadline is not None and not complete)
        out = [[prim, run_id, ref, score, snippet(self._doc_texts(prim, run_id, ref), terms)]
               for score, prim, run_id, ref in hits]
        return [out, matches, exhausted, complete]

    def _doc_texts(self, prim: str, run_id: str, ref) -> list[str]:
        """The texts of one matched document, for its snippet (their start, when long)."""
        r = self.runs.get(run_id)
        if r is None:
            return []
        if prim == "runs":
            return snippet_texts([t for t in (r.name, *r.tags) if t])
        if prim == "events":
            e = r.events[ref]
            return snippet_texts([e[EV_TYPE], e[EV_PAYLOAD]])
        if prim == "traces":
            e = r.traces[ref]
            return snippet_texts([e[TR_TYPE], e[TR_DATA]])
        table = {"kv": r.kv, "json": r.json, "state": r.state}[prim]
        e = table.get(ref)
        data = None if e is None else entry_value(e)
        return [] if data is None else snippet_texts([data])


def _deadline(budget_ms) -> float | None:
    if budget_ms is None:
        return None
    if type(budget_ms) not in (int, float) or not budget_ms >= 0:  # (nan too)
        raise InvalidValue("budget_ms must be a number >= 0")
    try:
        return time.monotonic() + budget_ms / 1000
    except OverflowError:  # an int past any float: no deadline to speak of
        return None


def _check_terms(terms) -> list[str]:
    if type(terms) not in (list, tuple) or not all(type(t) is str for t in terms):
        raise InvalidValue("search terms must be a list of str")
    return list(terms)
