"""An in-memory history trimmed by its `history=` limit never loses a write to the search index.

A write that crosses the limit trims its run's history, and the index must
have read an entry before it goes (an in-memory store has no other copy of
it). The trim reads the journal for a bounded time only and steps a long
document only briefly: what the index has not read stays held until a later
trim. Here writes of short and long texts, deletes, run deletions and index
steps come in any order, with tiny steps so that long documents are common;
once the index has caught up it must hold exactly the current values, and
the history must come back within its limit when the writes cross it again.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from inmem.shard.engine import Engine
import inmem.shard.search_docs as docs
import inmem.shard.search_index as index
import inmem.shard.search_text as search_text

WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
KEYS = [f"k{i}" for i in range(6)]

TEXT = st.lists(st.sampled_from(WORDS), min_size=1, max_size=60).map(" ".join)
OP = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 1), st.sampled_from(KEYS), TEXT),
    st.tuples(st.just("delete"), st.integers(0, 1), st.sampled_from(KEYS)),
    st.tuples(st.just("steps"), st.integers(1, 5)),
    st.tuples(st.just("drop-run"), st.integers(0, 1)),
)


@contextmanager
def tiny_steps():
    """Long documents from 64 characters, 16 a step, and writes that step them once a
    history holds 12 items (a fixture would outlive an example)."""
    saved = docs.LONG_TEXT, docs.STEP_TERMS, search_text.STEP_CHARS, index.TRIM_HELD_MAX
    docs.LONG_TEXT, docs.STEP_TERMS, search_text.STEP_CHARS, index.TRIM_HELD_MAX = 64, 2, 16, 12
    try:
        yield
    finally:
        docs.LONG_TEXT, docs.STEP_TERMS, search_text.STEP_CHARS, index.TRIM_HELD_MAX = saved


def begin(engine: Engine) -> str:
    """A run whose history trims every few writes (64 past twice the limit otherwise)."""
    run = engine.execute("run.begin", (None, None, None, [], None))
    h = engine.runs[run].journal
    h.trim_at = 2 * h.limit + 4
    return run


def expected_postings(model: dict) -> dict:
    out: dict = {}
    for (run, key), text in model.items():
        for term, tf in Counter(re.findall(r"\w+", text.lower())).items():
            out.setdefault(term, {})[("kv", run, key)] = tf
    return out


@settings(max_examples=100, deadline=None)
@given(limit=st.integers(0, 3), ops=st.lists(OP, min_size=60, max_size=200))
def test_the_index_holds_every_write_a_trimmed_history_let_go(limit, ops):
    with tiny_steps():
        engine = Engine(history=limit)
        runs = [begin(engine), begin(engine)]
        model: dict = {}
        for op in ops:
            if op[0] == "put":
                _, n, key, text = op
                engine.execute("kv.put", (runs[n], key, text))
                model[(runs[n], key)] = text
            elif op[0] == "delete":
                _, n, key = op
                engine.execute("kv.delete", (runs[n], key))
                model.pop((runs[n], key), None)
            elif op[0] == "steps":
                for _ in range(op[1]):
                    engine.index.catch_up(engine.runs, engine.clock(), 0.0)
            else:
                n = op[1]
                engine.execute("run.delete", (runs[n],))
                model = {k: v for k, v in model.items() if k[0] != runs[n]}
                runs[n] = begin(engine)
        assert engine.index.catch_up(engine.runs, engine.clock()) is True
        index = engine.index
        assert dict(index.postings.items()) == expected_postings(model)
        lengths = {doc: entry[0] for doc, entry in index.docs.items()}
        assert lengths == {("kv", run, key): len(re.findall(r"\w+", text))
                           for (run, key), text in model.items()}
        assert index.total_len == sum(lengths.values())
        assert not index._partial and not index.long_work()
        # Caught up, the write that crosses the limit trims the history back to it.
        for run in runs:
            h = engine.runs[run].journal
            for _ in range(100 * (h.trim_at + 1)):  # a hang detector (a trim's read stops at its deadline)
                engine.execute("kv.put", (run, "last", "x"))
                if len(h.items) == limit:
                    break
            else:
                raise AssertionError("the history never came back to its limit")
