"""Every error a caller can trigger is an InmemError subclass, on every backend.

Bad arguments of the wrong type (a list where a run id or key goes, tags that
are not a list), values nested far too deep, trace trees thousands of levels
deep, malformed transactions, bad options and URLs, and calls after close():
each is refused with a typed error that says what to do, never a TypeError,
RecursionError or a library's own exception.
"""

from __future__ import annotations

import msgpack
import pytest
import zmq

import inmem
from inmem import protocol
from inmem.values import DEPTH_MAX

UNHASHABLE = ["x"]  # a list: unhashable, so a dict lookup with it raises TypeError

#: every call that names a run, with `R` standing for the run and `K` for the key
CALLS = {
    "kv.put": lambda db, R, K: db.kv.put(R, K, 1),
    "kv.get": lambda db, R, K: db.kv.get(R, K),
    "kv.get_versioned": lambda db, R, K: db.kv.get_versioned(R, K),
    "kv.exists": lambda db, R, K: db.kv.exists(R, K),
    "kv.delete": lambda db, R, K: db.kv.delete(R, K),
    "kv.cas": lambda db, R, K: db.kv.cas(R, K, 0, 1),
    "kv.get_many": lambda db, R, K: db.kv.get_many(R, [K]),
    "state.init": lambda db, R, K: db.state.init(R, K, 1),
    "state.read": lambda db, R, K: db.state.read(R, K),
    "state.set": lambda db, R, K: db.state.set(R, K, 1),
    "state.delete": lambda db, R, K: db.state.delete(R, K),
    "json.put": lambda db, R, K: db.json.put(R, K, {}),
    "json.get": lambda db, R, K: db.json.get(R, K),
    "json.set": lambda db, R, K: db.json.set(R, K, "$.a", 1),
    "events.append": lambda db, R, K: db.events.append(R, K, {}),
    "events.by_type": lambda db, R, K: db.events.by_type(R, K),
    "traces.get": lambda db, R, K: db.traces.get(R, K),
    "traces.by_tag": lambda db, R, K: db.traces.by_tag(R, K),
    "traces.by_type": lambda db, R, K: db.traces.by_type(R, K),
    "traces.tree": lambda db, R, K: db.traces.tree(R, K),
    "tx.get": lambda db, R, K: _tx(db, R, lambda tx: tx.kv.get(K)),
    "tx.put": lambda db, R, K: _tx(db, R, lambda tx: tx.kv.put(K, 1)),
}



def _tx(db, run, body):
    tx = db.transaction(run)
    body(tx)
    return tx.commit()


def _refused(fn, errors=inmem.InmemError) -> str | None:
    """None when `fn()` raises one of `errors`; otherwise what it did instead."""
    try:
        result = fn()
    except errors:
        return None
    except BaseException as exc:  # the finding: anything untyped
        return f"raised {type(exc).__name__}: {exc}"
    return f"returned {result!r:.80}"


def test_a_list_as_the_run_is_a_typed_error(db):
    # kv.put is checked on its own below: on the embedded fast path it is the
    # write path's business.
    outcomes = {name: _refused(lambda: call(db, UNHASHABLE, "k"))
                for name, call in CALLS.items() if name != "kv.put"}
    assert {n: o for n, o in outcomes.items() if o} == {}


def test_a_list_as_the_run_of_kv_put_is_a_typed_error(db):
    with pytest.raises(inmem.InmemError):
        db.kv.put(UNHASHABLE, "k", 1)


def test_a_list_as_the_key_is_a_typed_error(db, run):
    outcomes = {name: _refused(lambda: call(db, run, UNHASHABLE)) for name, call in CALLS.items()}
    assert {n: o for n, o in outcomes.items() if o} == {}


def test_a_list_as_run_or_key_on_the_kv_fast_path_names_the_problem(db, run):
    with pytest.raises(inmem.InvalidKey, match="run id must be a str"):
        db.kv.get(["x"], "k")
    with pytest.raises(inmem.InvalidKey, match="key must be a str"):
        db.kv.get(run, ["k"])
    with pytest.raises(inmem.InvalidKey, match="key must be a str"):
        db.kv.put(run, ["k"], 1)
    assert db.kv.get(run, "k") is None


@pytest.mark.parametrize("keys", [None, 5, "abc", b"ab"])
def test_get_many_takes_a_list_of_keys_only(db, run, keys):
    with pytest.raises(inmem.InvalidValue, match="keys must be a list"):
        db.kv.get_many(run, keys)


def test_get_many_still_takes_any_iterable_of_keys(db, run):
    db.kv.put(run, "a", 1)
    assert db.kv.get_many(run, ("a", "b")) == [1, None]
    assert db.kv.get_many(run, (k for k in ["b", "a"])) == [None, 1]


BAD_TAGS = [None, "abc", 5, {"a": 1}, [1], ["ok", None]]


@pytest.mark.parametrize("tags", BAD_TAGS, ids=repr)
def test_begin_run_tags_must_be_a_list_of_str(db, tags):
    with pytest.raises(inmem.InvalidValue, match="tags must be a list or tuple of str"):
        db.begin_run(tags=tags)
    assert db.runs.list() == []


@pytest.mark.parametrize("tags", BAD_TAGS, ids=repr)
def test_trace_tags_must_be_a_list_of_str(db, run, tags):
    with pytest.raises(inmem.InvalidValue, match="tags must be a list or tuple of str"):
        db.traces.record(run, "thought", {}, tags=tags)
    with pytest.raises(inmem.InvalidValue, match="tags must be a list or tuple of str"):
        _tx(db, run, lambda tx: tx.traces.record("thought", {}, tags=tags))
    assert db.traces.roots(run) == []


def test_tags_in_a_pipeline_are_refused_when_queued(db, run):
    p = db.pipeline()
    with pytest.raises(inmem.InvalidValue, match="tags must be a list or tuple of str"):
        p.begin_run(tags="abc")
    with pytest.raises(inmem.InvalidValue, match="tags must be a list or tuple of str"):
        p.traces.record(run, "thought", {}, tags=None)
    assert len(p) == 0


def test_tags_as_a_list_or_tuple_are_kept(db, run):
    a = db.begin_run(tags=["x", "y"])
    b = db.begin_run(tags=("z",))
    assert db.runs.get(a).tags == ["x", "y"] and db.runs.get(b).tags == ["z"]


# -- values nested too deep -----------------------------------------------------------


def _nested_list(depth: int):
    v = 1
    for _ in range(depth):
        v = [v]
    return v


def _nested_dict(depth: int):
    v = 1
    for i in range(depth):
        v = {f"k{i % 3}": v, "a": i}
    return v


def _cyclic():
    v = [1]
    v.append(v)
    return v


DEEP = {"list 1000": lambda: _nested_list(1000), "dict 1000": lambda: _nested_dict(1000),
        "list 10k": lambda: _nested_list(10_000), "cyclic": _cyclic}

#: every write that takes a value, given the run and the value
WRITES = {
    "kv.put": lambda db, run, v: db.kv.put(run, "k", v),
    "kv.cas": lambda db, run, v: db.kv.cas(run, "k", 0, v),
    "events.append": lambda db, run, v: db.events.append(run, "t", v),
    "events.append dict": lambda db, run, v: db.events.append(run, "t", {"x": v}),
    "state.set": lambda db, run, v: db.state.set(run, "s", v),
    "json.put": lambda db, run, v: db.json.put(run, "d", {"x": v}),
    "json.set": lambda db, run, v: db.json.set(run, "d", "$.x", v),
    "traces.record": lambda db, run, v: db.traces.record(run, "thought", {"x": v}),
    "traces.record metadata": lambda db, run, v: db.traces.record(run, "thought", {},
                                                                  metadata=v),
    "begin_run metadata": lambda db, run, v: db.begin_run(metadata=v),
    "tx.kv.put": lambda db, run, v: _tx(db, run, lambda tx: tx.kv.put("k", v)),
    "tx.events.append": lambda db, run, v: _tx(db, run, lambda tx: tx.events.append("t", v)),
    "tx.state.set": lambda db, run, v: _tx(db, run, lambda tx: tx.state.set("s", v)),
}


@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_value_nested_too_deep_is_invalid_and_names_the_limit(db, run, write):
    for shape, make in DEEP.items():
        with pytest.raises(inmem.InvalidValue, match=f"deeper than {DEPTH_MAX} levels"):
            WRITES[write](db, run, make())
    assert db.kv.get(run, "k") is None and db.events.count(run) == 0
    assert db.traces.roots(run) == [] and db.runs.list() == [db.runs.get(run)]


def test_a_value_nested_too_deep_fails_in_place_in_a_pipeline(db, run):
    p = db.pipeline()
    for make in DEEP.values():
        p.kv.put(run, "k", make())
        p.events.append(run, "t", make())
    p.kv.put(run, "ok", 1)
    results = p.execute(raise_on_error=False)
    assert [type(r) for r in results] == [inmem.InvalidValue] * (2 * len(DEEP)) + [int]
    assert all(f"deeper than {DEPTH_MAX}" in str(r) for r in results[:-1])
    assert db.events.count(run) == 0 and db.kv.get(run, "ok") == 1


def test_the_deepest_allowed_value_is_stored_and_one_more_level_is_not(db, run):
    # DEPTH_MAX + 1 nested containers are allowed: the outermost is level 0.
    ok = _nested_list(DEPTH_MAX + 1)
    db.kv.put(run, "k", ok)
    db.events.append(run, "t", ok)
    assert db.kv.get(run, "k") == ok and db.events.read(run, 0).payload == ok
    with pytest.raises(inmem.InvalidValue):
        db.events.append(run, "t", [ok])


# -- deep trace trees ---------------------------------------------------------------

CHAIN = 5000


def _depth_and_ids(tree) -> tuple[int, list]:
    """Walk a chain iteratively: its length and ids, and that no node has two children."""
    ids = []
    node = tree
    while True:
        assert isinstance(node, inmem.TraceTree)
        ids.append(node.trace.id)
        if not node.children:
            return len(ids), ids
        assert len(node.children) == 1
        node = node.children[0]


def _record_chain(db, run, length: int) -> list:
    """A chain of traces, each the parent of the next, recorded in one pipeline.

    The ids are chosen here (the engine's optional trace id argument) so that
    the whole chain goes in one batch rather than one round trip per link.
    """
    ids = [f"t{i:05d}" for i in range(length)]
    p = db.pipeline()
    for i, tid in enumerate(ids):
        p._queue("tr.record", (run, "thought", {"step": i}, ids[i - 1] if i else None, [], None,
                               tid))
    assert p.execute() == ids
    return ids


def test_a_trace_chain_thousands_deep_has_a_tree(db, run):
    ids = _record_chain(db, run, CHAIN)
    ids.append(db.traces.record(run, "thought", {"step": CHAIN}, parent_id=ids[-1]))
    depth, walked = _depth_and_ids(db.traces.tree(run, ids[0]))
    assert depth == CHAIN + 1 and walked == ids
    # A subtree from the middle, and trees through a pipeline.
    assert _depth_and_ids(db.traces.tree(run, ids[CHAIN // 2]))[1] == ids[CHAIN // 2:]
    p = db.pipeline()
    p.traces.tree(run, ids[-3])
    p.traces.tree(run, "no-such-trace")
    tree, missing = p.execute(raise_on_error=False)
    assert _depth_and_ids(tree)[1] == ids[-3:]
    assert isinstance(missing, inmem.TraceNotFound)
    node = db.traces.tree(run, ids[0])
    for _ in range(CHAIN):
        node = node.children[0]
    assert node.trace.data == {"step": CHAIN} and node.trace.parent_id == ids[-2]


def _shape(tree):
    # Iterative, like the tree it checks: (id, [children's shapes]).
    out = (tree.trace.id, [])
    stack = [(tree, out)]
    while stack:
        node, shaped = stack.pop()
        for child in node.children:
            entry = (child.trace.id, [])
            shaped[1].append(entry)
            stack.append((child, entry))
    return out


def test_a_wide_and_deep_tree_keeps_children_in_record_order(db, run):
    root = db.traces.record(run, "decision", {})
    expected = (root, [])
    level = [(root, expected)]
    for _depth in range(4):
        next_level = []
        for parent, shaped in level:
            for _ in range(3):
                tid = db.traces.record(run, "thought", {}, parent_id=parent)
                entry = (tid, [])
                shaped[1].append(entry)
                next_level.append((tid, entry))
        level = next_level
    db.traces.record(run, "thought", {})  # another root, not in the tree
    assert _shape(db.traces.tree(run, root)) == expected


# -- malformed transactions -------------------------------------------------------------

MALFORMED_TX = {
    "reads not a list": lambda run: (run, "reads", []),
    "reads of ints": lambda run: (run, [1, 2], []),
    "read of two": lambda run: (run, [["kv", "k"]], []),
    "read of four": lambda run: (run, [["kv", "k", 0, 1]], []),
    "read in an unknown namespace": lambda run: (run, [["zz", "k", 0]], []),
    "read with a list key": lambda run: (run, [["kv", ["k"], 0]], []),
    "read with a str version": lambda run: (run, [["kv", "k", "0"]], []),
    "writes not a list": lambda run: (run, [], {"kv.put": 1}),
    "write of three": lambda run: (run, [], [["kv.put", [run, "k", 1, None], 9]]),
    "write of one": lambda run: (run, [], [["kv.put"]]),
    "write of an int": lambda run: (run, [], [7]),
    "write with a list op": lambda run: (run, [], [[["kv.put"], [run, "k", 1, None]]]),
    "write not allowed": lambda run: (run, [], [["run.end", [run]]]),
    "write args not a list": lambda run: (run, [], [["kv.put", 5]]),
    "write args empty": lambda run: (run, [], [["kv.put", []]]),
    "write to another run": lambda run: (run, [], [["kv.put", ["other", "k", 1, None]]]),
    "good write then a bad one": lambda run: (run, [], [["kv.put", [run, "k", 1, None]],
                                                        ["kv.put", [run]]]),
}


def _send_raw(db, backend, op, args):
    """Send one operation exactly as given: to the engine, or as a raw frame to the cluster.

    The Transaction class never builds a malformed commit, so this goes below it
    (and below the client's packing), as a foreign client on the wire would.
    """
    if backend not in ("cluster", "cluster-zmq", "proxied", "async-cluster",
                       "async-cluster-zmq"):
        return db._call(op, args)
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 10_000)
        sock.connect(db._backend.url)
        head = protocol.header(protocol.KIND_OP, protocol.slot_of(args[0]), 1)
        sock.send_multipart([head, msgpack.packb([op, list(args)], use_bin_type=True)])
        reply_head, body = sock.recv_multipart()
        assert reply_head == head
    finally:
        ctx.destroy(0)
    result = protocol.unpack_reply(body)
    if isinstance(result, inmem.InmemError):
        raise result
    return result


def test_a_malformed_transaction_commit_is_a_typed_error(db, backend, run):
    errors = {}
    for case, make in MALFORMED_TX.items():
        try:
            _send_raw(db, backend, "tx.commit", make(run))
            errors[case] = "accepted"
        except (inmem.InvalidValue, inmem.InvalidKey) as exc:
            if "internal error" in str(exc):
                errors[case] = str(exc)  # typed only by the worker's catch-all
        except BaseException as exc:
            errors[case] = f"{type(exc).__name__}: {exc}"
    assert errors == {}
    assert db.kv.get(run, "k") is None and db.kv.keys(run) == []


def test_a_well_formed_raw_transaction_commit_is_applied(db, backend, run):
    assert _send_raw(db, backend, "tx.commit",
                     (run, [["kv", "k", 0]], [["kv.put", [run, "k", 1, None]]])) == [1]
    assert db.kv.get(run, "k") == 1


# -- calls after close ----------------------------------------------------------------------

AFTER_CLOSE = {
    "kv.get": lambda db, run: db.kv.get(run, "k"),
    "kv.put": lambda db, run: db.kv.put(run, "k", 2),
    "kv.items": lambda db, run: db.kv.items(run),
    "events.append": lambda db, run: db.events.append(run, "t", {}),
    "begin_run": lambda db, run: db.begin_run(),
    "run_status": lambda db, run: db.run_status(run),
    "runs.list": lambda db, run: db.runs.list(),
    "transaction": lambda db, run: _tx(db, run, lambda tx: tx.kv.put("k", 3)),
    "pipeline": lambda db, run: _pipeline_put(db, run),
    "search": lambda db, run: db.search("anything"),
    "replay_run": lambda db, run: db.replay_run(run),
    "info": lambda db, run: db.info(),
    "snapshot": lambda db, run: db.snapshot(),
    "recovery_report": lambda db, run: db.recovery_report(),
}


def _pipeline_put(db, run):
    p = db.pipeline()
    p.kv.put(run, "k", 4)
    return p.execute()


def _says_closed(fn) -> str | None:
    try:
        result = fn()
    except inmem.InmemError as exc:
        return None if "closed" in str(exc) else f"{type(exc).__name__}: {exc}"
    except BaseException as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"answered {result!r:.80}"


def test_every_call_after_close_says_the_database_is_closed(db):
    run = db.begin_run()
    db.kv.put(run, "k", 1)
    kv = db.kv  # a section held from before close() is closed too
    db.close()
    outcomes = {name: _says_closed(lambda: call(db, run)) for name, call in AFTER_CLOSE.items()}
    outcomes["held kv.get"] = _says_closed(lambda: kv.get(run, "k"))
    outcomes["held kv.put"] = _says_closed(lambda: kv.put(run, "k", 5))
    outcomes["held kv.put_many"] = _says_closed(lambda: kv.put_many(run, [("k", 5)]))
    assert {n: o for n, o in outcomes.items() if o} == {}
    db.close()  # closing twice is harmless


# -- options, paths and URLs -----------------------------------------------------------------


def test_an_unknown_option_to_open_is_invalid_option_and_still_a_type_error(tmp_path):
    for path in (None, tmp_path / "store"):
        with pytest.raises(inmem.InvalidOption, match="unknown options.*bogus") as info:
            inmem.open(path, bogus=1)
        assert isinstance(info.value, TypeError)
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("options", [
    {"max_value_bytes": "big"}, {"max_value_bytes": 0}, {"flush_interval_ms": 0},
    {"snapshot_on_close": 1}, {"segment_bytes_max": 1.5}, {"max_pending_writes": True},
    {"snapshot_interval_s": float("nan")}, {"clock": 5},
], ids=repr)
def test_an_option_of_the_wrong_type_or_range_is_invalid_option(tmp_path, options):
    with pytest.raises(inmem.InvalidOption):
        inmem.open(tmp_path / "store", durability="strict", **options)
    with pytest.raises(inmem.InvalidOption):
        inmem.open(None, **options)


def test_opening_a_file_as_a_store_says_to_pass_a_directory(tmp_path):
    path = tmp_path / "a-file"
    path.write_bytes(b"not a store")
    with pytest.raises(inmem.StoreOpenError, match="not a directory") as info:
        inmem.open(path)
    assert isinstance(info.value, OSError) and info.value.path == str(path)
    assert path.read_bytes() == b"not a store"


def test_a_store_under_a_file_is_a_store_open_error(tmp_path):
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(inmem.StoreOpenError, match="cannot open the store"):
        inmem.open(tmp_path / "a-file" / "store", durability="strict")


@pytest.mark.parametrize("path", [5, b"/x", ["a"]], ids=repr)
def test_a_path_of_the_wrong_type_is_invalid_option(path):
    with pytest.raises(inmem.InvalidOption, match="path must be"):
        inmem.open(path)


@pytest.mark.parametrize("url", [
    "http://localhost:8080", "localhost:5555", "ipc://", "tcp://host", "tcp://host:port",
    "tcp://host:0", "tcp://:5555", "inproc://x", "", None, 5,
], ids=repr)
def test_a_bad_cluster_url_is_invalid_url_and_a_value_error(url):
    with pytest.raises(inmem.InvalidURL) as info:
        inmem.connect(url, timeout=0.2)
    assert isinstance(info.value, ValueError)
    assert "ipc://" in str(info.value) or "tcp://" in str(info.value)


@pytest.mark.parametrize("options", [
    {"bogus": 1}, {"timeout": "5"}, {"timeout": 0}, {"request_timeout": -1},
    {"max_message_bytes": "1"}, {"max_message_bytes": 1}, {"max_message_bytes": 1023},
    {"direct": "yes"},
], ids=repr)
def test_a_bad_connect_option_is_invalid_option_and_a_type_error(options):
    # Refused before any connection is tried: no cluster is needed.
    with pytest.raises(inmem.InvalidOption) as info:
        inmem.connect("ipc:///nonexistent/coordinator.sock", **options)
    assert isinstance(info.value, TypeError)
    if "max_message_bytes" in options:
        # The smallest a cluster takes too: a request of a few bytes must fit.
        assert "at least 1024" in str(info.value)


@pytest.mark.parametrize("options", [{"max_message_bytes": 1}, {"max_message_bytes": 1023}],
                         ids=repr)
def test_a_bad_asyncio_connect_option_is_invalid_option(options):
    import asyncio

    import inmem.asyncio as aio

    with pytest.raises(inmem.InvalidOption, match="at least 1024"):
        asyncio.run(aio.connect("ipc:///nonexistent/coordinator.sock", **options))


def test_the_new_errors_cross_the_wire_as_themselves():
    from inmem.errors import from_wire
    for err in (inmem.InvalidOption("o"), inmem.InvalidURL("u"),
                inmem.StoreOpenError("s", path="/p")):
        back = from_wire(err.to_wire())
        assert type(back) is type(err) and str(back) == str(err)
    assert from_wire(inmem.StoreOpenError("s", path="/p").to_wire()).path == "/p"


def test_open_takes_every_option_the_durable_store_takes(tmp_path):
    from inmem.shard.durable import DEFAULTS
    with inmem.open(tmp_path / "store", **DEFAULTS, max_value_bytes=1024) as db:
        assert db.info()["shards"][0]["durability"] == "buffered"


@pytest.mark.parametrize("reason", [[[[]]] * 3, {"a": 1}, b"bytes"])
def test_a_reason_that_is_not_text_is_refused(db, run, reason):
    with pytest.raises(inmem.InvalidValue, match="a reason must be a str"):
        db.abort_run(run, reason)
    assert db.run_status(run) == "active"


def test_a_reason_nested_deeper_than_python_recurses_is_refused(db, run):
    reason: list = []
    for _ in range(5_000):
        reason = [reason]
    with pytest.raises(inmem.InvalidValue):
        db.abort_run(run, reason)
    assert db.run_status(run) == "active"


def test_a_number_or_an_exception_as_reason_is_kept_as_text(db):
    run = db.begin_run()
    db.abort_run(run, 42)
    assert db.runs.get(run).error == "42"


def test_errors_pickle_and_copy_with_their_message_and_fields(db, run):
    import copy
    import pickle
    db.kv.put(run, "k", 1)
    with pytest.raises(inmem.VersionMismatch) as cas:
        db.kv.cas(run, "k", 9, "x")
    db.state.init(run, "c", 1)
    with pytest.raises(inmem.VersionMismatch) as state_cas:
        db.state.cas(run, "c", 5, 2)
    other = db.begin_run()
    db.end_run(other)
    with pytest.raises(inmem.InvalidStatusTransition) as transition:
        db.end_run(other)
    with pytest.raises(inmem.RunNotFound) as missing:
        db.kv.get("no-such-run", "k")
    for err in (cas.value, state_cas.value, transition.value, missing.value):
        for twin in (pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)):
            assert type(twin) is type(err) and str(twin) == str(err)
            assert all(getattr(twin, f) == getattr(err, f) for f in type(err)._fields)
    assert pickle.loads(pickle.dumps(state_cas.value)).current.value == 1


def test_a_database_says_it_cannot_be_pickled(db):
    import pickle
    with pytest.raises(TypeError, match="open or connect again"):
        pickle.dumps(db)


def test_an_empty_path_is_refused_not_taken_as_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(inmem.InvalidOption, match="path is empty"):
        inmem.open("")
    assert list(tmp_path.iterdir()) == []  # nothing was made here
