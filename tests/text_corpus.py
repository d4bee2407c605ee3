"""A fixed corpus of short text values and the checks the search-readiness tests share."""

from __future__ import annotations

import pytest

WORDS = ["amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "harbor", "inlet",
         "juniper", "kelp", "lagoon", "meadow", "nectar", "orchid", "prairie"]
QUERIES = ["amber", "cedar grove", "kelp lagoon meadow", "prairie", "orchid birch"]


def text_of(i: int) -> str:
    return " ".join(WORDS[(i * k + k) % len(WORDS)] for k in range(1, 6)) + f" item{i}"


def fill(db, runs, n: int) -> None:
    per = 1000
    for lo in range(0, n, per):
        with db.pipeline() as p:
            for i in range(lo, min(lo + per, n)):
                p.kv.put(runs[i % len(runs)], f"k{i:06d}", text_of(i))
            p.execute()


def answers(db, **kw) -> dict:
    return {q: db.search(q, limit=20, **kw) for q in QUERIES}


def docs(resp) -> list:
    return [(h.primitive, h.run, h.ref) for h in resp.results]


def assert_same(after: dict, before: dict) -> None:
    for q in QUERIES:
        assert after[q].index_complete is True and before[q].index_complete is True, q
        assert docs(after[q]) == docs(before[q]), q
        assert [h.score for h in after[q].results] == \
            pytest.approx([h.score for h in before[q].results]), q
        assert after[q].total_matches == before[q].total_matches, q


def matching(resp, texts: dict, query: str) -> bool:
    """Every hit of a (possibly partial) answer really holds a word of the query."""
    words = set(query.split())
    return all(words & set(texts[h.ref].split()) for h in resp.results)
