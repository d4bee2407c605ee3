"""Deleting a run takes its documents out of the search index in a job, not in the delete.

Taken out one by one inside `runs.delete`, a run's 100K documents held the
shard for 1.7 s and 400K for ~5 s (marked unresponsive, every client of the
shard refused). The delete now touches none of them: the statistics drop
them at once and searches skip them (exact BM25 from the moment of the
delete), and the index's job takes them out of its tables in steps.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from inmem.shard.engine import Engine

WORDS = [f"w{i}" for i in range(40)]


def _engine(with_runs: dict) -> Engine:
    """An engine holding runs {run id: {key: text}}, its index caught up."""
    e = Engine(clock=lambda: 1_700_000_000_000_000)
    for run, items in with_runs.items():
        e.begin_run(run_id=run)
        if items:
            e.kv_put_many(run, [[k, v] for k, v in items.items()])
    e.index.catch_up(e.runs, e.clock(), None)
    return e


def _answers(e: Engine, terms: list) -> tuple:
    """What a shard answers for `terms`, read straight from its index (no catch-up)."""
    n_docs, total_len, dfs = e.index.stats(terms)
    hits, matches, _ = e.index.query(terms, n_docs, total_len, dfs, top=1000)
    return n_docs, total_len, dfs, sorted((round(h[0], 9), h[1], h[2], h[3]) for h in hits), matches


def _texts(rng, n):
    return {f"k{i}": " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 8)))
            for i in range(n)}


def test_the_delete_leaves_the_documents_to_the_job_and_searches_are_exact_at_once():
    rng = random.Random(5)
    kept, dropped = _texts(rng, 50), _texts(rng, 3000)
    e = _engine({"keep": kept, "drop": dropped})
    alone = _engine({"keep": kept})
    before = len(e.index.docs)
    e.run_delete("drop")
    # The delete popped nothing: the documents wait for the job.
    assert len(e.index.docs) == before and e.index.long_work()
    for terms in (["w1"], ["w2", "w3"], WORDS):
        assert _answers(e, terms) == _answers(alone, terms)
    e.index.catch_up(e.runs, e.clock(), None)  # the job runs to its end
    assert not e.index.long_work() and not e.index._dropping and e.index._dropped_docs == 0
    assert len(e.index.docs) == len(alone.index.docs)
    assert not any(doc[1] == "drop" for doc in e.index.docs)
    for term in WORDS:
        assert not any(doc[1] == "drop" for doc in e.index.postings.get(term, {}))
        assert _answers(e, [term]) == _answers(alone, [term])
    assert e.index.total_len == alone.index.total_len


def test_a_run_begun_again_under_the_id_is_indexed_after_the_job():
    rng = random.Random(6)
    first, second = _texts(rng, 2000), _texts(rng, 40)
    e = _engine({"keep": {"a": "w1 w2"}, "r": first})
    e.run_delete("r")
    e.begin_run(run_id="r")
    e.kv_put_many("r", [[k, v] for k, v in second.items()])
    e.index.catch_up(e.runs, e.clock(), None)
    expected = _engine({"keep": {"a": "w1 w2"}, "r": second})
    for term in WORDS:
        assert _answers(e, [term]) == _answers(expected, [term])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 400), st.integers(1, 4000))
def test_stepping_the_job_at_any_point_keeps_searches_exact(seed, size, budget_steps):
    rng = random.Random(seed)
    kept, dropped = _texts(rng, 30), _texts(rng, size)
    e = _engine({"keep": kept, "drop": dropped})
    alone = _engine({"keep": kept})
    e.run_delete("drop")
    for _ in range(budget_steps % 7):
        if e.index._jobs:
            next(e.index._jobs[0][2], None)
    terms = rng.sample(WORDS, 3)
    assert _answers(e, terms) == _answers(alone, terms)


@pytest.mark.parametrize("long_text", [False, True])
def test_a_run_with_a_long_document_is_taken_out_whole(long_text):
    from inmem.shard import search_docs
    text = " ".join(f"t{i}" for i in range(search_docs.LONG_TEXT // 3)) if long_text else "t1 t2"
    e = _engine({"keep": {"a": "t1"}, "drop": {"big": text, "small": "t1 t2"}})
    alone = _engine({"keep": {"a": "t1"}})
    e.run_delete("drop")
    assert _answers(e, ["t1", "t2"]) == _answers(alone, ["t1", "t2"])
    e.index.catch_up(e.runs, e.clock(), None)
    assert _answers(e, ["t1", "t2"]) == _answers(alone, ["t1", "t2"])
    assert not e.index.long_terms and e.index.run_len == alone.index.run_len
