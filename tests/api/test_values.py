"""The value model, key rules, size limits and the error hierarchy, checked
through every primitive that stores a value."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import inmem

from .support import expected_hash, same

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

ERROR_NAMES = [
    "InvalidKey", "InvalidValue", "ValueTooLarge", "InvalidPath", "RunNotFound",
    "RunExists", "RunNotActive", "InvalidStatusTransition", "VersionMismatch",
    "StateExists", "StateNotFound", "TraceNotFound", "TransactionConflict",
    "ClusterNotReady", "ShardUnavailable", "Timeout", "ProtocolError", "CorruptionError",
]


# Each store/load pair writes `value` somewhere and reads it back. Traces and
# event payloads are wrapped in a dict because trace data must be one.
def _kv(db, run, key, value):
    db.kv.put(run, key, value)
    return db.kv.get(run, key)


def _json(db, run, key, value):
    db.json.put(run, key, value)
    return db.json.get(run, key)


def _json_path(db, run, key, value):
    db.json.put(run, key, {})
    db.json.set(run, key, "$.inner", value)
    return db.json.get(run, key, "$.inner")


def _state(db, run, key, value):
    db.state.set(run, key, value)
    return db.state.read(run, key).value


def _event(db, run, key, value):
    ev = db.events.append(run, key, {"v": value})
    assert same(db.events.read(run, ev.sequence).payload, {"v": value})
    # The documented hash holds for any payload, not just the hand-picked ones.
    assert ev.hash == expected_hash(ev.sequence, key, {"v": value}, ev.timestamp, ev.prev_hash)
    return ev.payload["v"]


def _trace(db, run, key, value):
    tid = db.traces.record(run, "custom", {"v": value})
    return db.traces.get(run, tid).data["v"]


STORES = {"kv": _kv, "json": _json, "json_path": _json_path, "state": _state,
          "event": _event, "trace": _trace}

# Writes that take a whole value; used for the refusals.
WRITERS = {
    "kv.put": lambda db, run, v: db.kv.put(run, "k", v),
    "kv.cas": lambda db, run, v: db.kv.cas(run, "k", 0, v),
    "json.put": lambda db, run, v: db.json.put(run, "k", v),
    "state.init": lambda db, run, v: db.state.init(run, "k", v),
    "state.set": lambda db, run, v: db.state.set(run, "k", v),
    "events.append": lambda db, run, v: db.events.append(run, "t", v),
    "traces.record": lambda db, run, v: db.traces.record(run, "custom", {"v": v}),
}


def _nothing_written(db, run):
    assert db.kv.keys(run) == []
    assert db.json.get(run, "k") is None
    assert db.state.read(run, "k") is None
    assert db.events.count(run) == 0
    assert db.traces.roots(run) == []


EXACT_VALUES = [
    None, True, False, 0, 1, -1, INT64_MIN, INT64_MAX, 0.0, -0.0, 1.5, -2.25e300,
    float("inf"), float("-inf"), "", "text", "ünïcödé ✓ 𝄞", b"", b"\x00\xff bytes",
    [], {}, [None, True, 1, 1.0, "1", b"1"], {"": "empty key", "a": {"b": {"c": [1, [2, [3]]]}}},
    {"bytes": b"b", "str": "b", "list": [b"x", "x"]},
    1.0, [1, 1.0, True],
]


@pytest.mark.parametrize("store", sorted(STORES))
@pytest.mark.parametrize("value", EXACT_VALUES, ids=[repr(v)[:30] for v in EXACT_VALUES])
def test_documented_values_round_trip_exactly(db, run, store, value):
    got = STORES[store](db, run, "key", value)
    assert same(got, value), (got, value)


@pytest.mark.parametrize("store", sorted(STORES))
def test_nan_round_trips(db, run, store):
    got = STORES[store](db, run, "key", [float("nan")])
    assert isinstance(got[0], float) and math.isnan(got[0])


def test_deep_nesting_round_trips(db, run):
    value = "leaf"
    for i in range(50):
        value = [value] if i % 2 else {"k": value}
    assert same(_kv(db, run, "deep", value), value)


_scalars = (st.none() | st.booleans() | st.integers(INT64_MIN, INT64_MAX)
            | st.floats(allow_nan=False) | st.text() | st.binary())
VALUES = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@pytest.mark.parametrize("store", sorted(STORES))
# The database is opened once per test and shared by the examples on purpose:
# each example writes its own key, and reopening per example would only slow it.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=VALUES, key=st.text(min_size=1, max_size=20))
def test_any_value_round_trips_exactly(db, run, store, value, key):
    got = STORES[store](db, run, key, value)
    assert same(got, value), (got, value)


BAD_VALUES = {
    "int-too-big": 2**63,
    "int-too-small": INT64_MIN - 1,
    "nested-int-too-big": {"a": [1, 2**64]},
    "tuple": (1, 2),
    "nested-tuple": [1, (2,)],
    "set": {1, 2},
    "frozenset": frozenset(),
    "object": object(),
    "bytearray": bytearray(b"x"),
    "complex": 1j,
    "int-dict-key": {1: "a"},
    "bytes-dict-key": {b"a": 1},
    "none-dict-key": {None: 1},
    "nested-bad-key": {"ok": {("t",): 1}},
    "lone-surrogate": "\ud800",
    "lone-surrogate-in-key": {"\udfff": 1},
    "function": len,
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_values_outside_the_model_are_refused(db, run, writer, name):
    with pytest.raises(inmem.InvalidValue):
        WRITERS[writer](db, run, BAD_VALUES[name])
    _nothing_written(db, run)


def test_refused_value_inside_json_set_leaves_document(db, run):
    db.json.put(run, "k", {"a": 1})
    with pytest.raises(inmem.InvalidValue):
        db.json.set(run, "k", "$.b", (1, 2))
    with pytest.raises(inmem.InvalidValue):
        db.json.array_push(run, "k", "$.list", {1, 2})
    assert db.json.get(run, "k") == {"a": 1}


# --- keys -----------------------------------------------------------------

KEY_USERS = {
    "kv": lambda db, run, key: db.kv.put(run, key, 1),
    "json": lambda db, run, key: db.json.put(run, key, {}),
    "state": lambda db, run, key: db.state.set(run, key, 1),
}

KEY_READERS = {
    "kv": lambda db, run, key: db.kv.get(run, key),
    "json": lambda db, run, key: db.json.get(run, key),
    "state": lambda db, run, key: db.state.read(run, key).value,
}

GOOD_KEYS = {
    "1024-ascii": "k" * 1024,
    "1024-two-byte": "é" * 512,
    "1024-three-byte": "€" * 341 + "a",
    "1024-four-byte": "𝄞" * 256,
    "one-char": "x",
    "spaces-and-punctuation": " a.b/c:d[0]$ ",
}

BAD_KEYS = {
    "empty": "",
    "1025-ascii": "k" * 1025,
    "1026-two-byte": "é" * 513,
    "1025-mixed": "é" * 512 + "a",
    "1026-three-byte": "€" * 342,
    "1028-four-byte": "𝄞" * 257,
    "lone-surrogate": "\ud800",
    "int": 1,
    "bytes": b"k",
    "none": None,
}


@pytest.mark.parametrize("user", sorted(KEY_USERS))
@pytest.mark.parametrize("name", sorted(GOOD_KEYS))
def test_keys_up_to_1024_utf8_bytes_are_accepted(db, run, user, name):
    assert KEY_USERS[user](db, run, GOOD_KEYS[name]) == 1
    assert KEY_READERS[user](db, run, GOOD_KEYS[name]) == ({} if user == "json" else 1)


@pytest.mark.parametrize("user", sorted(KEY_USERS))
@pytest.mark.parametrize("name", sorted(BAD_KEYS))
def test_bad_keys_are_refused(db, run, user, name):
    with pytest.raises(inmem.InvalidKey):
        KEY_USERS[user](db, run, BAD_KEYS[name])
    assert db.kv.keys(run) == []


def test_long_key_round_trips(db, run):
    key = "é" * 512
    db.kv.put(run, key, "v")
    assert db.kv.get(run, key) == "v"
    assert db.kv.keys(run) == [key]


# --- size limit -----------------------------------------------------------


@pytest.fixture
def small_db(open_db):
    return open_db(max_value_bytes=1024)


SIZED_WRITERS = {
    "kv.put": lambda db, run, v: db.kv.put(run, "k", v),
    "kv.cas": lambda db, run, v: db.kv.cas(run, "k", 0, v),
    "json.put": lambda db, run, v: db.json.put(run, "k", {"v": v}),
    "state.set": lambda db, run, v: db.state.set(run, "k", v),
    "state.init": lambda db, run, v: db.state.init(run, "k", v),
    "events.append": lambda db, run, v: db.events.append(run, "t", {"v": v}),
    "traces.record": lambda db, run, v: db.traces.record(run, "custom", {"v": v}),
}


@pytest.mark.parametrize("writer", sorted(SIZED_WRITERS))
def test_values_over_the_limit_are_refused(small_db, writer):
    run = small_db.begin_run()
    with pytest.raises(inmem.ValueTooLarge):
        SIZED_WRITERS[writer](small_db, run, b"x" * 1100)
    with pytest.raises(inmem.ValueTooLarge):
        SIZED_WRITERS[writer](small_db, run, "y" * 2000)
    _nothing_written(small_db, run)
    # Well under the limit once encoded.
    SIZED_WRITERS[writer](small_db, run, b"x" * 900)


def test_kv_value_exactly_around_the_limit(small_db):
    run = small_db.begin_run()
    # msgpack: bin 16 header is 3 bytes, so 1021 payload bytes encode to 1024.
    assert small_db.kv.put(run, "fits", b"x" * 1021) == 1
    with pytest.raises(inmem.ValueTooLarge):
        small_db.kv.put(run, "over", b"x" * 1022)
    assert small_db.kv.get(run, "fits") == b"x" * 1021


def test_too_large_leaves_previous_value_and_version(small_db):
    run = small_db.begin_run()
    small_db.kv.put(run, "k", "small")
    with pytest.raises(inmem.ValueTooLarge):
        small_db.kv.put(run, "k", b"z" * 5000)
    v = small_db.kv.get_versioned(run, "k")
    assert (v.value, v.version) == ("small", 1)
    assert small_db.kv.put(run, "k", "next") == 2


def test_json_document_growing_past_the_limit(small_db):
    run = small_db.begin_run()
    small_db.json.put(run, "doc", {"a": "x" * 600})
    with pytest.raises(inmem.ValueTooLarge):
        small_db.json.set(run, "doc", "$.b", "y" * 600)
    assert small_db.json.get(run, "doc") == {"a": "x" * 600}


def test_default_limit_accepts_a_megabyte(db, run):
    big = b"\x01" * (1 << 20)
    db.kv.put(run, "big", big)
    assert db.kv.get(run, "big") == big


# --- errors ---------------------------------------------------------------


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_every_documented_error_is_an_inmem_error(name):
    cls = getattr(inmem, name)
    assert isinstance(cls, type)
    assert issubclass(cls, inmem.InmemError)
    assert cls is not inmem.InmemError


def test_inmem_error_is_an_exception():
    assert issubclass(inmem.InmemError, Exception)


def test_error_classes_are_distinct():
    classes = [getattr(inmem, n) for n in ERROR_NAMES]
    assert len(set(classes)) == len(classes)
