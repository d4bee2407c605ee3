"""KV: put/get/versions/delete/cas/get_many/keys/items and TTL expiry."""

from __future__ import annotations

import pytest

import inmem


def test_put_returns_versions_from_one_growing_by_one(db, run):
    assert db.kv.put(run, "k", "a") == 1
    assert db.kv.put(run, "k", "b") == 2
    assert db.kv.put(run, "k", "b") == 3  # an identical value is still a write
    assert db.kv.put(run, "other", 0) == 1  # versions are per key


def test_get_returns_latest_value_and_default_when_missing(db, run):
    assert db.kv.get(run, "nope") is None
    assert db.kv.get(run, "nope", default=7) == 7
    assert db.kv.get(run, "nope", 7) == 7
    db.kv.put(run, "k", "v1")
    db.kv.put(run, "k", "v2")
    assert db.kv.get(run, "k", default=7) == "v2"


def test_stored_none_is_not_the_default(db, run):
    db.kv.put(run, "k", None)
    assert db.kv.exists(run, "k") is True
    assert db.kv.get(run, "k", default="dflt") is None
    assert db.kv.get_versioned(run, "k").value is None


def test_get_versioned(clocked_db, clock):
    run = clocked_db.begin_run()
    assert clocked_db.kv.get_versioned(run, "k") is None
    clocked_db.kv.put(run, "k", {"a": 1})
    v = clocked_db.kv.get_versioned(run, "k")
    assert (v.value, v.version, v.timestamp) == ({"a": 1}, 1, clock.now_us)
    clock.advance(1.5)
    clocked_db.kv.put(run, "k", [1])
    v = clocked_db.kv.get_versioned(run, "k")
    assert (v.value, v.version, v.timestamp) == ([1], 2, clock.now_us)
    assert isinstance(v.timestamp, int)


def test_timestamps_from_real_clock_are_microseconds(db, run):
    import time
    before = time.time_ns() // 1000
    db.kv.put(run, "k", 1)
    after = time.time_ns() // 1000
    ts = db.kv.get_versioned(run, "k").timestamp
    assert isinstance(ts, int)
    # A generous window: this checks the unit (microseconds), not the speed.
    assert before - 5_000_000 <= ts <= after + 5_000_000


def test_exists(db, run):
    assert db.kv.exists(run, "k") is False
    db.kv.put(run, "k", 0)
    assert db.kv.exists(run, "k") is True
    db.kv.delete(run, "k")
    assert db.kv.exists(run, "k") is False


def test_delete_returns_whether_it_existed(db, run):
    assert db.kv.delete(run, "k") is False
    db.kv.put(run, "k", 1)
    assert db.kv.delete(run, "k") is True
    assert db.kv.delete(run, "k") is False
    assert db.kv.get(run, "k") is None
    assert db.kv.get_versioned(run, "k") is None


def test_delete_is_a_write_so_versions_keep_growing(db, run):
    assert db.kv.put(run, "k", "a") == 1
    assert db.kv.delete(run, "k") is True
    with pytest.raises(inmem.VersionMismatch):
        db.kv.cas(run, "k", 1, "stale")
    assert db.kv.get(run, "k") is None
    assert db.kv.put(run, "k", "b") == 3
    assert db.kv.get_versioned(run, "k").version == 3
    # The stale version never validates again, even though the key exists once more.
    with pytest.raises(inmem.VersionMismatch):
        db.kv.cas(run, "k", 1, "stale")
    assert db.kv.get(run, "k") == "b"


def test_cas_success_returns_next_version(db, run):
    assert db.kv.put(run, "k", 1) == 1
    assert db.kv.cas(run, "k", 1, 2) == 2
    assert db.kv.cas(run, "k", 2, 3) == 3
    assert db.kv.get(run, "k") == 3


def test_cas_mismatch_carries_expected_and_actual_and_writes_nothing(db, run):
    db.kv.put(run, "k", "a")
    db.kv.put(run, "k", "b")
    with pytest.raises(inmem.VersionMismatch) as info:
        db.kv.cas(run, "k", 1, "c")
    assert info.value.expected == 1
    assert info.value.actual == 2
    assert isinstance(info.value, inmem.InmemError)
    v = db.kv.get_versioned(run, "k")
    assert (v.value, v.version) == ("b", 2)
    with pytest.raises(inmem.VersionMismatch) as info:
        db.kv.cas(run, "k", 3, "c")  # a version from the future is wrong too
    assert (info.value.expected, info.value.actual) == (3, 2)


def test_cas_zero_means_must_not_exist(db, run):
    assert db.kv.cas(run, "k", 0, "first") == 1
    with pytest.raises(inmem.VersionMismatch) as info:
        db.kv.cas(run, "k", 0, "second")
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert db.kv.get(run, "k") == "first"


def test_cas_on_missing_key_with_nonzero_version(db, run):
    with pytest.raises(inmem.VersionMismatch) as info:
        db.kv.cas(run, "never", 1, "x")
    assert (info.value.expected, info.value.actual) == (1, 0)
    assert db.kv.exists(run, "never") is False


def test_cas_zero_after_delete_recreates_with_growing_version(db, run):
    db.kv.put(run, "k", 1)
    db.kv.delete(run, "k")
    assert db.kv.cas(run, "k", 0, "again") == 3
    assert db.kv.get(run, "k") == "again"


def test_get_many(db, run):
    db.kv.put(run, "a", 1)
    db.kv.put(run, "c", [3])
    assert db.kv.get_many(run, ["a", "b", "c", "a"]) == [1, None, [3], 1]
    assert db.kv.get_many(run, []) == []
    assert db.kv.get_many(run, ["zz"]) == [None]


def test_keys_and_items_sorted_with_prefix(db, run):
    for k in ["b/2", "a", "b/10", "b/1", "ba", "é", "B", "z"]:
        db.kv.put(run, k, k.upper())
    expected = sorted(["b/2", "a", "b/10", "b/1", "ba", "é", "B", "z"])
    assert db.kv.keys(run) == expected
    assert db.kv.keys(run, prefix="") == expected
    assert db.kv.keys(run, prefix="b/") == ["b/1", "b/10", "b/2"]
    assert db.kv.keys(run, "b") == ["b/1", "b/10", "b/2", "ba"]
    assert db.kv.keys(run, prefix="nothing") == []
    assert db.kv.items(run, prefix="b/") == [("b/1", "B/1"), ("b/10", "B/10"), ("b/2", "B/2")]
    assert db.kv.items(run) == [(k, k.upper()) for k in expected]
    db.kv.delete(run, "b/10")
    assert db.kv.keys(run, prefix="b/") == ["b/1", "b/2"]


def test_keys_and_items_in_pages_after_a_key(db, run):
    keys = sorted(f"k{i:03d}" for i in range(25)) + ["other"]
    for k in keys:
        db.kv.put(run, k, k.upper())
    assert db.kv.keys(run, limit=3) == ["k000", "k001", "k002"]
    assert db.kv.keys(run, after="k022") == ["k023", "k024", "other"]
    assert db.kv.keys(run, "k", after="k022", limit=10) == ["k023", "k024"]
    assert db.kv.keys(run, after="k0215") == ["k022", "k023", "k024", "other"]  # any str
    assert db.kv.items(run, after="k023", limit=2) == [("k024", "K024"), ("other", "OTHER")]
    # Page by page: every key once, in order, however the pages fall.
    for limit in (1, 7, 26, 100):
        pages, after = [], None
        while True:
            page = db.kv.keys(run, "k", after=after, limit=limit)
            if not page:
                break
            pages.append(page)
            after = page[-1]
        assert [k for p in pages for k in p] == keys[:-1]
        assert all(len(p) <= limit for p in pages)
    db.kv.delete(run, "k001")
    assert db.kv.items(run, limit=2) == [("k000", "K000"), ("k002", "K002")]


@pytest.mark.parametrize("bad", [{"limit": 0}, {"limit": -1}, {"limit": 1.5}, {"limit": True},
                                 {"limit": "3"}, {"after": 7}, {"after": b"k"}])
def test_a_bad_page_is_refused(db, run, bad):
    db.kv.put(run, "k", 1)
    with pytest.raises(inmem.InvalidValue):
        db.kv.keys(run, **bad)
    with pytest.raises(inmem.InvalidValue):
        db.kv.items(run, **bad)


def test_keys_of_empty_run(db, run):
    assert db.kv.keys(run) == []
    assert db.kv.items(run) == []


def test_runs_are_separate_namespaces(db):
    r1, r2 = db.begin_run(), db.begin_run()
    db.kv.put(r1, "k", "one")
    assert db.kv.get(r2, "k") is None
    assert db.kv.put(r2, "k", "two") == 1
    assert db.kv.get(r1, "k") == "one"
    assert db.kv.keys(r2) == ["k"]


def test_returned_values_are_private_copies(db, run):
    original = {"list": [1, 2], "inner": {"a": 1}}
    db.kv.put(run, "k", original)
    original["list"].append(99)  # mutating what was written
    original["new"] = True
    got = db.kv.get(run, "k")
    assert got == {"list": [1, 2], "inner": {"a": 1}}
    got["list"].append(3)  # mutating what was read
    got["inner"]["a"] = 2
    assert db.kv.get(run, "k") == {"list": [1, 2], "inner": {"a": 1}}
    db.kv.get_versioned(run, "k").value["list"].clear()
    db.kv.get_many(run, ["k"])[0]["inner"].clear()
    db.kv.items(run)[0][1]["list"].clear()
    assert db.kv.get(run, "k") == {"list": [1, 2], "inner": {"a": 1}}


# --- TTL ------------------------------------------------------------------


def _assert_present(db, run, key, value):
    assert db.kv.get(run, key) == value
    assert db.kv.exists(run, key) is True
    assert key in db.kv.keys(run)
    assert (key, value) in db.kv.items(run)
    assert db.kv.get_many(run, [key]) == [value]
    assert db.kv.get_versioned(run, key).value == value


def _assert_missing(db, run, key):
    assert db.kv.get(run, key) is None
    assert db.kv.get(run, key, default="gone") == "gone"
    assert db.kv.exists(run, key) is False
    assert key not in db.kv.keys(run)
    assert key not in [k for k, _ in db.kv.items(run)]
    assert db.kv.get_many(run, [key]) == [None]
    assert db.kv.get_versioned(run, key) is None


def test_ttl_expires_exactly_at_deadline(clocked_db, clock):
    db = clocked_db
    run = db.begin_run()
    db.kv.put(run, "session", "tok", ttl=5)
    db.kv.put(run, "forever", 1)
    clock.advance(4.9)
    _assert_present(db, run, "session", "tok")
    clock.advance(0.1)
    _assert_missing(db, run, "session")
    _assert_present(db, run, "forever", 1)


def test_ttl_fractional_seconds(clocked_db, clock):
    run = clocked_db.begin_run()
    clocked_db.kv.put(run, "k", 1, ttl=0.25)
    clock.advance(0.249999)
    assert clocked_db.kv.get(run, "k") == 1
    clock.advance(0.000001)
    assert clocked_db.kv.get(run, "k") is None


def test_expired_key_behaves_as_missing_for_writes(clocked_db, clock):
    db = clocked_db
    run = db.begin_run()
    db.kv.put(run, "k", "old", ttl=1)
    clock.advance(2)
    assert db.kv.delete(run, "k") is False
    with pytest.raises(inmem.VersionMismatch):
        db.kv.cas(run, "k", 1, "stale")  # the read of the live key must not validate
    new_version = db.kv.cas(run, "k", 0, "new")  # "must not exist" holds
    assert new_version > 1
    assert db.kv.get(run, "k") == "new"
    clock.advance(10)
    assert db.kv.get(run, "k") == "new"  # the new write carries no ttl


def test_put_without_ttl_clears_ttl(clocked_db, clock):
    db = clocked_db
    run = db.begin_run()
    db.kv.put(run, "k", 1, ttl=1)
    db.kv.put(run, "k", 2)
    clock.advance(5)
    assert db.kv.get(run, "k") == 2


def test_put_with_new_ttl_replaces_old_deadline(clocked_db, clock):
    db = clocked_db
    run = db.begin_run()
    db.kv.put(run, "k", 1, ttl=1)
    clock.advance(0.5)
    db.kv.put(run, "k", 2, ttl=10)
    clock.advance(5)
    assert db.kv.get(run, "k") == 2
    clock.advance(5.5)
    assert db.kv.get(run, "k") is None


def test_keys_with_prefix_skip_expired(clocked_db, clock):
    db = clocked_db
    run = db.begin_run()
    db.kv.put(run, "p/1", 1, ttl=1)
    db.kv.put(run, "p/2", 2, ttl=3)
    db.kv.put(run, "p/3", 3)
    clock.advance(2)
    assert db.kv.keys(run, prefix="p/") == ["p/2", "p/3"]
    assert db.kv.items(run, prefix="p/") == [("p/2", 2), ("p/3", 3)]
    assert db.kv.get_many(run, ["p/1", "p/2", "p/3"]) == [None, 2, 3]


# --- errors ---------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda db, run: db.kv.put(run, "", 1),
    lambda db, run: db.kv.get(run, ""),
    lambda db, run: db.kv.get_versioned(run, ""),
    lambda db, run: db.kv.exists(run, ""),
    lambda db, run: db.kv.delete(run, ""),
    lambda db, run: db.kv.cas(run, "", 0, 1),
    lambda db, run: db.kv.get_many(run, ["ok", ""]),
    lambda db, run: db.kv.put(run, 5, 1),
    lambda db, run: db.kv.put(run, b"bytes-key", 1),
    lambda db, run: db.kv.put(run, None, 1),
], ids=["put", "get", "get_versioned", "exists", "delete", "cas", "get_many",
        "int-key", "bytes-key", "none-key"])
def test_invalid_key_on_every_call(db, run, call):
    with pytest.raises(inmem.InvalidKey):
        call(db, run)
    assert db.kv.keys(run) == []


def test_invalid_value_writes_nothing(db, run):
    db.kv.put(run, "k", 1)
    with pytest.raises(inmem.InvalidValue):
        db.kv.put(run, "k", object())
    with pytest.raises(inmem.InvalidValue):
        db.kv.cas(run, "k", 1, {1: "int key"})
    v = db.kv.get_versioned(run, "k")
    assert (v.value, v.version) == (1, 1)
    assert db.kv.put(run, "k", 2) == 2


@pytest.mark.parametrize("field", [["refs"], None, 1.5, b"refs", {"x": 1}])
def test_get_linked_refuses_a_field_that_is_no_key_or_index(field):
    db = inmem.open(None)
    run = db.begin_run()
    db.kv.put(run, "head", {"refs": ["a"]})
    with pytest.raises(inmem.InvalidValue):
        db.kv.get_linked(run, "head", field)
