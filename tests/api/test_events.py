"""Events: append-only, per-run, hash-chained; the hash is recomputed here
from the documented recipe."""

from __future__ import annotations

import pytest

import inmem

from .support import ZERO_HASH, check_chain, expected_hash


def test_first_event(clocked_db, clock):
    run = clocked_db.begin_run()
    ev = clocked_db.events.append(run, "started", {"b": 2, "a": 1})
    assert ev.sequence == 0
    assert ev.event_type == "started"
    assert ev.payload == {"b": 2, "a": 1}
    assert ev.timestamp == clock.now_us
    assert ev.prev_hash == ZERO_HASH
    assert isinstance(ev.hash, bytes) and len(ev.hash) == 32
    assert ev.hash == expected_hash(0, "started", {"a": 1, "b": 2}, clock.now_us, ZERO_HASH)


def test_sequences_grow_by_one_and_link(clocked_db, clock):
    run = clocked_db.begin_run()
    events = []
    for i in range(5):
        clock.advance(0.001)
        events.append(clocked_db.events.append(run, f"t{i % 2}", {"i": i}))
    assert [e.sequence for e in events] == [0, 1, 2, 3, 4]
    check_chain(events)
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)


def test_hash_sorts_keys_recursively(db, run):
    payload = {"z": {"y": 1, "b": [{"d": 1, "c": 2}]}, "a": b"\x00", "m": [3, "s", None, 1.5]}
    ev = db.events.append(run, "nested", payload)
    assert ev.hash == expected_hash(0, "nested", payload, ev.timestamp, ZERO_HASH)
    # Key order must not change the hash: the same payload built in another order.
    other = {"m": [3, "s", None, 1.5], "a": b"\x00", "z": {"b": [{"c": 2, "d": 1}], "y": 1}}
    assert expected_hash(0, "nested", other, ev.timestamp, ZERO_HASH) == ev.hash


@pytest.mark.parametrize("payload", [None, 0, "text", b"bytes", [1, [2]], {}, True, 2.5])
def test_any_value_is_a_payload(db, run, payload):
    ev = db.events.append(run, "p", payload)
    assert db.events.read(run, 0).payload == payload
    assert ev.hash == expected_hash(0, "p", payload, ev.timestamp, ZERO_HASH)
    assert type(db.events.read(run, 0).payload) is type(payload)


def test_read(db, run):
    assert db.events.read(run, 0) is None
    appended = [db.events.append(run, "t", {"i": i}) for i in range(3)]
    for ev in appended:
        assert db.events.read(run, ev.sequence) == ev
    assert db.events.read(run, 3) is None
    assert db.events.read(run, 1000) is None


def test_range_is_half_open(db, run):
    appended = [db.events.append(run, "t", i) for i in range(6)]
    assert db.events.range(run, 0, 6) == appended
    assert db.events.range(run, 1, 4) == appended[1:4]
    assert db.events.range(run, 2, 3) == [appended[2]]
    assert db.events.range(run, 3, 3) == []
    assert db.events.range(run, 4, 2) == []
    assert db.events.range(run, 4, 100) == appended[4:]
    assert db.events.range(run, 6, 10) == []


def test_head_and_count(db, run):
    assert db.events.head(run) is None
    assert db.events.count(run) == 0
    for i in range(4):
        ev = db.events.append(run, "t", i)
        assert db.events.head(run) == ev
        assert db.events.count(run) == i + 1


def test_by_type_in_record_order(db, run):
    kinds = ["a", "b", "a", "c", "a", "b"]
    appended = [db.events.append(run, k, i) for i, k in enumerate(kinds)]
    assert db.events.by_type(run, "a") == [appended[0], appended[2], appended[4]]
    assert db.events.by_type(run, "b") == [appended[1], appended[5]]
    assert db.events.by_type(run, "c") == [appended[3]]
    assert db.events.by_type(run, "none") == []


def test_chains_are_per_run(db):
    r1, r2 = db.begin_run(), db.begin_run()
    db.events.append(r1, "t", 1)
    db.events.append(r1, "t", 2)
    ev = db.events.append(r2, "t", 1)
    assert ev.sequence == 0 and ev.prev_hash == ZERO_HASH
    assert db.events.count(r1) == 2 and db.events.count(r2) == 1


def test_verify_chain_good(db, run):
    empty = db.events.verify_chain(run)
    assert empty.valid is True and empty.length == 0 and empty.first_invalid is None
    for i in range(10):
        db.events.append(run, "step", {"i": i, "nested": {"z": i, "a": [i]}})
    check = db.events.verify_chain(run)
    assert check.valid is True
    assert check.length == 10
    assert check.first_invalid is None
    assert check.error is None
    check_chain(db.events.range(run, 0, 10))


def test_returned_payload_is_a_private_copy(db, run):
    payload = {"list": [1]}
    ev = db.events.append(run, "t", payload)
    payload["list"].append(2)
    ev.payload["list"].append(3)
    db.events.read(run, 0).payload["list"].append(4)
    assert db.events.read(run, 0).payload == {"list": [1]}
    assert db.events.verify_chain(run).valid is True


@pytest.mark.parametrize("event_type", ["", "x" * 1025, 5, None])
def test_bad_event_type(db, run, event_type):
    with pytest.raises((inmem.InvalidKey, inmem.InvalidValue)):
        db.events.append(run, event_type, {})
    assert db.events.count(run) == 0
