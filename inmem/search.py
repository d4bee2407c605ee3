"""Search across shards: gather collection statistics, then score with them everywhere.

Phase one asks every shard for its document count, total length and each
query term's document frequency (bringing its index up to date first, within
the budget); their sums are the global statistics.
Phase two sends those to every shard, which scores its own documents with
them and returns its best `offset + limit` hits; the merge keeps the order
(score descending, then primitive, run, ref). The result is what one index
holding every shard's documents would return.

While a shard's index is still being rebuilt after a recovery, that shard
answers from what it has indexed (after helping the rebuild along within
the budget) and the response says so: `index_complete` is false.
"""

from __future__ import annotations

import time

from inmem.shard.search_index import PRIMITIVES, ref_key, tokenize

from .errors import InvalidValue
from .types import Hit, SearchResponse


def _order(hit):
    return (-hit[3], hit[0], hit[1], ref_key(hit[2]))


def search(backend, query, run=None, primitives=None, limit=10, offset=0, budget_ms=None,
           t0=None):
    """The search through a backend whose `fanout` answers at once (the blocking one);
    `t0`: when the call began (`took_ms` and the budget count from it)."""
    if t0 is None:
        t0 = time.perf_counter()
    plan = SearchPlan(query, primitives, limit, offset, budget_ms, t0)
    if plan.done:
        return plan.empty()
    plan.add_stats(backend.fanout("search.stats", plan.stats_args()))
    return plan.merge(backend.fanout("search.query", plan.query_args(run)))


class SearchPlan:
    """One search's two phases as steps: checked arguments, the statistics, the merge.

    Both the blocking and the asyncio Database run these steps; only how they
    fan out to the shards differs.
    """

    def __init__(self, query, primitives, limit, offset, budget_ms, t0):
        self.t0 = t0
        if type(query) is not str:
            raise InvalidValue("query must be a str")
        if type(limit) is not int or limit < 0 or type(offset) is not int or offset < 0:
            raise InvalidValue("limit and offset must be ints >= 0")
        if primitives is not None:
            if (type(primitives) not in (list, tuple, set, frozenset)
                    or any(type(p) is not str for p in primitives)):
                raise InvalidValue(f"primitives must be a list of names (a subset of "
                                   f"{PRIMITIVES}) or None")
            primitives = sorted(set(primitives))
            unknown = set(primitives) - set(PRIMITIVES)
            if unknown:
                raise InvalidValue(f"unknown primitives {sorted(unknown)}; use a subset of "
                                   f"{PRIMITIVES}")
        self.primitives = primitives
        self.limit = limit
        self.offset = offset
        if budget_ms is not None:
            if type(budget_ms) not in (int, float) or not budget_ms >= 0:  # (nan too)
                raise InvalidValue("budget_ms must be a number >= 0")
            if budget_ms > 1e300:  # past any float (an int may be): no budget to speak of
                budget_ms = None
        self.budget_ms = budget_ms
        self.terms = list(dict.fromkeys(tokenize(query)))
        #: nothing to ask the shards: no terms (limit=0 still asks, for total_matches)
        self.done = not self.terms
        self.n_docs = self.total_len = 0
        self.dfs = dict.fromkeys(self.terms, 0)
        self.complete = True

    def empty(self) -> SearchResponse:
        return SearchResponse([], 0, False, (time.perf_counter() - self.t0) * 1000)

    def stats_args(self) -> tuple:
        return (self.terms, self.budget_ms)

    def add_stats(self, parts) -> None:
        """Sum the shards' statistics (phase one) into the global ones."""
        dfs = self.dfs
        for shard_n, shard_len, shard_dfs, shard_complete in parts:
            self.n_docs += shard_n
            self.total_len += shard_len
            self.complete = self.complete and shard_complete
            for t, n in shard_dfs.items():
                dfs[t] = dfs.get(t, 0) + n
        if self.budget_ms is not None:
            self.budget_ms = max(self.budget_ms - (time.perf_counter() - self.t0) * 1000, 0)

    def query_args(self, run) -> tuple:
        return (self.terms, self.n_docs, self.total_len, self.dfs, run, self.primitives,
                self.offset + self.limit if self.limit else 0, self.budget_ms)

    def merge(self, parts) -> SearchResponse:
        """Every shard's best hits (phase two) as one ranked page."""
        hits, matches = [], 0
        complete = self.complete
        exhausted = self.budget_ms is not None and not complete
        for part_hits, part_matches, part_exhausted, part_complete in parts:
            hits.extend(part_hits)
            matches += part_matches
            exhausted = exhausted or part_exhausted
            complete = complete and part_complete
        hits.sort(key=_order)
        offset, limit = self.offset, self.limit
        results = [Hit(p, r, ref, score, snip)
                   for p, r, ref, score, snip in hits[offset:offset + limit]]
        return SearchResponse(results, matches, exhausted, (time.perf_counter() - self.t0) * 1000,
                              complete)
