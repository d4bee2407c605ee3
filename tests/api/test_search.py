"""Search: BM25 ranking on hand-made corpora, the text each primitive
contributes, filters, paging, and how writes, deletes, expiry and recovery
change the results.

Scores are computed here from the documented BM25 formula, independently of the
engine: k1 = 1.2, b = 0.75, idf = ln(1 + (N - n + 0.5) / (n + 0.5)), with N
the number of documents, n the number holding the term and avgdl their mean
length in tokens, all over the whole store. A document is one (primitive,
run, ref) with at least one token; a token is a lowercased run of Unicode
word characters. Runs are created without a name or tags unless a test says
otherwise, so that they add no document of their own.
"""

from __future__ import annotations

import math
import re

import pytest

import inmem

K1 = 1.2
B = 0.75


def tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


class Model:
    """The documents a test wrote, and the BM25 scores they must get."""

    def __init__(self):
        self.docs: dict[tuple, list[str]] = {}

    def put(self, primitive, run, ref, *texts) -> None:
        toks = [t for text in texts for t in tokens(text)]
        if toks:
            self.docs[(primitive, run, ref)] = toks
        else:
            self.docs.pop((primitive, run, ref), None)

    def drop(self, primitive, run, ref) -> None:
        self.docs.pop((primitive, run, ref), None)

    def scores(self, query, run=None, primitives=None) -> dict:
        n_docs = len(self.docs)
        avgdl = sum(len(t) for t in self.docs.values()) / n_docs
        out = {}
        for term in dict.fromkeys(tokens(query)):
            n = sum(term in toks for toks in self.docs.values())
            if not n:
                continue
            idf = math.log(1 + (n_docs - n + 0.5) / (n + 0.5))
            for doc, toks in self.docs.items():
                tf = toks.count(term)
                if not tf or (run is not None and doc[1] != run):
                    continue
                if primitives is not None and doc[0] not in primitives:
                    continue
                norm = K1 * (1 - B + B * len(toks) / avgdl)
                out[doc] = out.get(doc, 0.0) + idf * tf * (K1 + 1) / (tf + norm)
        return out

    def ranked(self, query, **kw) -> list:
        """[(doc, score)] best first, ties by primitive, run, ref (int refs numerically)."""
        return sorted(self.scores(query, **kw).items(),
                      key=lambda item: (-item[1], item[0][0], item[0][1],
                                        (0, item[0][2], "") if type(item[0][2]) is int
                                        else (1, 0, item[0][2])))


def doc_of(hit) -> tuple:
    return (hit.primitive, hit.run, hit.ref)


def check_against(db, model, query, limit=1000, **kw):
    """The full result list must be the model's ranking, score for score."""
    resp = db.search(query, limit=limit, **kw)
    expected = model.ranked(query, **kw)
    assert [doc_of(h) for h in resp.results] == [d for d, _ in expected[:limit]]
    assert [h.score for h in resp.results] == pytest.approx([s for _, s in expected[:limit]],
                                                            rel=1e-9, abs=1e-12)
    assert resp.total_matches == len(expected)
    assert resp.budget_exhausted is False
    return resp


@pytest.fixture
def corpus(db):
    """A mixed corpus over two runs and every primitive; returns (runs, model)."""
    m = Model()
    r1 = db.begin_run(run_id="run-1")
    r2 = db.begin_run(run_id="run-2")
    texts = {
        ("kv", r1, "d1"): "the quick brown fox",
        ("kv", r1, "d2"): "the lazy dog",
        ("kv", r2, "d3"): "quick quick quick fox jumps over the lazy dog again and again",
        ("kv", r2, "d4"): "Brown bread",
    }
    for (_, run, key), text in texts.items():
        db.kv.put(run, key, text)
        m.put("kv", run, key, text)
    db.json.put(r1, "j1", {"title": "Quick thinking", "body": ["fox", {"deep": "hunt"}], "n": 3})
    m.put("json", r1, "j1", "Quick thinking", "fox", "hunt")
    db.events.append(r2, "observe", {"msg": "a brown dog", "count": 2})
    m.put("events", r2, 0, "observe", "a brown dog")
    db.events.append(r2, "observe", {"msg": "fox"})
    m.put("events", r2, 1, "observe", "fox")
    db.state.set(r1, "mood", "fox")
    m.put("state", r1, "mood", "fox")
    tid = db.traces.record(r2, "thought", {"note": "dog dog", "extra": ["lazy"]})
    m.put("traces", r2, tid, "thought", "dog dog", "lazy")
    named = db.begin_run(run_id="run-3", name="fox run", tags=("alpha", "lazy-tag"))
    m.put("runs", named, named, "fox run", "alpha", "lazy-tag")
    return (r1, r2, named), m


# --- BM25 ---------------------------------------------------------------------


def test_score_of_a_tiny_corpus_by_hand(db):
    run = db.begin_run()
    db.kv.put(run, "one", "a b")
    db.kv.put(run, "two", "c")
    # N = 2, avgdl = 1.5, n("c") = 1: idf = ln 2; tf = 1, dl = 1:
    # 2.2 / (1 + 1.2 * (0.25 + 0.75 / 1.5)) = 2.2 / 1.9
    resp = db.search("c")
    assert [doc_of(h) for h in resp.results] == [("kv", run, "two")]
    assert resp.results[0].score == pytest.approx(math.log(2) * 2.2 / 1.9, rel=1e-12)
    assert resp.total_matches == 1
    # A term in every document still scores above zero: idf = ln(1 + 0.5 / 2.5).
    db.kv.put(run, "two", "c a")
    resp = db.search("a")
    idf = math.log(1 + 0.5 / 2.5)
    assert [h.score for h in resp.results] == pytest.approx([idf * 2.2 / 2.2] * 2)
    assert all(h.score > 0 for h in resp.results)


@pytest.mark.parametrize("query", ["fox", "quick fox", "dog", "the", "brown dog", "lazy",
                                   "observe", "thought", "hunt", "alpha", "QUICK Fox!",
                                   "again", "nothing-here fox"])
def test_scores_and_order_follow_bm25(db, corpus, query):
    _, model = corpus
    check_against(db, model, query)


def test_more_occurrences_rank_higher_and_shorter_documents_rank_higher(db):
    run = db.begin_run()
    db.kv.put(run, "once", "signal noise noise noise")
    db.kv.put(run, "twice", "signal signal noise noise")
    db.kv.put(run, "short", "signal")
    db.kv.put(run, "filler", "noise")
    hits = db.search("signal").results
    assert [h.ref for h in hits] == ["short", "twice", "once"]
    assert hits[0].score > hits[1].score > hits[2].score


def test_both_terms_beat_one_term(db):
    run = db.begin_run()
    db.kv.put(run, "both", "red apple")
    db.kv.put(run, "red", "red pepper")
    db.kv.put(run, "apple", "green apple")
    hits = db.search("red apple").results
    assert hits[0].ref == "both"
    assert {h.ref for h in hits[1:]} == {"red", "apple"}


def test_rare_terms_weigh_more(db):
    run = db.begin_run()
    for i in range(6):
        db.kv.put(run, f"common{i}", "common word")
    db.kv.put(run, "rare", "rare word")
    db.kv.put(run, "mixed", "common rare")
    hits = db.search("rare").results
    common = db.search("common").results
    assert max(h.score for h in common) < min(h.score for h in hits)


def test_statistics_span_every_run(db):
    model = Model()
    runs = [db.begin_run() for _ in range(4)]
    for i, run in enumerate(runs):
        for j in range(i + 1):
            text = " ".join(["shared"] + ["pad"] * j + (["rare"] if i == j == 2 else []))
            db.kv.put(run, f"k{j}", text)
            model.put("kv", run, f"k{j}", text)
    for query in ("shared", "rare", "pad", "shared rare"):
        check_against(db, model, query)
        for run in runs:
            check_against(db, model, query, run=run)


def test_ties_are_ordered_by_primitive_run_ref(db):
    model = Model()
    ra = db.begin_run(run_id="ra")
    rb = db.begin_run(run_id="rb")
    # Every document is the same one word, so every score is equal.
    for run in (rb, ra):
        for key in ("b", "a", "c"):
            db.kv.put(run, key, "tie")
            model.put("kv", run, key, "tie")
        db.state.set(run, "z", "tie")
        model.put("state", run, "z", "tie")
        db.json.put(run, "doc", {"t": "tie"})
        model.put("json", run, "doc", "tie")
    for i in range(12):  # sequences 2 and 10 must sort as numbers
        db.events.append(ra, "tie", {})
        model.put("events", ra, i, "tie")
    tid = db.traces.record(rb, "custom", {"w": "tie"})
    model.put("traces", rb, tid, "custom", "tie")
    resp = check_against(db, model, "tie")
    hits = resp.results
    assert len({h.score for h in hits if h.primitive != "traces"}) == 1
    same_score = [h for h in hits if h.primitive != "traces"]
    assert [doc_of(h) for h in same_score] == sorted(
        (doc_of(h) for h in same_score),
        key=lambda d: (d[0], d[1], (0, d[2], "") if type(d[2]) is int else (1, 0, d[2])))
    events = [h.ref for h in hits if h.primitive == "events"]
    assert events == list(range(12))
    assert [doc_of(h) for h in hits if h.primitive == "kv"] == [
        ("kv", "ra", "a"), ("kv", "ra", "b"), ("kv", "ra", "c"),
        ("kv", "rb", "a"), ("kv", "rb", "b"), ("kv", "rb", "c")]


def test_repeated_searches_are_identical(db, corpus):
    first = db.search("fox dog", limit=50)
    second = db.search("fox dog", limit=50)
    assert first.results == second.results
    assert first.total_matches == second.total_matches


# --- paging and filters ---------------------------------------------------------


@pytest.fixture
def many(db):
    """25 documents matching "word" with distinct lengths, some ties, in two runs."""
    model = Model()
    runs = [db.begin_run(run_id="p1"), db.begin_run(run_id="p2")]
    for i in range(25):
        run = runs[i % 2]
        text = "word " * (1 + i % 3) + "pad " * (i // 2)
        db.kv.put(run, f"k{i:02d}", text)
        model.put("kv", run, f"k{i:02d}", text)
    db.events.append(runs[0], "word", {"x": "pad pad"})
    model.put("events", runs[0], 0, "word", "pad pad")
    db.state.set(runs[1], "s", "word")
    model.put("state", runs[1], "s", "word")
    return runs, model


def test_limit_and_offset_page_through_the_full_list(db, many):
    _, model = many
    full = check_against(db, model, "word").results
    assert len(full) == 27
    for limit in (1, 3, 10, 27, 40):
        for offset in (0, 1, 5, 26, 27, 30):
            resp = db.search("word", limit=limit, offset=offset)
            assert resp.results == full[offset:offset + limit], (limit, offset)
            assert resp.total_matches == 27
    pages = []
    for offset in range(0, 27, 4):
        pages.extend(db.search("word", limit=4, offset=offset).results)
    assert pages == full


def test_default_limit_is_ten(db, many):
    resp = db.search("word")
    assert len(resp.results) == 10
    assert resp.total_matches == 27


def test_limit_zero_returns_no_hits(db, many):
    assert db.search("word", limit=0).results == []


def test_primitives_filter(db, corpus):
    _, model = corpus
    for prims in (["kv"], ["json"], ["events"], ["state"], ["traces"], ["runs"],
                  ["kv", "events"], ["json", "state", "traces", "runs"]):
        resp = check_against(db, model, "fox dog lazy", primitives=prims)
        assert {h.primitive for h in resp.results} <= set(prims)
    # A filter selects; it does not change a score.
    full = {doc_of(h): h.score for h in db.search("fox dog", limit=100).results}
    for h in db.search("fox dog", primitives=["kv"], limit=100).results:
        assert h.score == pytest.approx(full[doc_of(h)])


def test_run_scope(db, corpus):
    (r1, r2, named), model = corpus
    for run in (r1, r2, named):
        resp = check_against(db, model, "fox dog lazy quick", run=run)
        assert {h.run for h in resp.results} <= {run}
    full = {doc_of(h): h.score for h in db.search("fox", limit=100).results}
    scoped = db.search("fox", run=r2, limit=100).results
    assert scoped
    for h in scoped:
        assert h.score == pytest.approx(full[doc_of(h)])
    both = check_against(db, model, "fox", run=r1, primitives=["kv", "state"])
    assert {doc_of(h) for h in both.results} == {("kv", r1, "d1"), ("state", r1, "mood")}


def test_scope_to_an_unknown_run_is_run_not_found(db, corpus):
    with pytest.raises(inmem.RunNotFound):
        db.search("fox", run="no-such-run")


# --- what each primitive contributes ----------------------------------------------


def test_kv_string_and_strings_inside_containers(db):
    run = db.begin_run()
    db.kv.put(run, "plain", "Lighthouse")
    db.kv.put(run, "nested", {"outerkey": ["harbour", {"innerkey": "tugboat"}], "n": 5})
    db.kv.put(run, "listed", ["anchor", 7, None, ["buoy"]])
    assert [h.ref for h in db.search("lighthouse").results] == ["plain"]
    assert [h.ref for h in db.search("harbour").results] == ["nested"]
    assert [h.ref for h in db.search("tugboat").results] == ["nested"]
    assert [h.ref for h in db.search("anchor buoy").results] == ["listed"]
    assert all(h.primitive == "kv" and h.run == run for h in db.search("harbour").results)


def test_bytes_dict_keys_and_numbers_are_not_text(db):
    run = db.begin_run()
    db.kv.put(run, "raw", b"secretbytes")
    db.kv.put(run, "keyed", {"hiddenkey": 1, "other": {"deeperkey": True}})
    db.kv.put(run, "mixed", [b"morebytes", "visible"])
    db.kv.put(run, "number", 12345)
    db.json.put(run, "doc", {"jsonkey": [b"jsonbytes"], "x": 42})
    db.state.set(run, "cell", {"statekey": b"statebytes"})
    db.events.append(run, "evt", {"eventkey": b"eventbytes"})
    db.traces.record(run, "thought", {"tracekey": b"tracebytes"})
    for word in ("secretbytes", "hiddenkey", "deeperkey", "morebytes", "12345", "jsonkey",
                 "jsonbytes", "42", "statekey", "statebytes", "eventkey", "eventbytes",
                 "tracekey", "tracebytes", "raw", "keyed", "cell", "doc"):
        resp = db.search(word)
        assert resp.results == [] and resp.total_matches == 0, word
    assert [h.ref for h in db.search("visible").results] == ["mixed"]


def test_json_string_leaves(db):
    run = db.begin_run()
    db.json.put(run, "doc", {"title": "Orchard", "tags": ["pear", "plum"],
                             "meta": {"owner": {"name": "quince"}}, "n": 1})
    for word in ("orchard", "pear", "plum", "quince"):
        assert [doc_of(h) for h in db.search(word).results] == [("json", run, "doc")], word
    for word in ("title", "tags", "meta", "owner", "name"):
        assert db.search(word).results == [], word
    db.json.set(run, "doc", "$.meta.owner.name", "medlar")
    assert db.search("quince").results == []
    assert [h.ref for h in db.search("medlar").results] == ["doc"]
    db.json.array_push(run, "doc", "$.tags", "fig")
    assert [h.ref for h in db.search("fig").results] == ["doc"]
    db.json.delete(run, "doc", "$.tags")
    assert db.search("pear fig").results == []
    assert [h.ref for h in db.search("orchard").results] == ["doc"]


def test_event_type_and_payload_strings(db):
    run = db.begin_run()
    db.events.append(run, "launched", {"payloadkey": "rocket", "list": ["booster"], "n": 1})
    db.events.append(run, "landed", {"where": "ocean"})
    assert [doc_of(h) for h in db.search("launched").results] == [("events", run, 0)]
    assert [doc_of(h) for h in db.search("rocket booster").results] == [("events", run, 0)]
    assert [doc_of(h) for h in db.search("ocean").results] == [("events", run, 1)]
    assert all(type(h.ref) is int for h in db.search("launched landed").results)
    assert db.search("payloadkey where").results == []


def test_state_strings(db):
    run = db.begin_run()
    db.state.set(run, "phase", "Drafting")
    db.state.init(run, "plan", {"steps": ["outline", "review"]})
    assert [doc_of(h) for h in db.search("drafting").results] == [("state", run, "phase")]
    assert [doc_of(h) for h in db.search("review").results] == [("state", run, "plan")]
    assert db.search("steps").results == []
    db.state.cas(run, "phase", 1, "Publishing")
    assert db.search("drafting").results == []
    assert [h.ref for h in db.search("publishing").results] == ["phase"]
    db.state.transition(run, "plan", lambda s: ({"steps": s.value["steps"] + ["ship"]}, None))
    assert [h.ref for h in db.search("ship outline").results] == ["plan"]


def test_trace_type_and_data_strings(db):
    run = db.begin_run()
    tid = db.traces.record(run, "tool_call", {"tool": "calculator", "args": ["sqrt"],
                                              "n": 3})
    other = db.traces.record(run, "decision", {"choice": "sqrt"}, parent_id=tid)
    assert [doc_of(h) for h in db.search("calculator").results] == [("traces", run, tid)]
    assert [doc_of(h) for h in db.search("tool_call").results] == [("traces", run, tid)]
    assert [h.ref for h in db.search("decision").results] == [other]
    assert {h.ref for h in db.search("sqrt").results} == {tid, other}
    assert db.search("args choice").results == []


def test_run_name_and_tags(db):
    run = db.begin_run(name="Nightly Crawler", tags=("frontier", "batch-seven"),
                       metadata={"owner": "metadatavalue"})
    for word in ("nightly", "crawler", "frontier", "batch", "seven"):
        assert [doc_of(h) for h in db.search(word).results] == [("runs", run, run)], word
    assert db.search("metadatavalue owner").results == []
    db.end_run(run)
    assert [doc_of(h) for h in db.search("crawler").results] == [("runs", run, run)]


def test_a_run_without_name_or_tags_is_no_document(db):
    run = db.begin_run()
    db.kv.put(run, "k", "solo")
    hit = db.search("solo").results[0]
    # N = 1: had the bare run counted as a document, N would be 2.
    assert hit.score == pytest.approx(math.log(1 + 0.5 / 1.5) * 2.2 / 2.2)


def _write_every_primitive(db, run, word):
    db.kv.put(run, "k", f"{word} in kv")
    db.json.put(run, "j", {"text": f"{word} in json"})
    db.state.set(run, "s", f"{word} in state")
    db.events.append(run, word, {"msg": f"{word} in an event"})
    db.traces.record(run, "thought", {"note": f"{word} in a trace"})


def test_an_unsearchable_run_is_never_found(db):
    hidden = db.begin_run(name="zebra run", tags=["zebra"], searchable=False)
    shown = db.begin_run()
    _write_every_primitive(db, hidden, "zebra")
    db.kv.put(shown, "k", "zebra here")
    resp = db.search("zebra")
    assert [doc_of(h) for h in resp.results] == [("kv", shown, "k")]
    # Nor does it count in the statistics: N = 1, as if the run did not exist.
    assert resp.results[0].score == pytest.approx(math.log(1 + 0.5 / 1.5) * 2.2 / 2.2)
    assert db.search("zebra", run=hidden).results == []
    assert db.runs.get(hidden).searchable is False
    assert db.runs.get(shown).searchable is True
    # Its data is all there, read by key.
    assert db.kv.get(hidden, "k") == "zebra in kv"
    assert db.replay_run(hidden).kv == {"k": "zebra in kv"}


def test_unsearchable_through_a_pipeline_and_a_transaction(db):
    pipe = db.pipeline()
    pipe.begin_run(run_id="quiet-run", searchable=False)
    pipe.kv.put("quiet-run", "k", "okapi")
    pipe.execute()
    with db.transaction("quiet-run") as tx:
        tx.kv.put("t", "okapi again")
    assert db.search("okapi").results == []
    assert db.kv.get("quiet-run", "t") == "okapi again"


@pytest.mark.parametrize("bad", [0, 1, None, "no"])
def test_searchable_is_a_bool(db, bad):
    with pytest.raises(inmem.InvalidValue, match="searchable must be True or False"):
        db.begin_run(searchable=bad)
    assert db.runs.list() == []


# --- writes, deletes and expiry ---------------------------------------------------


def test_deleting_a_key_removes_it(db):
    run = db.begin_run()
    db.kv.put(run, "k", "ephemeral words")
    db.kv.put(run, "stay", "words")
    assert {h.ref for h in db.search("words").results} == {"k", "stay"}
    assert db.kv.delete(run, "k") is True
    assert [h.ref for h in db.search("words").results] == ["stay"]
    assert db.search("ephemeral").results == []
    db.json.put(run, "doc", {"a": "ephemeral"})
    db.json.delete(run, "doc")
    db.state.set(run, "cell", "ephemeral")
    db.state.delete(run, "cell")
    assert db.search("ephemeral").total_matches == 0


def test_deleting_a_run_removes_its_documents(db):
    model = Model()
    gone = db.begin_run(name="doomed", tags=("shared",))
    kept = db.begin_run()
    db.kv.put(gone, "k", "shared text")
    db.events.append(gone, "shared", {})
    db.traces.record(gone, "thought", {"t": "shared"})
    db.kv.put(kept, "k", "shared words here")
    model.put("kv", kept, "k", "shared words here")
    assert db.search("shared").total_matches == 5
    assert db.runs.delete(gone) is True
    check_against(db, model, "shared")
    assert db.search("doomed").results == []


def test_a_recreated_run_does_not_inherit_old_documents(db):
    run = db.begin_run(run_id="phoenix")
    db.kv.put(run, "old", "ashes")
    db.search("ashes")  # the index has seen the first life of the run
    db.runs.delete(run)
    db.begin_run(run_id="phoenix")
    db.kv.put("phoenix", "new", "flames")
    assert db.search("ashes").results == []
    assert [h.ref for h in db.search("flames").results] == ["new"]


def test_a_recreated_run_does_not_inherit_unindexed_documents(db):
    run = db.begin_run(run_id="phoenix")
    for i in range(5):
        db.kv.put(run, f"k{i}", "ashes")
    db.runs.delete(run)
    db.begin_run(run_id="phoenix")
    db.kv.put("phoenix", "new", "flames")
    assert db.search("ashes").results == []
    assert [h.ref for h in db.search("flames").results] == ["new"]


def test_overwriting_changes_the_results(db):
    run = db.begin_run()
    db.kv.put(run, "k", "apple")
    assert [h.ref for h in db.search("apple").results] == ["k"]
    db.kv.put(run, "k", "banana")
    assert db.search("apple").results == []
    assert [h.ref for h in db.search("banana").results] == ["k"]
    db.kv.put(run, "k", b"banana")
    assert db.search("banana").results == []
    db.kv.put(run, "k", ["cherry", "banana"])
    assert [h.ref for h in db.search("cherry").results] == ["k"]
    db.kv.cas(run, "k", 4, 17)
    assert db.search("cherry banana").results == []


def test_scores_follow_overwrites(db):
    model = Model()
    run = db.begin_run()
    for i, text in enumerate(["alpha beta", "alpha", "gamma gamma alpha"]):
        db.kv.put(run, f"k{i}", text)
        model.put("kv", run, f"k{i}", text)
    check_against(db, model, "alpha gamma")
    db.kv.put(run, "k1", "delta delta delta delta")
    model.put("kv", run, "k1", "delta delta delta delta")
    db.kv.delete(run, "k0")
    model.drop("kv", run, "k0")
    check_against(db, model, "alpha gamma delta")


def test_transaction_writes_are_searchable(db):
    run = db.begin_run()
    with db.transaction(run) as tx:
        tx.kv.put("k", "committed")
        tx.events.append("committed", {})
    assert {h.primitive for h in db.search("committed").results} == {"kv", "events"}
    with pytest.raises(RuntimeError):
        with db.transaction(run) as tx:
            tx.kv.put("k2", "aborted")
            raise RuntimeError("abort")
    assert db.search("aborted").results == []


def test_expired_key_leaves_the_results(clocked_db, clock):
    db = clocked_db
    model = Model()
    run = db.begin_run()
    db.kv.put(run, "short", "fleeting words", ttl=1)
    model.put("kv", run, "short", "fleeting words")
    db.kv.put(run, "long", "lasting words", ttl=100)
    model.put("kv", run, "long", "lasting words")
    db.kv.put(run, "forever", "words")
    model.put("kv", run, "forever", "words")
    check_against(db, model, "fleeting words")
    clock.advance(1.5)
    model.drop("kv", run, "short")
    assert db.search("fleeting").results == []
    check_against(db, model, "words lasting")
    clock.advance(200)
    model.drop("kv", run, "long")
    check_against(db, model, "words lasting")


def test_expiry_without_an_intervening_search(clocked_db, clock):
    db = clocked_db
    run = db.begin_run()
    db.kv.put(run, "short", "fleeting", ttl=1)
    clock.advance(2)
    assert db.search("fleeting").results == []
    assert db.search("fleeting").total_matches == 0


def test_rewriting_an_expiring_key_keeps_the_new_value(clocked_db, clock):
    db = clocked_db
    run = db.begin_run()
    db.kv.put(run, "k", "first", ttl=1)
    db.search("first")
    db.kv.put(run, "k", "second")  # no ttl now: must outlive the old expiry
    clock.advance(5)
    assert [h.ref for h in db.search("second").results] == ["k"]
    assert db.search("first").results == []


# --- queries, snippets, budget ------------------------------------------------------


@pytest.mark.parametrize("query", ["", "   ", "!!! ...", "-"])
def test_a_query_without_words_finds_nothing(db, corpus, query):
    resp = db.search(query)
    assert resp.results == [] and resp.total_matches == 0
    assert resp.budget_exhausted is False


def test_unknown_words_find_nothing(db, corpus):
    resp = db.search("zebra")
    assert resp.results == [] and resp.total_matches == 0


def test_query_is_case_insensitive_and_split_on_punctuation(db):
    run = db.begin_run()
    db.kv.put(run, "k", "Hello,World! (MixedCase)")
    for query in ("hello", "WORLD", "mixedcase", "HeLLo-world"):
        assert [h.ref for h in db.search(query).results] == ["k"], query


def test_unicode_words(db):
    run = db.begin_run()
    db.kv.put(run, "cafe", "Un CAFÉ au lait")
    db.kv.put(run, "naive", "a naïve approach")
    db.kv.put(run, "tokyo", "東京 タワー")
    db.kv.put(run, "greek", "ΣΟΦΙΑ")
    assert [h.ref for h in db.search("café").results] == ["cafe"]
    assert [h.ref for h in db.search("Café").results] == ["cafe"]
    assert [h.ref for h in db.search("naïve").results] == ["naive"]
    assert [h.ref for h in db.search("NAÏVE").results] == ["naive"]
    assert [h.ref for h in db.search("東京").results] == ["tokyo"]
    assert [h.ref for h in db.search("タワー").results] == ["tokyo"]
    assert [h.ref for h in db.search("σοφια").results] == ["greek"]
    # "naïve" is one word, not "na" and "ve".
    assert db.search("na").results == []
    # N = 4, dl("cafe") = 4, avgdl = (4 + 3 + 2 + 1) / 4, n = 1.
    idf = math.log(1 + 3.5 / 1.5)
    expected = idf * 2.2 / (1 + 1.2 * (0.25 + 0.75 * 4 / 2.5))
    assert db.search("café").results[0].score == pytest.approx(expected)


def test_snippet_holds_the_matched_word(db):
    run = db.begin_run()
    long_text = "filler " * 60 + "the Needle is here " + "padding " * 60
    db.kv.put(run, "long", long_text)
    db.kv.put(run, "short", "a tiny needle")
    db.events.append(run, "found", {"where": "needle in payload"})
    db.json.put(run, "doc", {"a": "nothing", "b": "needle at the second leaf"})
    hits = {h.ref: h for h in db.search("needle", limit=10).results}
    assert set(hits) == {"long", "short", 0, "doc"}
    for hit in hits.values():
        assert "needle" in hit.snippet.lower(), hit
        assert isinstance(hit.snippet, str)
    assert len(hits["long"].snippet) < len(long_text) // 2
    assert "Needle" in hits["long"].snippet


def test_snippet_for_run_and_trace_hits(db):
    run = db.begin_run(name="Glacier survey", tags=("arctic",))
    tid = db.traces.record(run, "thought", {"note": "measure the glacier edge"})
    hits = {h.primitive: h for h in db.search("glacier").results}
    assert set(hits) == {"runs", "traces"}
    assert hits["traces"].ref == tid
    for hit in hits.values():
        assert "glacier" in hit.snippet.lower()


def test_budget_zero_on_a_large_corpus_is_never_an_error(db):
    runs = [db.begin_run() for _ in range(3)]
    with db.pipeline() as p:
        for i in range(4000):
            p.kv.put(runs[i % 3], f"k{i:05d}", f"common token{i % 7} " + "pad " * (i % 11))
        p.execute()
    full = db.search("common token3", limit=20)
    assert full.budget_exhausted is False
    assert full.total_matches == 4000
    resp = db.search("common token3", limit=20, budget_ms=0)
    assert isinstance(resp.budget_exhausted, bool)
    # An index still catching up is reported, and always counts as an exhausted budget.
    assert isinstance(resp.index_complete, bool)
    assert resp.index_complete or resp.budget_exhausted
    assert len(resp.results) <= 20
    assert all(isinstance(h.score, float) and h.score > 0 for h in resp.results)
    if not resp.budget_exhausted:
        assert resp.results == full.results
        assert resp.total_matches == full.total_matches
    roomy = db.search("common token3", limit=20, budget_ms=60_000)
    assert roomy.budget_exhausted is False
    assert roomy.results == full.results


def test_response_fields(db, corpus):
    resp = db.search("fox")
    assert isinstance(resp.took_ms, float) and resp.took_ms >= 0
    assert isinstance(resp.total_matches, int)
    assert resp.budget_exhausted is False and resp.index_complete is True
    for h in resp.results:
        assert h.primitive in {"kv", "json", "events", "state", "traces", "runs"}
        assert isinstance(h.run, str) and isinstance(h.score, float)


def test_search_does_not_write(db, corpus):
    (r1, r2, _), _ = corpus

    def footprint():
        return ([db.replay_run(r) for r in (r1, r2)],
                sum(s["keys"] for s in db.info()["shards"]))

    before = footprint()
    db.search("fox dog", limit=100)
    assert footprint() == before


# --- recovery ---------------------------------------------------------------------


def test_search_after_reopening_finds_the_same_hits(tmp_path):
    path = tmp_path / "db"
    queries = ["fox", "dog lazy", "quick", "alpha", "observe"]
    with inmem.open(path, durability="strict") as db:
        r1 = db.begin_run(name="fox run", tags=("alpha",))
        r2 = db.begin_run()
        db.kv.put(r1, "a", "the quick brown fox")
        db.kv.put(r1, "gone", "fox fox")
        db.kv.delete(r1, "gone")
        db.snapshot()
        db.json.put(r2, "doc", {"t": "lazy dog", "n": ["quick"]})
        db.events.append(r2, "observe", {"m": "fox"})
        db.state.set(r1, "s", "dog")
        db.traces.record(r2, "thought", {"x": "lazy fox"})
        dead = db.begin_run(name="fox dead")
        db.kv.put(dead, "k", "fox")
        db.runs.delete(dead)
        before = {q: db.search(q, limit=50) for q in queries}
    for _ in range(2):  # once from snapshot + log, once more from the close snapshot
        with inmem.open(path, durability="strict") as db:
            for q in queries:
                after = db.search(q, limit=50)
                assert [doc_of(h) for h in after.results] == \
                    [doc_of(h) for h in before[q].results], q
                assert [h.score for h in after.results] == \
                    pytest.approx([h.score for h in before[q].results]), q
                assert [h.snippet for h in after.results] == \
                    [h.snippet for h in before[q].results], q
                assert after.total_matches == before[q].total_matches


@pytest.mark.parametrize("snapshot", [True, False])
def test_expiry_after_reopening(tmp_path, clock_factory, snapshot):
    path = tmp_path / "db"
    clock = clock_factory()
    with inmem.open(path, durability="strict", clock=clock, snapshot_on_close=snapshot) as db:
        run = db.begin_run()
        db.kv.put(run, "short", "fleeting", ttl=5)
        db.kv.put(run, "long", "fleeting lasting", ttl=50)
        if snapshot:
            db.snapshot()
    with inmem.open(path, durability="strict", clock=clock, snapshot_on_close=snapshot) as db:
        assert {h.ref for h in db.search("fleeting").results} == {"short", "long"}
        clock.advance(10)
        assert [h.ref for h in db.search("fleeting").results] == ["long"]
        clock.advance(100)
        assert db.search("fleeting lasting").results == []


def test_limit_zero_still_counts_the_matches(db):
    run = db.begin_run()
    for i in range(5):
        db.kv.put(run, f"k{i}", "timeout error")
    assert db.search("timeout", limit=1).total_matches == 5
    page = db.search("timeout", limit=0)
    assert page.results == [] and page.total_matches == 5
    assert db.search("timeout", limit=0, offset=3).total_matches == 5


def test_took_ms_counts_the_whole_call(monkeypatch):
    # It began after the run check (and, on the first call, the search module's import):
    # a search slowed there said it took almost nothing.
    import asyncio
    import time as _time

    import inmem.asyncio

    def slowed(check):
        def run_status(r):
            _time.sleep(0.05)
            return check(r)
        return run_status

    def aslowed(check):
        async def run_status(r):
            _time.sleep(0.05)
            return await check(r)
        return run_status

    with inmem.open(None) as db:
        run = db.begin_run()
        db.kv.put(run, "k", "alpha beta")
        monkeypatch.setattr(db, "run_status", slowed(db.run_status))
        assert db.search("alpha", run=run).took_ms >= 50

    async def on_asyncio():
        adb = await inmem.asyncio.open(None)
        run = await adb.begin_run()
        await adb.kv.put(run, "k", "alpha beta")
        monkeypatch.setattr(adb, "run_status", aslowed(adb.run_status))
        took = (await adb.search("alpha", run=run)).took_ms
        await adb.close()
        return took

    assert asyncio.run(on_asyncio()) >= 50
