"""Search across shards: gather collection statistics, then score with them everywhere.

Phase one asks every shard for its document count, total length and each
query term's document frequency (bringing its index up to date first, within
the budget); their sums are the global statistics.
Phase two sends those to every shard, which scores its own documents with
them and returns its best `offset + limit` hits; the merge keeps the order
(score descending, then primitive, run, ref). The result is what one index
holding every shard's documents would return.
"""

from __future__ import annotations

import time

from inmem.shard.search_index import PRIMITIVES, ref_key, tokenize

from .errors import InvalidValue
from .types import Hit, SearchResponse


def _order(hit):
    return (-hit[3], hit[0], hit[1], ref_key(hit[2]))


def search(backend, query, run=None, primitives=None, limit=10, offset=0, budget_ms=None):
    t0 = time.perf_counter()
    if type(query) is not str:
        raise InvalidValue("query must be a str")
    if type(limit) is not int or limit < 0 or type(offset) is not int or offset < 0:
        raise InvalidValue("limit and offset must be ints >= 0")
    if primitives is not None:
        primitives = sorted(set(primitives))
        unknown = set(primitives) - set(PRIMITIVES)
        if unknown:
            raise InvalidValue(f"unknown primitives {sorted(unknown)}; use a subset of {PRIMITIVES}")
    terms = list(dict.fromkeys(tokenize(query)))
    if not terms or limit == 0:
        return SearchResponse([], 0, False, (time.perf_counter() - t0) * 1000)
    n_docs = total_len = 0
    dfs = dict.fromkeys(terms, 0)
    complete = True
    for shard_n, shard_len, shard_dfs, shard_complete in backend.fanout(
            "search.stats", (terms, budget_ms)):
        n_docs += shard_n
        total_len += shard_len
        complete = complete and shard_complete
        for t, n in shard_dfs.items():
            dfs[t] = dfs.get(t, 0) + n
    if budget_ms is not None:
        budget_ms = max(budget_ms - (time.perf_counter() - t0) * 1000, 0)
    parts = backend.fanout("search.query", (terms, n_docs, total_len, dfs, run, primitives,
                                            offset + limit, budget_ms))
    hits, matches, exhausted = [], 0, not complete
    for part_hits, part_matches, part_exhausted in parts:
        hits.extend(part_hits)
        matches += part_matches
        exhausted = exhausted or part_exhausted
    hits.sort(key=_order)
    results = [Hit(p, r, ref, score, snip) for p, r, ref, score, snip in hits[offset:offset + limit]]
    return SearchResponse(results, matches, exhausted, (time.perf_counter() - t0) * 1000)
