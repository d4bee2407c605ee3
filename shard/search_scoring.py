"""Scoring a search on one shard: BM25 with the collection's statistics.

Scoring is BM25 (k1 = 1.2, b = 0.75, idf = ln(1 + (N - n + 0.5) / (n + 0.5)))
with N, the average document length and each term's n taken over the whole
collection. In a cluster those statistics are summed across shards first
(`stats`), then each shard scores with the global figures (`query`), so a
hit scores the same as it would in one big index. A document being added or
taken out in steps (`_partial`; a deleted run's, `_dropping`: see
`shard.search_docs`) is neither counted nor found.
"""

from __future__ import annotations

import heapq
import math
import time

from .search_postings import Postings

K1 = 1.2
B = 0.75


class Scoring:
    """A shard's side of a search: its statistics, and its hits scored with the global ones
    (a part of `SearchIndex`, which holds the state declared here)."""

    postings: Postings
    docs: dict
    _partial: set
    _dropping: dict
    _dropped_docs: int
    total_len: int

    def stats(self, terms) -> list:
        """[document count, total length, {term: document frequency}] of this shard."""
        postings, partial, dropping = self.postings, self._partial, self._dropping
        dfs = {}
        for t in terms:
            plist = postings.get(t, ())
            n = len(plist)
            if partial and n:  # a long document half added or half taken out is not counted
                n -= sum(1 for doc in partial if doc in plist)
            if dropping and n:  # nor the documents of a deleted run still being taken out
                n -= sum(1 for doc in plist if doc[1] in dropping)
            dfs[t] = n
        return [len(self.docs) - self._dropped_docs, self.total_len, dfs]

    def query(self, terms, n_docs, total_len, dfs, run=None, primitives=None, top=10,
              deadline=None):
        """(hits as [score, primitive, run, ref], matches, budget exhausted) with global stats."""
        avgdl = total_len / n_docs if n_docs else 0.0
        scores: dict = {}
        exhausted = False
        allowed = None if primitives is None else frozenset(primitives)
        docs = self.docs
        dropping = self._dropping
        steps = 0
        for term in dict.fromkeys(terms):
            plist = self.postings.get(term)
            if not plist:
                continue
            n = dfs.get(term, len(plist))
            idf = math.log(1 + (n_docs - n + 0.5) / (n + 0.5))
            for doc, tf in plist.items():
                steps += 1
                if deadline is not None and not steps & 0x3FF and time.monotonic() > deadline:
                    exhausted = True
                    break
                if run is not None and doc[1] != run:
                    continue
                if allowed is not None and doc[0] not in allowed:
                    continue
                entry = docs.get(doc)
                if entry is None:  # half added, or being taken out (see shard.search_docs)
                    continue
                if dropping and doc[1] in dropping:  # a deleted run's, being taken out
                    continue
                dl = entry[0]
                norm = K1 * (1 - B + B * dl / avgdl) if avgdl else K1
                scores[doc] = scores.get(doc, 0.0) + idf * tf * (K1 + 1) / (tf + norm)
            if exhausted:
                break
        best = heapq.nsmallest(top, scores.items(), key=_order)
        return [[s, d[0], d[1], d[2]] for d, s in best], len(scores), exhausted


def _order(item):
    doc, score = item
    return (-score, doc[0], doc[1], ref_key(doc[2]))


def ref_key(ref):
    """Sort key for a ref or diff key that may be an int (event sequence) or a str."""
    # Ints and strs are never compared with each other (the primitive decides
    # first), but a tuple keeps the sort total anyway.
    return (0, ref, "") if type(ref) is int else (1, 0, ref)
