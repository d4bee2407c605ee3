"""A large text value is indexed in bounded steps, and searches as it would in one go.

A value of many megabytes of text (a scraped page, a long transcript) used to
be tokenized and put in the index in one go, holding the shard's loop (the
embedded store's lock) for seconds: every other request waited, a cluster
marked the shard unresponsive, and a search with a `budget_ms` of 20 took
seconds. The index now does such a value in steps, and looks at the clock
between two of them.

How much one step does is measured here, not how long it takes: each call of
`catch_up` is given a deadline already past, so it does one step and returns;
the text each step tokenizes (the calls of the word pattern) and the postings
entries each step adds or removes must stay small. The results once caught up
are checked against BM25 computed here from the documented formula.
"""

from __future__ import annotations

import math
import random
import re

import pytest

import inmem
import inmem.shard.search_index as search_index
import inmem.shard.search_text as search_text

#: what one step of indexing may do (a step costs a few milliseconds at most)
MAX_STEP_CHARS = 64 * 1024
MAX_STEP_ENTRIES = 8192
#: a hang detector: more calls than this and the index does not progress
MAX_CALLS = 100_000
K1, B = 1.2, 0.75


def words(n: int, vocab: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    pool = ["".join(rng.choices(letters, k=7)) for _ in range(vocab)]
    return rng.choices(pool, k=n)


def big_text(mib: float, vocab: int = 50_000, seed: int = 1) -> str:
    n = int(mib * (1 << 20) / 8)
    return " ".join(words(n, vocab, seed))


class Recorder:
    """The word pattern, counting the characters each of its `findall` calls scans."""

    def __init__(self, pattern):
        self.pattern = pattern
        self.sizes: list[int] = []

    def findall(self, text, *args):
        self.sizes.append(len(text))
        return self.pattern.findall(text, *args)

    def __getattr__(self, name):
        return getattr(self.pattern, name)


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder(search_text.WORD)
    monkeypatch.setattr(search_text, "WORD", rec)
    return rec


def entries(index) -> int:
    return sum(len(p) for p in index.postings.values())


def step_through(db) -> list[int]:
    """Catch the index up one step a call (deadline already past); the entries each step changed."""
    backend = db._backend
    changed = []
    for _ in range(MAX_CALLS):
        with backend.lock:
            engine = backend.engine
            before = entries(engine.index)
            done = engine.index.catch_up(engine.runs, engine.clock(), 0.0)
            changed.append(abs(entries(engine.index) - before))
        if done:
            return changed
    raise AssertionError("the index never caught up")


def model_scores(docs: dict, query: str) -> dict:
    """BM25 of every document for `query`, from the documented formula."""
    toks = {d: re.findall(r"\w+", t.lower()) for d, t in docs.items()}
    toks = {d: t for d, t in toks.items() if t}
    n_docs = len(toks)
    avgdl = sum(len(t) for t in toks.values()) / n_docs
    out: dict = {}
    for term in dict.fromkeys(re.findall(r"\w+", query.lower())):
        n = sum(term in t for t in toks.values())
        if not n:
            continue
        idf = math.log(1 + (n_docs - n + 0.5) / (n + 0.5))
        for d, t in toks.items():
            tf = t.count(term)
            if tf:
                norm = K1 * (1 - B + B * len(t) / avgdl)
                out[d] = out.get(d, 0.0) + idf * tf * (K1 + 1) / (tf + norm)
    return out


def check(db, docs: dict, query: str) -> None:
    resp = db.search(query, limit=1000)
    assert resp.index_complete is True
    got = {h.ref: h.score for h in resp.results}
    want = model_scores(docs, query)
    assert got.keys() == want.keys(), query
    for ref, score in want.items():
        assert got[ref] == pytest.approx(score, rel=1e-9), (query, ref)
    assert resp.total_matches == len(want)


@pytest.fixture
def store(tmp_path):
    db = inmem.open(tmp_path / "db", snapshot_on_close=False)
    yield db
    db.close()


def test_a_large_text_is_indexed_in_bounded_steps(store, recorder):
    run = store.begin_run()
    text = big_text(1.5, vocab=150_000)
    store.kv.put(run, "page", text)
    changed = step_through(store)
    assert max(recorder.sizes) <= MAX_STEP_CHARS
    assert max(changed) <= MAX_STEP_ENTRIES
    assert len(changed) > 1
    first = text.split(" ", 1)[0]
    hits = store.search(first).results
    assert [h.ref for h in hits] == ["page"]


def test_replacing_and_deleting_a_large_text_is_done_in_bounded_steps(store, recorder):
    run = store.begin_run()
    store.kv.put(run, "page", big_text(1, vocab=120_000, seed=2))
    step_through(store)
    store.kv.put(run, "page", "a short note now")
    changed = step_through(store)
    assert max(changed) <= MAX_STEP_ENTRIES
    check(store, {"page": "a short note now"}, "short note")
    store.kv.put(run, "page", big_text(1, vocab=120_000, seed=3))
    step_through(store)
    assert store.runs.delete(run) is True
    changed = step_through(store)
    assert max(changed) <= MAX_STEP_ENTRIES
    with store._backend.lock:
        assert len(store._backend.engine.index.postings) == 0
        assert store._backend.engine.index.docs == {}


def step(db, n: int) -> None:
    backend = db._backend
    for _ in range(n):
        with backend.lock:
            engine = backend.engine
            engine.index.catch_up(engine.runs, engine.clock(), 0.0)


@pytest.mark.parametrize("change", ["overwrite", "delete-key", "delete-run"])
def test_a_large_text_changed_while_it_is_indexed_leaves_nothing_behind(store, change):
    """Replaced or deleted half-way: the index holds what the store holds, no stale terms."""
    run = store.begin_run()
    keep = store.begin_run()
    store.kv.put(keep, "other", "kept words here")
    text = big_text(1, vocab=120_000, seed=7)
    store.kv.put(run, "page", text)
    for phase in (5, 200):  # while tokenizing, then while adding its postings
        step(store, phase)
        if change == "overwrite":
            store.kv.put(run, "page", f"now short {phase}")
        elif change == "delete-key":
            store.kv.delete(run, "page")
        else:
            assert store.runs.delete(run) is True
        step_through(store)
        with store._backend.lock:
            index = store._backend.engine.index
            expect = 3 if change == "overwrite" else 0
            page_terms = [t for t, p in index.postings.items() if ("kv", run, "page") in p]
            assert len(page_terms) == expect
            assert index._partial == set() and not index._jobs
        docs = {"other": "kept words here"}
        if change == "overwrite":
            docs["page"] = f"now short {phase}"
        check(store, docs, f"short {phase} kept")
        if change == "delete-run":
            run = store.begin_run()
        store.kv.put(run, "page", text)


@pytest.mark.parametrize("shape", ["spaces", "punctuation", "one-long-word", "unicode"])
def test_results_once_caught_up_are_those_of_bm25(store, shape):
    run = store.begin_run()
    base = words(40_000, 3_000, seed=4)
    if shape == "spaces":
        text = " ".join(base)
    elif shape == "punctuation":
        text = ",".join(base)  # no whitespace to cut at
    elif shape == "one-long-word":
        text = " ".join(base[:100]) + " " + "x" * 40_000 + " " + " ".join(base[100:200])
    else:
        text = " ".join(f"ΣΟΦΟΣ {w} Straße İstanbul ΑΣ' {w.upper()}" for w in base[:8000])
    docs = {"big": text, "small": " ".join(base[:50]), "other": "nothing in common here"}
    for ref, t in docs.items():
        store.kv.put(run, ref, t)
    store.kv.put(run, "list", [text[:90_000], {"x": text[-90_000:]}, 7])
    docs["list"] = text[:90_000] + " " + text[-90_000:]
    for q in [base[0], base[1] + " " + base[2], base[-1], "nothing", "σοφος straße", "istanbul",
              "i̇stanbul", "x" * 40_000, "ας"]:
        check(store, docs, q)


def test_a_search_keeps_to_its_budget_while_a_large_text_is_indexed(store):
    run = store.begin_run()
    text = big_text(2, vocab=100_000, seed=5)
    store.kv.put(run, "small", "needle in a small haystack")
    check(store, {"small": "needle in a small haystack"}, "needle")
    store.kv.put(run, "page", text + " needle")
    resp = store.search("needle", budget_ms=0)
    assert resp.budget_exhausted is True
    assert resp.index_complete is False
    # Answered from what is indexed: never the large value half indexed.
    assert [h.ref for h in resp.results] in (["small"], ["small", "page"], ["page", "small"])
    for _ in range(MAX_CALLS):
        resp = store.search("needle", budget_ms=2)
        if resp.index_complete:
            break
        assert resp.budget_exhausted is True
    else:
        raise AssertionError("searches with a budget never completed the index")
    check(store, {"small": "needle in a small haystack", "page": text + " needle"}, "needle")


def test_the_held_history_is_read_in_bounded_steps(tmp_path, monkeypatch, recorder):
    """A durable store's history hands its held items to the index: that too is bounded."""
    import inmem.shard.durable as durable
    monkeypatch.setattr(durable, "INDEX_HELD_AT", 4)
    with inmem.open(tmp_path / "db", durability="strict", snapshot_on_close=False) as db:
        run = db.begin_run()
        text = big_text(1, vocab=100_000, seed=6)
        for i in range(8):
            db.kv.put(run, f"k{i}", text if i == 3 else f"note {i}")
        assert max(recorder.sizes) <= MAX_STEP_CHARS
        check(db, {f"k{i}": text if i == 3 else f"note {i}" for i in range(8)}, "note")


def test_a_write_that_trims_history_does_not_index_a_large_text_in_one_go(recorder):
    with inmem.open(history=1) as db:
        run = db.begin_run()
        db.kv.put(run, "page", big_text(1, vocab=100_000, seed=8))
        per_write = []
        for i in range(200):
            before = sum(recorder.sizes)
            db.kv.put(run, f"k{i}", f"note {i}")
            per_write.append(sum(recorder.sizes) - before)
        assert max(per_write) <= 4 * MAX_STEP_CHARS


def test_the_trimmed_history_returns_to_its_limit_once_the_large_text_is_indexed(recorder):
    """What the trim left for the index (behind the large text) goes at a later write."""
    with inmem.open(history=1) as db:
        run = db.begin_run()
        text = big_text(1, vocab=100_000, seed=9)
        db.kv.put(run, "page", text)
        for i in range(200):
            db.kv.put(run, f"k{i}", f"note {i}")
        with db._backend.lock:
            assert db._backend.engine.index.long_work()  # the trims left it to the slices
        assert db.info()["shards"][0]["history"]["in_memory"] > 2 * 1 + 64
        step_through(db)
        for i in range(1000):  # a hang detector: a trim's read stops at its deadline
            db.kv.put(run, "last", "note last")
            if db.info()["shards"][0]["history"]["in_memory"] <= 2 * 1 + 64:
                break
        else:
            raise AssertionError("the history never came back within its limit")
        docs = {f"k{i}": f"note {i}" for i in range(200)}
        docs.update(page=text, last="note last")
        check(db, docs, "note")
        check(db, docs, text.split(" ", 1)[0])


def test_a_search_without_a_budget_waits_for_a_large_text_and_finds_it_whole(store):
    """The one catch-up that runs without a deadline by design: a search that gave no
    budget sees every committed write, a large text pending in the index included."""
    run = store.begin_run()
    text = big_text(1, vocab=100_000, seed=10)
    store.kv.put(run, "small", "needle here")
    store.kv.put(run, "page", text + " needle")
    with store._backend.lock:
        engine = store._backend.engine
        engine.index.catch_up(engine.runs, engine.clock(), 0.0)  # its first step only
        assert engine.index.long_work()
    check(store, {"small": "needle here", "page": text + " needle"}, "needle")


def test_a_write_that_reads_the_held_history_steps_a_large_text_only_briefly(
        tmp_path, monkeypatch, recorder):
    """A durable store's writes hand held items to the index with no deadline for the
    journal read (bounded by what is held); a large text among them is not done whole."""
    import inmem.shard.durable as durable
    monkeypatch.setattr(durable, "INDEX_HELD_AT", 4)
    with inmem.open(tmp_path / "db", durability="strict", snapshot_on_close=False) as db:
        run = db.begin_run()
        text = big_text(1, vocab=100_000, seed=11)
        per_write = []
        for i in range(16):
            before = sum(recorder.sizes)
            db.kv.put(run, f"k{i}", text if i == 3 else f"note {i}")
            per_write.append(sum(recorder.sizes) - before)
        assert max(per_write) <= 4 * MAX_STEP_CHARS
        check(db, {f"k{i}": text if i == 3 else f"note {i}" for i in range(16)}, "note")


def test_writes_faster_than_the_index_cannot_grow_a_trimmed_history_for_ever(
        monkeypatch, recorder):
    """No background slices here: past TRIM_HELD_MAX items, the writes step the index."""
    from inmem.shard.engine import Engine
    monkeypatch.setattr(search_index, "TRIM_HELD_MAX", 200)
    engine = Engine(history=1)
    run = engine.execute("run.begin", (None, None, None, [], None))
    h = engine.runs[run].journal
    engine.execute("kv.put", (run, "page", big_text(1, vocab=100_000, seed=12)))
    per_write = []
    for i in range(MAX_CALLS):
        before = sum(recorder.sizes)
        engine.execute("kv.put", (run, f"k{i % 1000}", f"note {i}"))
        per_write.append(sum(recorder.sizes) - before)
        if i > 2 * h.trim_at and len(h.items) <= h.trim_at and not engine.index.long_work():
            break
    else:
        raise AssertionError("the history grew for as long as the writes went on")
    assert max(per_write) <= 4 * MAX_STEP_CHARS
    assert ("kv", run, "page") in engine.index.docs  # indexed whole, by the writes alone
