"""Optimistic transactions over one run: atomic commit, own-write reads,
conflicts, aborts, results and run_transaction retries."""

from __future__ import annotations

import pytest

import inmem

from .support import ZERO_HASH, check_chain, expected_hash


def test_commit_applies_everything(db, run):
    db.kv.put(run, "count", 4)
    with db.transaction(run) as tx:
        n = tx.kv.get("count", 0)
        tx.kv.put("count", n + 1)
        tx.events.append("counted", {"n": n + 1})
        tx.state.set("phase", "done")
        tx.json.put("doc", {"n": n + 1})
        tx.traces.record("decision", {"n": n + 1})
    assert db.kv.get(run, "count") == 5
    assert db.kv.get_versioned(run, "count").version == 2
    assert db.events.head(run).payload == {"n": 5}
    assert db.state.read(run, "phase").value == "done"
    assert db.json.get(run, "doc") == {"n": 5}
    assert db.traces.roots(run)[0].data == {"n": 5}


def test_writes_inside_return_none(db, run):
    with db.transaction(run) as tx:
        assert tx.kv.put("a", 1) is None
        assert tx.kv.delete("zz") is None
        assert tx.events.append("t", {}) is None
        assert tx.state.set("s", 1) is None
        assert tx.json.put("d", {}) is None
        assert tx.json.set("d", "$.x", 1) is None
        assert tx.traces.record("thought", {}) is None


def test_results_in_order(db, run):
    db.events.append(run, "before", 0)
    db.kv.put(run, "a", "old")
    with db.transaction(run) as tx:
        tx.kv.put("a", "new")
        tx.events.append("first", {"z": 1, "a": 2})
        tid_placeholder = tx.traces.record("thought", {"t": 1})
        tx.kv.put("b", 1)
        tx.events.append("second", [1])
        tx.state.set("s", "v")
        tx.json.put("d", {"k": 1})
    assert tid_placeholder is None
    res = tx.results
    assert len(res) == 7
    assert res[0] == 2
    first, second = res[1], res[4]
    assert (first.sequence, first.event_type, first.payload) == (1, "first", {"z": 1, "a": 2})
    assert (second.sequence, second.event_type, second.payload) == (2, "second", [1])
    assert first.prev_hash == db.events.read(run, 0).hash
    assert second.prev_hash == first.hash
    assert first.hash == expected_hash(1, "first", {"a": 2, "z": 1}, first.timestamp,
                                       first.prev_hash)
    assert db.events.read(run, 1) == first
    assert db.events.read(run, 2) == second
    assert isinstance(res[2], str)
    assert db.traces.get(run, res[2]).data == {"t": 1}
    assert res[3] == 1
    assert res[5] == 1
    assert res[6] == 1
    check_chain(db.events.range(run, 0, 3))


def test_first_event_in_transaction_links_to_zero_hash(db, run):
    with db.transaction(run) as tx:
        tx.events.append("t", 0)
        tx.events.append("t", 1)
    a, b = tx.results
    assert (a.sequence, a.prev_hash) == (0, ZERO_HASH)
    assert (b.sequence, b.prev_hash) == (1, a.hash)
    assert db.events.verify_chain(run).valid


def test_trace_in_transaction_links_to_existing_parent(db, run):
    root = db.traces.record(run, "decision", {})
    with db.transaction(run) as tx:
        tx.traces.record("thought", {"x": 1}, parent_id=root)
    child = tx.results[0]
    assert db.traces.get(run, child).parent_id == root


def test_reads_see_own_writes(db, run):
    db.kv.put(run, "gone", 1)
    db.json.put(run, "doc", {"a": 1})
    with db.transaction(run) as tx:
        assert tx.kv.get("a") is None
        tx.kv.put("a", [1])
        assert tx.kv.get("a") == [1]
        assert tx.kv.exists("a") is True
        tx.kv.delete("gone")
        assert tx.kv.get("gone") is None
        assert tx.kv.get("gone", "dflt") == "dflt"
        assert tx.kv.exists("gone") is False
        tx.json.set("doc", "$.b", 2)
        assert tx.json.get("doc") == {"a": 1, "b": 2}
        assert tx.json.get("doc", "$.b") == 2
        tx.state.set("s", 10)
        assert tx.state.read("s").value == 10
        # Nothing is visible outside before the commit.
        assert db.kv.get(run, "a") is None
        assert db.kv.get(run, "gone") == 1
        assert db.json.get(run, "doc") == {"a": 1}
        assert db.state.read(run, "s") is None
    assert db.kv.get(run, "a") == [1]
    assert db.kv.exists(run, "gone") is False
    assert db.json.get(run, "doc") == {"a": 1, "b": 2}


def test_values_are_captured_at_the_write_call(db, run):
    value = {"l": [1]}
    with db.transaction(run) as tx:
        tx.kv.put("k", value)
        value["l"].append("changed before commit")
        tx.kv.get("k")["l"].append("changed through a read")
    assert db.kv.get(run, "k") == {"l": [1]}


def test_stored_none_is_not_the_default_inside(db, run):
    db.kv.put(run, "stored-none", None)
    with db.transaction(run) as tx:
        assert tx.kv.get("stored-none", "dflt") is None
        assert tx.kv.exists("stored-none") is True
        tx.kv.put("written-none", None)
        assert tx.kv.get("written-none", "dflt") is None
        assert tx.kv.exists("written-none") is True
    assert db.kv.exists(run, "written-none") is True


def test_ttl_inside_a_transaction(clocked_db, clock):
    db = clocked_db
    run = db.begin_run()
    with db.transaction(run) as tx:
        tx.kv.put("k", "v", ttl=2)
    clock.advance(1.999999)
    assert db.kv.get(run, "k") == "v"
    clock.advance(0.000001)
    assert db.kv.get(run, "k") is None


def test_transaction_reads_skip_expired_keys(clocked_db, clock):
    db = clocked_db
    run = db.begin_run()
    db.kv.put(run, "k", "v", ttl=1)
    clock.advance(1)
    with db.transaction(run) as tx:
        assert tx.kv.get("k") is None
        assert tx.kv.exists("k") is False
        tx.kv.put("seen", False)
    assert db.kv.get(run, "seen") is False


def test_conflict_when_a_read_key_changed(db, run):
    db.kv.put(run, "x", 1)
    with pytest.raises(inmem.TransactionConflict):
        with db.transaction(run) as tx:
            seen = tx.kv.get("x")
            db.kv.put(run, "x", 100)  # another client
            tx.kv.put("x", seen + 1)
            tx.kv.put("y", "written?")
            tx.events.append("t", {})
    assert db.kv.get(run, "x") == 100
    assert db.kv.get(run, "y") is None
    assert db.events.count(run) == 0


def test_conflict_when_a_missing_read_key_appears(db, run):
    with pytest.raises(inmem.TransactionConflict):
        with db.transaction(run) as tx:
            assert tx.kv.get("lock") is None
            db.kv.put(run, "lock", "other")
            tx.kv.put("lock", "mine")
    assert db.kv.get(run, "lock") == "other"


def test_conflict_when_a_read_key_is_deleted(db, run):
    db.kv.put(run, "x", 1)
    with pytest.raises(inmem.TransactionConflict):
        with db.transaction(run) as tx:
            tx.kv.get("x")
            db.kv.delete(run, "x")
            tx.kv.put("other", 1)
    assert db.kv.keys(run) == []


def test_conflict_on_state_read(db, run):
    db.state.set(run, "s", 1)
    with pytest.raises(inmem.TransactionConflict):
        with db.transaction(run) as tx:
            tx.state.read("s")
            db.state.set(run, "s", 2)
            tx.kv.put("k", 1)
    assert db.kv.get(run, "k") is None


def test_conflict_on_json_read(db, run):
    db.json.put(run, "d", {"a": 1})
    with pytest.raises(inmem.TransactionConflict):
        with db.transaction(run) as tx:
            tx.json.get("d", "$.a")
            db.json.set(run, "d", "$.b", 2)
            tx.kv.put("k", 1)
    assert db.kv.get(run, "k") is None


def test_unread_keys_changing_is_not_a_conflict(db, run):
    db.kv.put(run, "x", 1)
    with db.transaction(run) as tx:
        tx.kv.get("x")
        db.kv.put(run, "unrelated", 1)
        tx.kv.put("y", 2)
    assert db.kv.get(run, "y") == 2


def test_blind_write_does_not_conflict(db, run):
    with db.transaction(run) as tx:
        tx.kv.put("x", "tx")
        db.kv.put(run, "x", "other")
    assert db.kv.get(run, "x") == "tx"
    assert db.kv.get_versioned(run, "x").version == 2


def test_exception_inside_aborts(db, run):
    db.kv.put(run, "k", "before")
    with pytest.raises(KeyError):
        with db.transaction(run) as tx:
            tx.kv.put("k", "after")
            tx.kv.put("new", 1)
            tx.events.append("t", {})
            tx.traces.record("thought", {})
            tx.state.set("s", 1)
            tx.json.put("d", {})
            raise KeyError("boom")
    assert db.kv.get(run, "k") == "before"
    assert db.kv.get_versioned(run, "k").version == 1
    assert db.kv.get(run, "new") is None
    assert db.events.count(run) == 0
    assert db.traces.roots(run) == []
    assert db.state.read(run, "s") is None
    assert db.json.get(run, "d") is None


def test_invalid_write_aborts_whole_transaction(db, run):
    with pytest.raises((inmem.InvalidValue, inmem.InvalidKey)):
        with db.transaction(run) as tx:
            tx.kv.put("ok", 1)
            tx.kv.put("bad", object())
    assert db.kv.get(run, "ok") is None


def test_empty_transaction(db, run):
    with db.transaction(run) as tx:
        pass
    assert list(tx.results) == []


def test_read_only_transaction_results_empty(db, run):
    db.kv.put(run, "k", 1)
    with db.transaction(run) as tx:
        assert tx.kv.get("k") == 1
    assert list(tx.results) == []


def test_run_transaction_returns_fn_result(db, run):
    def fn(tx):
        n = tx.kv.get("n", 0)
        tx.kv.put("n", n + 1)
        return f"n={n + 1}"

    assert db.run_transaction(run, fn) == "n=1"
    assert db.run_transaction(run, fn) == "n=2"
    assert db.kv.get(run, "n") == 2


@pytest.mark.timeout(20)
def test_run_transaction_retries_then_succeeds(db, run):
    db.kv.put(run, "n", 0)
    calls = []

    def fn(tx):
        n = tx.kv.get("n")
        calls.append(n)
        if len(calls) == 1:
            db.kv.put(run, "n", 100)  # another client, between read and commit
        tx.kv.put("n", n + 1)
        tx.events.append("inc", n + 1)
        return n + 1

    assert db.run_transaction(run, fn, retries=8) == 101
    assert calls == [0, 100]
    assert db.kv.get(run, "n") == 101
    assert db.events.count(run) == 1  # the failed attempt left nothing behind


@pytest.mark.timeout(20)
def test_run_transaction_gives_up_after_retries(db, run):
    db.kv.put(run, "n", 0)
    calls = []

    def always_conflicts(tx):
        n = tx.kv.get("n")
        calls.append(n)
        db.kv.put(run, "n", n + 1000)
        tx.kv.put("mine", n)

    with pytest.raises(inmem.TransactionConflict):
        db.run_transaction(run, always_conflicts, retries=3)
    assert len(calls) in (3, 4)  # "retries" counts either attempts or re-attempts
    assert db.kv.get(run, "mine") is None


def test_run_transaction_does_not_retry_other_errors(db, run):
    calls = []

    def fn(tx):
        calls.append(1)
        raise ValueError("not a conflict")

    with pytest.raises(ValueError):
        db.run_transaction(run, fn)
    assert calls == [1]


def test_transactions_in_different_runs_are_independent(db):
    r1, r2 = db.begin_run(), db.begin_run()
    db.kv.put(r1, "k", 1)
    with db.transaction(r2) as tx:
        tx.kv.get("k")
        db.kv.put(r1, "k", 2)  # same key name, other run
        tx.kv.put("k", "r2")
    assert db.kv.get(r2, "k") == "r2"


def test_a_transaction_that_only_reads_works_on_an_ended_run(db, run):
    db.kv.put(run, "count", 3)
    db.end_run(run)
    assert db.run_transaction(run, lambda tx: tx.kv.get("count")) == 3
    with db.transaction(run) as tx:
        assert tx.kv.get("count") == 3
    with pytest.raises(inmem.RunNotActive):
        with db.transaction(run) as tx:
            tx.kv.put("count", 4)
    assert db.kv.get(run, "count") == 3


@pytest.mark.parametrize("retries", [-1, 1.5, True, "3"])
def test_retries_must_be_a_count(db, run, retries):
    calls = []
    with pytest.raises(inmem.InvalidValue, match="retries"):
        db.run_transaction(run, lambda tx: calls.append(1), retries=retries)
    with pytest.raises(inmem.InvalidValue, match="retries"):
        db.state.transition_or_init(run, "c", 0, lambda s: (1, 1), retries=retries)
    if db.state.read(run, "d") is None:
        db.state.init(run, "d", 0)
    with pytest.raises(inmem.InvalidValue, match="retries"):
        db.state.transition(run, "d", lambda s: (1, 1), retries=retries)
    assert calls == []


@pytest.mark.parametrize("read, change, says", [
    (lambda tx: tx.kv.get("k"), lambda db, r: db.kv.put(r, "k", 2), "key 'k' in run"),
    (lambda tx: tx.state.read("s"), lambda db, r: db.state.set(r, "s", 2), "state cell 's' in run"),
    (lambda tx: tx.json.get("d"), lambda db, r: db.json.put(r, "d", {"b": 1}), "document 'd' in run"),
    (lambda tx: tx.events.count(), lambda db, r: db.events.append(r, "e", 1), "the event log in run"),
])
def test_a_conflict_names_what_changed_in_words(db, run, read, change, says):
    db.kv.put(run, "k", 1)
    db.state.set(run, "s", 1)
    db.json.put(run, "d", {"a": 1})
    with pytest.raises(inmem.TransactionConflict, match=says):
        with db.transaction(run) as tx:
            read(tx)
            tx.kv.put("other", 1)
            change(db, run)
