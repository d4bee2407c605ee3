"""Encode before acknowledge: a write that cannot be logged is refused at the call and changes nothing.

Each hostile call below passed validation on the first milestone and then
failed when the WAL encoded it: in buffered mode it killed the flusher and
cost writes that other runs had been acknowledged for; in strict mode it
left an unlogged value in memory that a later snapshot made durable. Now the
engine encodes every group before applying it, so these calls raise a typed
error, the store is unchanged, later writes go on, and everything
acknowledged survives a reopen.
"""

from __future__ import annotations

import pytest

import inmem
from inmem.shard.effects import GROUP_BYTES_MAX
from inmem.shard.engine import TTL_MAX_SECONDS

MODES = ["buffered", "strict"]
#: small enough to keep the over-limit cases cheap
VALUE_LIMIT = 4096

HOSTILE_TTLS = [1e300, 10**30, float("inf"), float("nan"), -1, 0, TTL_MAX_SECONDS + 1, True, "10"]


def _open(path, mode, **options):
    return inmem.open(path, durability=mode, snapshot_on_close=False,
                      max_value_bytes=VALUE_LIMIT, **options)


def _hostile_calls(db, run):
    """(label, call) pairs: each must raise InvalidValue or ValueTooLarge and change nothing."""
    calls = [(f"kv.put ttl={ttl!r}", lambda ttl=ttl: db.kv.put(run, "k", "v", ttl=ttl))
             for ttl in HOSTILE_TTLS]
    calls += [
        ("abort_run lone surrogate", lambda: db.abort_run(run, reason="\udcff")),
        ("abort_run reason over the limit", lambda: db.abort_run(run, reason="r" * (VALUE_LIMIT + 1))),
        ("abort_run surrogate inside text", lambda: db.abort_run(run, reason="bad \ud800 text")),
    ]
    return calls


@pytest.mark.parametrize("mode", MODES)
def test_unloggable_writes_are_refused_and_change_nothing(tmp_path, mode):
    path = tmp_path / "store"
    db = _open(path, mode)
    other = db.begin_run(run_id="other")
    victim = db.begin_run(run_id="victim")
    db.kv.put(victim, "k", "before")
    for i, (label, call) in enumerate(_hostile_calls(db, victim)):
        # Another run's write acknowledged in the same flush interval: a failure
        # of the hostile call must never cost it.
        db.kv.put(other, f"acked/{i}", i)
        with pytest.raises((inmem.InvalidValue, inmem.ValueTooLarge)):
            call()
        assert db.kv.get_versioned(victim, "k").value == "before", label
        assert db.run_status(victim) == "active", label
    db.kv.put(victim, "k", "after")  # the store still takes writes
    db.close()
    with _open(path, mode) as db:
        assert db.kv.get(victim, "k") == "after"
        assert db.kv.get_versioned(victim, "k").version == 2
        for i in range(len(_hostile_calls(db, victim))):
            assert db.kv.get(other, f"acked/{i}") == i
        assert db.run_status(victim) in ("active", "orphaned")


@pytest.mark.parametrize("mode", MODES)
def test_close_right_after_a_refused_write_keeps_the_batch(tmp_path, mode):
    """The first milestone's buffered close() raised OverflowError here and lost the batch."""
    path = tmp_path / "store"
    db = _open(path, mode, flush_interval_ms=60_000, max_pending_writes=10_000)
    run = db.begin_run(run_id="r")
    for i in range(50):
        db.kv.put(run, f"k{i}", i)
    with pytest.raises(inmem.InvalidValue):
        db.kv.put(run, "bad", 1, ttl=1e300)
    db.close()
    with _open(path, mode) as db:
        assert db.kv.keys(run) == sorted(f"k{i}" for i in range(50))


@pytest.mark.parametrize("mode", MODES)
def test_a_transaction_too_large_for_one_record_is_refused_whole(tmp_path, mode):
    path = tmp_path / "store"
    limit = 16 * 2**20
    value = b"x" * (limit - 64)  # each write is under max_value_bytes ...
    count = GROUP_BYTES_MAX // len(value) + 1  # ... but together they exceed one record
    with inmem.open(path, durability=mode, snapshot_on_close=True, max_value_bytes=limit) as db:
        run = db.begin_run(run_id="big")
        db.kv.put(run, "k0", "kept")
        with pytest.raises(inmem.ValueTooLarge, match="split it"):
            with db.transaction(run) as tx:
                for i in range(count):
                    tx.kv.put(f"k{i}", value)
        assert db.kv.get(run, "k0") == "kept"
        assert db.kv.keys(run) == ["k0"]
        db.kv.put(run, "k1", "small")  # the store still takes writes
    with inmem.open(path, durability=mode, max_value_bytes=limit) as db:
        assert db.kv.keys(run) == ["k0", "k1"]
        assert db.kv.get(run, "k0") == "kept"


@pytest.mark.parametrize("mode", MODES)
def test_refused_writes_leave_no_trace_in_the_journal(tmp_path, mode):
    with _open(tmp_path / "store", mode) as db:
        run = db.begin_run(run_id="r")
        db.kv.put(run, "k", 1)
        before = db.replay_run(run)
        for _label, call in _hostile_calls(db, run):
            with pytest.raises((inmem.InvalidValue, inmem.ValueTooLarge)):
                call()
        assert db.replay_run(run) == before


def test_inmemory_store_refuses_the_same_values():
    db = inmem.open(None, max_value_bytes=VALUE_LIMIT)
    run = db.begin_run(run_id="r")
    for label, call in _hostile_calls(db, run):
        with pytest.raises((inmem.InvalidValue, inmem.ValueTooLarge)):
            call()
        assert db.run_status(run) == "active", label


def test_largest_ttl_is_accepted():
    db = inmem.open(None)
    run = db.begin_run()
    assert db.kv.put(run, "k", 1, ttl=TTL_MAX_SECONDS) == 1
    assert db.kv.get(run, "k") == 1


@pytest.mark.parametrize("mode", MODES)
def test_opening_a_store_leaves_the_host_process_garbage_collector_alone(tmp_path, mode):
    """gc.freeze() belongs to a shard process; in an application it would keep garbage alive."""
    import gc
    gc.unfreeze()
    for i in range(20):
        with _open(tmp_path / f"store{i % 2}", mode) as db:
            db.kv.put(db.begin_run(), "k", i)
        assert gc.get_freeze_count() == 0
