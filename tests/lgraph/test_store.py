"""InmemStore: LangGraph's BaseStore contract on every backend, text search by BM25, TTLs,
and a model test against LangGraph's own in-memory store."""

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langgraph.store.base import (GetOp, InvalidNamespaceError, ListNamespacesOp, MatchCondition,
                                  PutOp, SearchOp)
from langgraph.store.memory import InMemoryStore

import inmem
from inmem.langgraph import InmemStore


@pytest.fixture
def store(db):
    return InmemStore(db)


def test_put_get_roundtrip_and_item_fields(store):
    store.put(("users", "u1"), "prefs", {"color": "green", "n": 3, "tags": ["a", "b"]})
    item = store.get(("users", "u1"), "prefs")
    assert item.value == {"color": "green", "n": 3, "tags": ["a", "b"]}
    assert item.key == "prefs" and item.namespace == ("users", "u1")
    assert item.created_at.tzinfo is not None and item.created_at == item.updated_at
    assert store.get(("users", "u1"), "other") is None
    assert store.get(("users", "u2"), "prefs") is None


def test_get_before_anything_was_written_is_none(store):
    assert store.get(("a",), "k") is None
    assert store.search(("a",)) == []
    assert store.list_namespaces() == []


def test_update_keeps_created_at_and_moves_updated_at(store):
    store.put(("n",), "k", {"v": 1})
    first = store.get(("n",), "k")
    store.put(("n",), "k", {"v": 2})
    second = store.get(("n",), "k")
    assert second.value == {"v": 2}
    assert second.created_at == first.created_at
    assert second.updated_at >= first.updated_at


def test_delete(store):
    store.put(("n",), "k", {"v": 1})
    store.delete(("n",), "k")
    assert store.get(("n",), "k") is None
    store.delete(("n",), "never-there")  # no error
    store.put(("n",), "k", {"v": 3})
    assert store.get(("n",), "k").value == {"v": 3}


def test_keys_and_labels_with_separator_characters(store):
    ns = ("a/b", "c:d", "100%")
    store.put(ns, "k/e:y%", {"v": 1})
    assert store.get(ns, "k/e:y%").value == {"v": 1}
    assert store.get(("a", "b"), "k/e:y%") is None
    [hit] = store.search(("a/b",))
    assert hit.namespace == ns and hit.key == "k/e:y%"
    assert store.list_namespaces() == [ns]


def test_search_by_namespace_prefix(store):
    store.put(("a",), "1", {"x": 1})
    store.put(("a", "b"), "2", {"x": 2})
    store.put(("a", "b", "c"), "3", {"x": 3})
    store.put(("ab",), "4", {"x": 4})
    assert {i.key for i in store.search(("a",))} == {"1", "2", "3"}
    assert {i.key for i in store.search(("a", "b"))} == {"2", "3"}
    assert {i.key for i in store.search(())} == {"1", "2", "3", "4"}
    assert all(i.score is None for i in store.search(("a",)))


def test_search_without_query_is_newest_first_with_limit_and_offset(store):
    for i in range(5):
        store.put(("p",), f"k{i}", {"i": i})
    keys = [i.key for i in store.search(("p",), limit=10)]
    assert keys == ["k4", "k3", "k2", "k1", "k0"]
    assert [i.key for i in store.search(("p",), limit=2, offset=1)] == ["k3", "k2"]


def test_search_filter(store):
    store.put(("f",), "a", {"kind": "fact", "score": 5, "meta": {"lang": "en"}})
    store.put(("f",), "b", {"kind": "fact", "score": 9, "meta": {"lang": "fr"}})
    store.put(("f",), "c", {"kind": "note", "score": 7})
    keys = lambda **kw: sorted(i.key for i in store.search(("f",), **kw))  # noqa: E731
    assert keys(filter={"kind": "fact"}) == ["a", "b"]
    assert keys(filter={"kind": "fact", "score": 9}) == ["b"]
    assert keys(filter={"meta": {"lang": "en"}}) == ["a"]
    assert keys(filter={"score": {"$gt": 6}}) == ["b", "c"]
    assert keys(filter={"score": {"$gte": 5, "$lt": 9}}) == ["a", "c"]
    assert keys(filter={"kind": {"$ne": "fact"}}) == ["c"]
    assert keys(filter={"missing": 1}) == []


def test_text_query_ranks_by_bm25_within_the_prefix(store):
    store.put(("docs", "u1"), "tea", {"text": "green tea and more green tea"})
    store.put(("docs", "u1"), "coffee", {"text": "black coffee, no tea"})
    store.put(("docs", "u1"), "bread", {"text": "sourdough bread"})
    store.put(("docs", "u2"), "tea2", {"text": "green tea"})
    hits = store.search(("docs", "u1"), query="green tea")
    assert [h.key for h in hits] == ["tea", "coffee"]
    assert hits[0].score > hits[1].score > 0
    assert {h.key for h in store.search(("docs",), query="green")} == {"tea", "tea2"}
    assert store.search(("docs",), query="nothing-matches-this") == []
    assert [h.key for h in store.search(("docs",), query="tea", filter={"text": "green tea"})] \
        == ["tea2"]


def test_text_query_pages_past_hits_outside_the_prefix(store):
    for i in range(120):
        store.put(("other",), f"o{i}", {"text": "needle needle needle"})
    for i in range(3):
        store.put(("mine",), f"m{i}", {"text": f"needle hay {i}"})
    hits = store.search(("mine",), query="needle", limit=5)
    assert sorted(h.key for h in hits) == ["m0", "m1", "m2"]
    assert len(store.search(("other",), query="needle", limit=7, offset=110)) == 7


def test_index_choices(db):
    store = InmemStore(db, index_fields=["title"])
    store.put(("i",), "default", {"title": "alpha", "body": "beta"})
    store.put(("i",), "chosen", {"title": "gamma", "body": "delta"}, index=["body"])
    store.put(("i",), "hidden", {"title": "alpha beta delta"}, index=False)
    assert [h.key for h in store.search(("i",), query="alpha")] == ["default"]
    assert store.search(("i",), query="beta") == []
    assert [h.key for h in store.search(("i",), query="delta")] == ["chosen"]
    # not indexed is still stored and listed
    assert store.get(("i",), "hidden").value == {"title": "alpha beta delta"}
    assert len(store.search(("i",))) == 3


def test_list_namespaces(store):
    for ns in [("a", "b", "c"), ("a", "b", "d"), ("a", "x"), ("z", "b"), ("a", "b", "c")]:
        store.put(ns, "k", {"v": 1})
    assert store.list_namespaces() == [("a", "b", "c"), ("a", "b", "d"), ("a", "x"), ("z", "b")]
    assert store.list_namespaces(prefix=("a", "b")) == [("a", "b", "c"), ("a", "b", "d")]
    assert store.list_namespaces(prefix=("a", "*", "c")) == [("a", "b", "c")]
    assert store.list_namespaces(suffix=("b",)) == [("z", "b")]
    assert store.list_namespaces(prefix=("a",), max_depth=2) == [("a", "b"), ("a", "x")]
    assert store.list_namespaces(limit=2, offset=1) == [("a", "b", "d"), ("a", "x")]


def test_batch_reads_see_the_store_before_the_batch_writes(store):
    store.put(("b",), "k", {"v": "old"})
    results = store.batch([
        PutOp(("b",), "k", {"v": "new"}),
        GetOp(("b",), "k"),
        PutOp(("b",), "j", {"v": 1}),
        SearchOp(("b",)),
        ListNamespacesOp(match_conditions=(MatchCondition("prefix", ("b",)),)),
        PutOp(("b",), "j", None),
    ])
    assert results[0] is None and results[2] is None and results[5] is None
    assert results[1].value == {"v": "old"}
    assert [i.key for i in results[3]] == ["k"]
    assert results[4] == [("b",)]
    assert store.get(("b",), "k").value == {"v": "new"}
    assert store.get(("b",), "j") is None  # the last put of a key wins


def test_async_methods(store):
    async def go():
        await store.aput(("as",), "k", {"text": "async hello"})
        item = await store.aget(("as",), "k")
        hits = await store.asearch(("as",), query="hello")
        spaces = await store.alist_namespaces()
        await store.adelete(("as",), "k")
        return item, hits, spaces, await store.aget(("as",), "k")
    item, hits, spaces, gone = asyncio.run(go())
    assert item.value == {"text": "async hello"}
    assert [h.key for h in hits] == ["k"]
    assert spaces == [("as",)]
    assert gone is None


def test_ttl_expires_and_reads_refresh_it(open_db, clock):
    db = open_db(clock=clock)
    store = InmemStore(db)
    store.put(("t",), "kept", {"v": 1}, ttl=1.0)  # minutes
    store.put(("t",), "lapsed", {"v": 2}, ttl=1.0)
    store.put(("t",), "forever", {"v": 3})
    clock.advance(50)
    assert store.get(("t",), "kept").value == {"v": 1}  # refreshes: 60 s from now
    assert store.get(("t",), "lapsed", refresh_ttl=False).value == {"v": 2}
    clock.advance(20)
    assert store.get(("t",), "lapsed") is None
    assert store.get(("t",), "kept", refresh_ttl=False).value == {"v": 1}
    clock.advance(61)
    assert store.get(("t",), "kept") is None
    assert [i.key for i in store.search(("t",))] == ["forever"]


def test_default_ttl_from_ttl_config(open_db, clock):
    store = InmemStore(open_db(clock=clock), ttl={"default_ttl": 2.0, "refresh_on_read": False})
    store.put(("d",), "k", {"v": 1})
    clock.advance(100)
    assert store.get(("d",), "k") is not None
    clock.advance(30)
    assert store.get(("d",), "k") is None


def test_bad_input_is_refused_clearly(store):
    with pytest.raises(InvalidNamespaceError):
        store.put(("bad.label",), "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        store.put((), "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        store.batch([GetOp(("a.b",), "k")])
    with pytest.raises(inmem.InvalidValue):
        store.put(("ok",), "k", {"v": object()})
    with pytest.raises(ValueError):
        store.batch(["not an op"])


def test_a_value_with_a_key_that_is_not_a_str_is_refused_before_it_is_stored(store):
    store.put(("users",), "good", {"text": "fine"})
    looped: list = []
    looped.append(looped)
    for bad in ({"scores": {1: 0.5}}, {"rows": [{"ok": 1}, {(1, 2): "tuple key"}]},
                {"deep": [[[{None: 1}]]]}, {"loop": looped}):
        with pytest.raises(inmem.InvalidValue, match="JSON-like"):
            store.put(("users",), "bad", bad)
    # Nothing of them was stored, and the namespace reads as before.
    assert store.get(("users",), "bad") is None
    assert [i.key for i in store.search(("users",))] == ["good"]
    for not_a_dict in ([1, 2], "text", 3):  # (None is a delete, as LangGraph has it)
        with pytest.raises(inmem.InvalidValue, match="must be a dict"):
            store.put(("users",), "bad", not_a_dict)
    store.put(("users",), "nested", {"a": [{"b": {"c": [1, (2, 3)]}}]})
    assert store.get(("users",), "nested").value == {"a": [{"b": {"c": [1, [2, 3]]}}]}


def test_stores_in_separate_runs_do_not_see_each_other(db):
    a, b = InmemStore(db, run="store-a"), InmemStore(db, run="store-b")
    a.put(("n",), "k", {"text": "only in a"})
    assert b.get(("n",), "k") is None
    assert b.search(("n",), query="only") == []
    assert db.run_status("store-a") == "paused"


# -- the model: LangGraph's InMemoryStore -------------------------------------------

_labels = st.sampled_from(["a", "b", "c"])
_namespaces = st.lists(_labels, min_size=1, max_size=3).map(tuple)
_ops = st.lists(st.one_of(
    st.tuples(st.just("put"), _namespaces, st.sampled_from(["k1", "k2"]),
              st.integers(0, 3)),
    st.tuples(st.just("delete"), _namespaces, st.sampled_from(["k1", "k2"]), st.just(0)),
), max_size=25)


@settings(max_examples=25, deadline=None)
@given(ops=_ops, prefixes=st.lists(st.lists(_labels, max_size=2).map(tuple), max_size=3))
def test_agrees_with_langgraphs_in_memory_store(ops, prefixes):
    model = InMemoryStore()
    with inmem.open(None) as db:
        store = InmemStore(db)
        for kind, ns, key, n in ops:
            for s in (model, store):
                if kind == "put":
                    s.put(ns, key, {"n": n})
                else:
                    s.delete(ns, key)
        for ns in {op[1] for op in ops}:
            for key in ("k1", "k2"):
                a, b = model.get(ns, key), store.get(ns, key)
                assert (a is None) == (b is None)
                assert a is None or a.value == b.value
        for prefix in prefixes:
            want = {(i.namespace, i.key, i.value["n"]) for i in model.search(prefix, limit=100)}
            got = {(i.namespace, i.key, i.value["n"]) for i in store.search(prefix, limit=100)}
            assert got == want
            # The model keeps a namespace whose items were all deleted; a namespace here
            # is where items are, as in LangGraph's database stores.
            assert sorted({ns for ns, _, _ in want}) == store.list_namespaces(
                prefix=prefix or None)


def test_a_value_stored_before_keys_were_checked_still_reads_back():
    # Such a value (an int key) could be stored by earlier versions: reading it must not
    # break every search of its namespace.
    import msgpack

    from inmem.langgraph.store import _unpack
    assert _unpack(msgpack.packb({"scores": {1: 0.5}}, use_bin_type=True)) == {"scores": {1: 0.5}}


def _batch_with_a_write_between(store, ops, between):
    """Run `store`'s batch of `ops`, calling `between()` after its reads were answered and
    before anything else of it is sent: another client's write landing meanwhile."""
    from inmem.langgraph.driver import execute_sync
    plan = store._batch(ops)
    sent = next(plan)
    answer = execute_sync(store.db, sent)
    between()
    try:
        while True:
            sent = plan.send(answer)
            answer = execute_sync(store.db, sent)
    except StopIteration as stop:
        return stop.value


def test_a_ttl_refresh_never_undoes_a_put_made_meanwhile(open_db, clock):
    store = InmemStore(open_db(clock=clock))
    store.put(("n",), "k", {"v": "old"}, ttl=1.0)
    store.put(("n",), "s", {"v": "old"}, ttl=1.0)
    got = _batch_with_a_write_between(
        store, [GetOp(("n",), "k"), SearchOp(("n",))],
        lambda: (store.put(("n",), "k", {"v": "new"}, ttl=1.0),
                 store.put(("n",), "s", {"v": "new"})))
    assert got[0].value == {"v": "old"}  # what the batch read, as it read it
    assert store.get(("n",), "k").value == {"v": "new"}
    assert store.get(("n",), "s").value == {"v": "new"}
    clock.advance(120)  # "s" was put again without a TTL: the refresh did not give it one
    assert store.get(("n",), "k") is None
    assert store.get(("n",), "s").value == {"v": "new"}


def test_a_ttl_refresh_does_not_bring_back_an_item_deleted_or_expired_meanwhile(open_db, clock):
    store = InmemStore(open_db(clock=clock))
    store.put(("n",), "gone", {"v": 1}, ttl=1.0)
    store.put(("n",), "lapsing", {"v": 2}, ttl=1.0)
    clock.advance(50)
    got = _batch_with_a_write_between(
        store, [GetOp(("n",), "gone"), GetOp(("n",), "lapsing")],
        lambda: (store.delete(("n",), "gone"), clock.advance(20)))
    assert [g.value for g in got] == [{"v": 1}, {"v": 2}]
    assert store.get(("n",), "gone") is None
    assert store.get(("n",), "lapsing") is None


def test_a_bad_ttl_or_page_is_refused_in_the_units_the_caller_used(store):
    # A TTL is in minutes (LangGraph's unit); the engine's error named the seconds it
    # became ("got -60.0" for ttl=-1), and a str TTL was taken as a number.
    for ttl in (0, -1, 10 ** 12, "5", True):
        with pytest.raises(inmem.InvalidValue, match=r"ttl is a number of minutes .* got "
                                                      + repr(ttl)[:3].replace("(", r"\(")):
            store.put(("t",), "k", {"v": 1}, ttl=ttl)
    assert store.get(("t",), "k") is None
    store.put(("t",), "k", {"v": 1}, ttl=0.5)
    store.put(("t",), "j", {"v": 2})
    # a negative limit gave every item but the last
    for kwargs in ({"limit": -1}, {"offset": -1}):
        with pytest.raises(inmem.InvalidValue, match=next(iter(kwargs))):
            store.search(("t",), **kwargs)
        with pytest.raises(inmem.InvalidValue, match=next(iter(kwargs))):
            store.list_namespaces(**kwargs)
    assert len(store.search(("t",), limit=0)) == 0
    assert len(store.search(("t",))) == 2


@pytest.mark.parametrize("options", [
    {"index_fields": "title"},          # a str: each of its letters was taken for a path
    {"index_fields": 5}, {"index_fields": ["title", 5]},
    {"ttl": 5}, {"ttl": {"default_ttl": -1}}, {"ttl": {"refresh_on_read": "no"}},
    {"run": ""}, {"run": 5},
])
def test_options_it_cannot_use_are_refused_when_it_is_made(db, options):
    # index_fields="title" indexed nothing (search(query=...) found no item) without a word;
    # the others raised TypeError or AttributeError, or waited for the first put.
    with pytest.raises(inmem.InvalidOption, match=next(iter(options))):
        InmemStore(db, **options)


def test_a_put_whose_index_is_a_str_is_refused(store):
    # index="title" indexed the paths "t", "i", "l", "e": the item was never found by its text.
    with pytest.raises(inmem.InvalidValue, match="index"):
        store.put(("i",), "k", {"title": "alpha"}, index="title")
    assert store.get(("i",), "k") is None
    store.put(("i",), "k", {"title": "alpha"}, index=["title"])
    assert [h.key for h in store.search(("i",), query="alpha")] == ["k"]


@pytest.mark.parametrize("bad", [5, "n", {"n": {"$bogus": 1}}, {"n": {"$gt": 1, "$in": [1]}},
                                 {1: 2}, {"n": {1: 2}}, {"n": {"x": {"$nope": 1}}}])
def test_a_filter_it_cannot_apply_is_invalid_value_found_or_not(store, bad):
    # A filter that is not a dict raised AttributeError; an unknown operator raised ValueError
    # only when an item was there to compare, and an empty namespace answered [] to it.
    store.put(("f",), "k", {"n": 1})
    for prefix in (("f",), ("empty",)):
        with pytest.raises(inmem.InvalidValue, match="filter"):
            store.search(prefix, filter=bad)
        with pytest.raises(inmem.InvalidValue, match="filter"):
            store.search(prefix, query="x", filter=bad)


def test_a_namespace_given_as_a_str_is_refused_not_split_into_letters(store):
    # ("users") is a str, not a tuple: the item went under ("u", "s", "e", "r", "s"), where
    # search(("users",)) never found it.
    for call in (lambda: store.put(("users"), "k", {"t": "x"}),
                 lambda: store.get("users", "k"),
                 lambda: store.delete("users", "k"),
                 lambda: store.search("users"),
                 lambda: store.list_namespaces(prefix="users"),
                 lambda: store.list_namespaces(suffix="users"),
                 lambda: asyncio.run(store.aput("users", "k", {"t": "x"}))):
        with pytest.raises(InvalidNamespaceError, match="tuple"):
            call()
    assert store.list_namespaces() == []


def test_a_text_search_right_after_a_restart_finds_every_item(tmp_path):
    # The index is rebuilt in the background after a reopen, and a search helps it for
    # 20 ms, then answers from what is indexed (index_complete=False): the store took that
    # answer as the whole, and search(query=...) found ~500 of 20,000 items until the
    # rebuild was done, with nothing to tell the caller.
    db = inmem.open(tmp_path / "memory")
    store = InmemStore(db)
    for batch in range(20):
        store.batch([PutOp(("n",), f"k{batch}_{i}", {"text": f"alpha beta gamma {i}"})
                     for i in range(1000)])
    db.close()
    db = inmem.open(tmp_path / "memory")
    try:
        assert db.info()["shards"][0]["index_complete"] is False  # the case under test
        store = InmemStore(db)
        assert len(store.search(("n",), query="alpha", limit=30_000)) == 20_000
        assert len(asyncio.run(store.asearch(("n",), query="gamma 7", limit=5))) == 5
    finally:
        db.close()


def test_a_run_holding_other_keys_is_named_not_misread(db):
    # Given a run that holds other KV keys (an agent's own run), every read ended in a bare
    # KeyError, TypeError or IndexError from inside the record's decoding, and
    # list_namespaces reported a namespace () for a key that is no item.
    run = db.begin_run(run_id="agent")
    db.kv.put(run, "plain", "x")
    db.kv.put(run, "n/:k", b"not a record")
    store = InmemStore(db, run="agent")
    for call in (store.list_namespaces, lambda: store.search(()),
                 lambda: store.search(("n",)), lambda: store.get(("n",), "k"),
                 lambda: store.search((), query="x"),
                 lambda: store.put(("n",), "k", {"v": 1})):
        with pytest.raises(inmem.InvalidValue, match="not an InmemStore item"):
            call()
    assert db.kv.get(run, "n/:k") == b"not a record"  # nothing was written over it
