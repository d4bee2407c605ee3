"""Dead KV entries (deleted, expired) leave their run's table after the retention, under a
per-run version floor that keeps every version a client saw from validating again."""

from __future__ import annotations

import pytest

from inmem.errors import TransactionConflict, VersionMismatch
from inmem.shard import dead_keys, key_order
from inmem.shard.dead_keys import BUCKET_SHIFT
from inmem.shard.engine import Engine
from inmem.shard.upkeep import shard_info
from set_clock import Clock

RUN = "r"
#: past any bucket's end: a note is due once its whole bucket lies past the retention
BUCKET_S = (1 << BUCKET_SHIFT) / 1e6


def engine(retention=60, log=False):
    clock = Clock()
    e = Engine(clock=clock, dead_key_retention_s=retention, log=log)
    e.begin_run(run_id=RUN)
    return e, clock


def sweep_all(e) -> int:
    """Sweep in the bounded slices upkeep takes until nothing more is reclaimed or noted."""
    total = 0
    for _ in range(10_000):
        got = e.sweep_dead()
        total += got
        if not got and not e.dead.rescan and not any(
                t <= dead_keys.due_by(e.dead.retention_us, e.clock()) for t in e.dead.times):
            return total
    raise AssertionError("the sweep never ended")


def search(e, terms) -> list:
    """The keys a search finds, as a shard answers it."""
    n_docs, total_len, dfs, _complete = e.search_stats(terms)
    return [hit[2] for hit in e.search_query(terms, n_docs, total_len, dfs)[0]]


def table(e, run=RUN) -> dict:
    return e.runs[run].kv


def test_a_deleted_key_stays_for_the_retention_then_is_reclaimed():
    e, clock = engine(retention=60)
    assert e.kv_put(RUN, "a", 1) == 1
    assert e.kv_delete(RUN, "a") is True
    clock.advance(30)
    assert sweep_all(e) == 0
    assert "a" in table(e)
    clock.advance(30 + BUCKET_S)
    assert sweep_all(e) == 1
    assert "a" not in table(e)
    assert e.kv_floors == {RUN: 2}
    assert e.dead.reclaimed == 1


def test_an_expired_key_is_reclaimed_once_dead_for_the_retention():
    e, clock = engine(retention=60)
    e.kv_put(RUN, "t", "x", ttl=1)
    e.kv_put(RUN, "keep", "y")
    clock.advance(2)
    assert e.kv_get(RUN, "t") is None and "t" in table(e)
    assert sweep_all(e) == 0
    clock.advance(60 + BUCKET_S)
    assert sweep_all(e) == 1
    assert list(table(e)) == ["keep"]
    assert e.kv_floors == {RUN: 1}


def test_a_zero_retention_reclaims_at_the_next_sweep():
    e, clock = engine(retention=0)
    e.kv_put(RUN, "a", 1)
    e.kv_delete(RUN, "a")
    clock.advance(BUCKET_S)
    assert sweep_all(e) == 1
    assert not table(e)


def test_a_recreated_key_continues_above_its_last_version():
    e, clock = engine(retention=0)
    assert [e.kv_put(RUN, "a", i) for i in range(2)] == [1, 2]
    e.kv_delete(RUN, "a")  # version 3
    clock.advance(BUCKET_S)
    sweep_all(e)
    assert "a" not in table(e)
    assert e.kv_put(RUN, "a", "again") == 4
    assert e.kv_get_versioned(RUN, "a").version == 4


def test_a_new_key_in_a_run_with_a_floor_starts_above_it_on_every_write_path():
    e, clock = engine(retention=0)
    for _ in range(4):
        e.kv_put(RUN, "old", 0)
    e.kv_delete(RUN, "old")  # version 5
    clock.advance(BUCKET_S)
    sweep_all(e)
    assert e.kv_floors == {RUN: 5}
    assert e.kv_put(RUN, "p", 1) == 6
    assert e.kv_put_many(RUN, [["m1", 1], ["m2", 2], ["m1", 3]]) == [6, 6, 7]
    assert e.execute_batch([("kv.put", [RUN, "s1", 1]), ("kv.put", [RUN, "s2", 1]),
                            ("kv.put", [RUN, "s1", 2])]) == [6, 6, 7]
    assert e.kv_cas(RUN, "c", 0, "new") == 6
    assert e.kv_put(RUN, "ttl", 1, ttl=100) == 6
    assert e.tx_commit(RUN, [["kv", "x", 0]], [["kv.put", [RUN, "x", 1]]]) == [6]
    # A put of a key over its own tombstone continues the key, floor or not.
    e.kv_delete(RUN, "p")
    assert e.kv_put(RUN, "p", 2) == 8


def test_a_run_that_never_reclaimed_starts_its_keys_at_1():
    e, clock = engine(retention=0)
    e.kv_put(RUN, "a", 1)
    e.kv_delete(RUN, "a")
    clock.advance(BUCKET_S)
    sweep_all(e)
    e.begin_run(run_id="other")
    assert e.kv_put("other", "a", 1) == 1
    assert e.kv_put_many("other", [["b", 1]]) == [1]
    assert e.kv_floors == {RUN: 2}


def test_a_run_deleted_and_begun_again_starts_from_floor_0():
    e, clock = engine(retention=0)
    e.kv_put(RUN, "a", 1)
    e.kv_delete(RUN, "a")
    clock.advance(BUCKET_S)
    sweep_all(e)
    assert e.run_delete(RUN)
    e.begin_run(run_id=RUN)
    assert e.kv_put(RUN, "a", 1) == 1


def test_cas_with_a_stale_version_of_a_reclaimed_key_fails():
    e, clock = engine(retention=0)
    assert e.kv_put(RUN, "a", "v1") == 1
    e.kv_delete(RUN, "a")
    clock.advance(BUCKET_S)
    sweep_all(e)
    for stale in (1, 2):
        with pytest.raises(VersionMismatch) as info:
            e.kv_cas(RUN, "a", stale, "late")
        assert (info.value.expected, info.value.actual) == (stale, 0)
    assert e.kv_get(RUN, "a") is None
    assert e.kv_cas(RUN, "a", 0, "fresh") == 3  # "must not exist" holds: it does not


def test_a_transaction_whose_read_key_was_deleted_reclaimed_and_recreated_conflicts():
    e, clock = engine(retention=0)
    e.kv_put(RUN, "a", "first")
    found, value, version = e.tx_read(RUN, "kv", "a")
    assert (found, value, version) == (True, "first", 1)
    e.kv_delete(RUN, "a")
    clock.advance(BUCKET_S)
    sweep_all(e)
    assert e.kv_put(RUN, "a", "second") == 3
    with pytest.raises(TransactionConflict):
        e.tx_commit(RUN, [["kv", "a", version]], [["kv.put", [RUN, "b", 1]]])
    assert e.kv_get(RUN, "b") is None


def test_a_transaction_that_read_a_tombstone_since_reclaimed_conflicts():
    # The kept tombstone would still validate; the reclaimed one cannot say what it was,
    # so the read conflicts (a retry reads the key as missing, version 0).
    e, clock = engine(retention=0)
    e.kv_put(RUN, "a", 1)
    e.kv_delete(RUN, "a")
    assert e.tx_read(RUN, "kv", "a") == [False, None, 2]
    clock.advance(BUCKET_S)
    sweep_all(e)
    with pytest.raises(TransactionConflict):
        e.tx_commit(RUN, [["kv", "a", 2]], [["kv.put", [RUN, "b", 1]]])
    assert e.tx_read(RUN, "kv", "a") == [False, None, 0]
    assert e.tx_commit(RUN, [["kv", "a", 0]], [["kv.put", [RUN, "b", 1]]]) == [3]


def test_a_key_read_missing_and_missing_again_at_commit_validates():
    # Written and deleted in between, then reclaimed: the read agrees with the state at
    # commit (the choice the module docstring of shard.dead_keys explains).
    e, clock = engine(retention=0)
    assert e.tx_read(RUN, "kv", "a") == [False, None, 0]
    e.kv_put(RUN, "a", 1)
    e.kv_delete(RUN, "a")
    with pytest.raises(TransactionConflict):  # the tombstone, while kept, conflicts
        e.tx_commit(RUN, [["kv", "a", 0]], [])
    clock.advance(BUCKET_S)
    sweep_all(e)
    assert e.tx_commit(RUN, [["kv", "a", 0]], [["kv.put", [RUN, "b", 1]]]) == [3]


def test_50k_ttl_puts_then_sweeps_leave_the_table_empty():
    e, clock = engine(retention=0)
    for i in range(50_000):
        e.kv_put(RUN, f"cache:{i}", i, ttl=0.001)
    assert len(table(e)) == 50_000
    clock.advance(1 + BUCKET_S)
    assert e.sweep_dead() <= dead_keys.SWEEP_ENTRIES  # one round is a bounded slice
    sweep_all(e)
    assert len(table(e)) == 0
    assert e.counts()["keys"] == 0
    assert e.dead.reclaimed == 50_000
    assert not e.dead.buckets and not e.dead.times
    assert e.kv_put(RUN, "cache:0", 1) == 2


def test_writes_that_make_dead_entries_also_reclaim_due_ones_without_a_sweep():
    # An embedded in-memory store runs no upkeep: a TTL cache still stays bounded.
    e, clock = engine(retention=0)
    sizes = []
    for i in range(20_000):
        e.kv_put(RUN, f"k{i}", i, ttl=0.01)
        clock.advance(0.001)
        sizes.append(len(table(e)))
    assert max(sizes[-5000:]) < 5_000  # dead entries are ~1.05 s + 10 ms of writes: ~1060
    assert e.dead.reclaimed > 10_000


def test_deletes_also_reclaim_inline():
    e, clock = engine(retention=1)
    for i in range(10_000):
        e.kv_put(RUN, f"k{i}", i)
        e.kv_delete(RUN, f"k{i}")
        clock.advance(0.001)
    assert len(table(e)) < 5_000
    # Each key is new when put: it starts above the floor of the keys reclaimed before it.
    floor = e.kv_floors[RUN]
    assert floor >= 2
    assert e.kv_put(RUN, "fresh", 1) == floor + 1


def notes(e) -> int:
    return sum(len(keys) for by_run in e.dead.buckets.values() for keys in by_run.values())


@pytest.mark.parametrize("many", [False, True])
def test_a_ttl_refreshed_on_every_read_keeps_one_note_not_one_per_refresh(many):
    # LangGraph's store puts a key again with its TTL on every read (refresh_on_read).
    e, clock = engine(retention=0)
    for _ in range(3000):
        if many:
            e.kv_put_many(RUN, [["session", 1], ["other", 2]], ttl=900)
        else:
            e.kv_put(RUN, "session", 1, ttl=900)
        clock.advance(1)
        e.sweep_dead()
    assert notes(e) <= 2 * (2 if many else 1)
    assert "session" in table(e)
    clock.advance(900 + BUCKET_S)
    sweep_all(e)
    assert not table(e)
    assert notes(e) == 0


def test_a_shorter_ttl_over_a_longer_one_is_reclaimed_at_its_own_time():
    e, clock = engine(retention=0)
    e.kv_put(RUN, "k", 1, ttl=900)
    e.kv_put(RUN, "k", 2, ttl=1)
    clock.advance(1 + BUCKET_S)
    assert sweep_all(e) == 1
    assert not table(e)


def test_reclaimed_keys_leave_the_sorted_key_order():
    e, clock = engine(retention=0)
    keys = [f"k{i:04d}" for i in range(3 * key_order.KEPT_FROM)]
    e.kv_put_many(RUN, [[k, 1] for k in keys])
    assert e.kv_keys(RUN) == keys
    order = e.runs[RUN].kv_order
    assert order is not None
    gone = keys[::3] + [keys[-1]]
    for k in gone:
        e.kv_delete(RUN, k)
    e.kv_put_many(RUN, [["new1", 1], ["k0000x", 1]])  # the order's unsynced tail
    clock.advance(BUCKET_S)
    sweep_all(e)
    assert e.runs[RUN].kv_order is order  # kept up, not rebuilt
    want = sorted(set(keys) - set(gone) | {"new1", "k0000x"})
    assert e.kv_keys(RUN) == want
    assert e.kv_keys(RUN, "k00", after="k0003", limit=5) == [k for k in want if
                                                            k.startswith("k00") and
                                                            k > "k0003"][:5]
    assert [k for c in order.chunks for k in c] == want
    assert order.synced == len(table(e))


def test_an_expired_entry_the_search_index_holds_waits_for_the_index_to_drop_it():
    e, clock = engine(retention=0)
    e.kv_put(RUN, "note", "remember the milk", ttl=1)
    assert search(e, ["milk"]) == ["note"]
    clock.advance(2 + BUCKET_S)
    sweep_all(e)  # the index has not caught up since: it still holds the document
    assert "note" in table(e)
    assert search(e, ["milk"]) == []  # the catch-up drops it
    clock.advance(BUCKET_S)
    sweep_all(e)
    assert "note" not in table(e)
    assert search(e, ["milk"]) == []


def test_the_sweep_waits_while_the_index_is_rebuilt():
    e, clock = engine(retention=0)
    e.kv_put(RUN, "a", 1)
    e.kv_delete(RUN, "a")
    clock.advance(BUCKET_S)
    e.index.rebuilding = True
    assert e.sweep_dead() == 0
    e.kv_put(RUN, "b", 1)
    e.kv_delete(RUN, "b")  # nor inline
    assert "a" in table(e)
    e.index.rebuilding = False
    assert sweep_all(e) == 1


def test_shard_info_reports_the_entries_reclaimed():
    e, clock = engine(retention=0)
    e.kv_put(RUN, "a", 1)
    e.kv_delete(RUN, "a")
    assert shard_info(0, e, None)["kv_reclaimed"] == 0
    clock.advance(BUCKET_S)
    sweep_all(e)
    assert shard_info(0, e, None)["kv_reclaimed"] == 1


def test_the_retention_must_be_a_number_of_seconds():
    for bad in (-1, "60", None, float("nan")):
        with pytest.raises(ValueError):
            Engine(dead_key_retention_s=bad)
    assert Engine(dead_key_retention_s=float("inf")).dead.retention_us > 10**17


# -- the floor in a snapshot ------------------------------------------------------------

def reclaimed_engine():
    e, clock = engine(retention=0, log=True)
    for _ in range(3):
        e.kv_put(RUN, "a", 1)
    e.kv_delete(RUN, "a")  # version 4
    e.kv_put(RUN, "b", 1)
    clock.advance(BUCKET_S)
    sweep_all(e)
    e.begin_run(run_id="plain")
    e.kv_put("plain", "x", 1)
    assert e.kv_floors == {RUN: 4}
    return e, clock


def reloaded(sections: dict, clock) -> Engine:
    from inmem.shard.recovery_apply import EngineRecovery
    e = Engine(clock=clock, dead_key_retention_s=0)
    EngineRecovery(e).load_snapshot(sections)
    return e


def test_a_snapshot_keeps_each_runs_floor():
    from inmem.shard.snapshot_codec import dump
    e, clock = reclaimed_engine()
    back = reloaded(dict(dump(e)[1]), clock)
    assert back.kv_floors == {RUN: 4}
    assert back.kv_put(RUN, "a", 2) == 5
    assert back.kv_put(RUN, "new", 2) == 5
    assert back.kv_put("plain", "new", 2) == 1
    assert list(back.runs[RUN].kv) == ["b", "a", "new"]


def test_a_codec_2_snapshot_loads_with_floor_0():
    import msgpack
    from inmem.recovery import snapshot_format as fmt
    from inmem.shard.snapshot_codec import dump
    e, clock = reclaimed_engine()
    sections = dict(dump(e)[1])
    pack = msgpack.Packer(use_bin_type=True).pack
    meta = msgpack.unpackb(sections[fmt.META], raw=False)
    runs = msgpack.unpackb(sections[fmt.RUNS], raw=False)
    sections[fmt.META] = pack({**meta, "codec": 2})
    sections[fmt.RUNS] = pack([row[:7] for row in runs])
    back = reloaded(sections, clock)
    assert back.kv_floors == {}
    assert back.kv_put(RUN, "b", 2) == 2
    assert back.kv_put(RUN, "new", 2) == 1


@pytest.mark.parametrize("floor", [-1, "4", None, 1.5])
def test_a_snapshot_with_a_floor_that_is_not_a_count_is_refused(floor):
    import msgpack
    from inmem.recovery import snapshot_format as fmt
    from inmem.recovery.errors import UnreadableContent
    from inmem.shard.snapshot_codec import dump
    e, clock = reclaimed_engine()
    sections = dict(dump(e)[1])
    runs = msgpack.unpackb(sections[fmt.RUNS], raw=False)
    runs[0][7] = floor
    sections[fmt.RUNS] = msgpack.packb(runs, use_bin_type=True)
    with pytest.raises(UnreadableContent) as info:
        reloaded(sections, clock)
    assert info.value.section == fmt.RUNS


def test_a_snapshot_of_a_newer_codec_is_refused_as_newer():
    import msgpack
    from inmem.recovery import snapshot_format as fmt
    from inmem.recovery.errors import UnreadableContent
    from inmem.shard.snapshot_codec import CODEC_VERSION, dump
    e, clock = reclaimed_engine()
    sections = dict(dump(e)[1])
    meta = msgpack.unpackb(sections[fmt.META], raw=False)
    sections[fmt.META] = msgpack.packb({**meta, "codec": CODEC_VERSION + 1})
    with pytest.raises(UnreadableContent, match="newer"):
        reloaded(sections, clock)


def test_dead_entries_a_recovery_brings_back_are_found_and_reclaimed_again():
    # Reclaiming is not logged: the WAL replays the tombstone, which is reclaimed again.
    from inmem.shard.effects import record_payloads
    from inmem.shard.recovery_apply import EngineRecovery
    e, clock = engine(retention=0, log=True)
    e.kv_put(RUN, "a", 1)
    e.kv_delete(RUN, "a")
    e.kv_put(RUN, "t", 1, ttl=1)
    clock.advance(1 + BUCKET_S)
    sweep_all(e)
    assert e.kv_put(RUN, "a", 2) == 3  # a version handed out after a reclaim
    e.kv_delete(RUN, "a")
    wal = e.take_log()
    back = Engine(clock=clock, dead_key_retention_s=0)
    EngineRecovery(back).apply_records([p for p, _n in record_payloads(wal)])
    assert back.runs[RUN].kv.keys() == {"a", "t"}
    assert back.kv_floors == {}
    clock.advance(BUCKET_S)
    sweep_all(back)
    assert not back.runs[RUN].kv
    assert back.kv_floors == {RUN: 4}
    assert back.kv_put(RUN, "a", 3) == 5
