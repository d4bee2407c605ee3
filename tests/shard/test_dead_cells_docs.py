"""Deleted state cells and JSON documents leave their run's table after the retention, as dead
KV entries do, each family under its own per-run version floor (`shard.dead_keys`)."""

from __future__ import annotations

import msgpack
import pytest

from inmem.errors import StateExists, TransactionConflict, VersionMismatch
from inmem.recovery import snapshot_format as fmt
from inmem.recovery.errors import UnreadableContent
from inmem.shard import dead_keys
from inmem.shard.dead_keys import BUCKET_SHIFT
from inmem.shard.effects import record_payloads
from inmem.shard.engine import Engine
from inmem.shard.recovery_apply import EngineRecovery
from inmem.shard.snapshot_codec import CODEC_VERSION, dump
from inmem.shard.upkeep import shard_info
from set_clock import Clock

RUN = "r"
BUCKET_S = (1 << BUCKET_SHIFT) / 1e6


def engine(retention=0, log=False):
    clock = Clock()
    e = Engine(clock=clock, dead_key_retention_s=retention, log=log)
    e.begin_run(run_id=RUN)
    return e, clock


def floors(e) -> tuple[dict, dict, dict]:
    """Each family's floors: (kv, state, json)."""
    return e.kv_floors, e.dead_state.floors, e.dead_json.floors


def sweep_all(e) -> int:
    """Sweep in the bounded slices upkeep takes until nothing more is reclaimed or noted."""
    total = 0
    for _ in range(10_000):
        got = e.sweep_dead()
        total += got
        now = e.clock()
        if not got and not any(d.rescan or d.unnoted or any(
                t <= dead_keys.due_by(d.retention_us, now) for t in d.times)
                for d in (e.dead, e.dead_state, e.dead_json)):
            return total
    raise AssertionError("the sweep never ended")


def cells(e, run=RUN) -> dict:
    return e.runs[run].state


def docs(e, run=RUN) -> dict:
    return e.runs[run].json


def search(e, terms) -> list:
    n_docs, total_len, dfs, _complete = e.search_stats(terms)
    return [hit[2] for hit in e.search_query(terms, n_docs, total_len, dfs)[0]]


# -- state cells ------------------------------------------------------------------------

def test_a_deleted_cell_stays_for_the_retention_then_is_reclaimed():
    e, clock = engine(retention=60)
    e.st_set(RUN, "c", 1)
    e.st_set(RUN, "c", 2)
    assert e.st_delete(RUN, "c") is True  # version 3
    clock.advance(30)
    assert sweep_all(e) == 0
    assert "c" in cells(e)
    clock.advance(30 + BUCKET_S)
    assert sweep_all(e) == 1
    assert not cells(e)
    assert floors(e) == ({}, {RUN: 3}, {})
    assert shard_info(0, e, None)["state_reclaimed"] == 1
    assert shard_info(0, e, None)["kv_reclaimed"] == 0


def test_a_cell_written_again_after_its_reclaim_continues_above_its_versions():
    e, clock = engine()
    assert [e.st_set(RUN, "c", i) for i in range(3)] == [1, 2, 3]
    e.st_delete(RUN, "c")  # version 4
    clock.advance(BUCKET_S)
    sweep_all(e)
    assert e.st_read(RUN, "c") is None
    assert e.st_init(RUN, "c", "again") == 5
    assert e.st_read(RUN, "c").version == 5
    with pytest.raises(StateExists):
        e.st_init(RUN, "c", "twice")


def test_a_new_cell_in_a_run_with_a_floor_starts_above_it_on_every_write_path():
    e, clock = engine()
    for i in range(4):
        e.st_set(RUN, "old", i)
    e.st_delete(RUN, "old")  # version 5
    clock.advance(BUCKET_S)
    sweep_all(e)
    assert e.dead_state.floors == {RUN: 5}
    assert e.st_set(RUN, "s", 1) == 6
    assert e.st_init(RUN, "i", 1) == 6
    assert e.st_cas(RUN, "c", 0, 1) == 6
    assert e.tx_commit(RUN, [["st", "t", 0]], [["st.set", [RUN, "t", 1]]]) == [6]
    # KV and JSON keep their own floors: a reclaimed cell moves neither.
    assert e.kv_put(RUN, "k", 1) == 1
    assert e.js_put(RUN, "d", {}) == 1


def test_cas_on_a_reclaimed_cell_is_cas_on_an_absent_one():
    e, clock = engine()
    assert e.st_set(RUN, "c", "v1") == 1
    e.st_delete(RUN, "c")
    clock.advance(BUCKET_S)
    sweep_all(e)
    for stale in (1, 2):
        with pytest.raises(VersionMismatch) as info:
            e.st_cas(RUN, "c", stale, "late")
        assert (info.value.expected, info.value.actual, info.value.current) == (stale, 0, None)
    assert e.st_read(RUN, "c") is None
    assert e.st_cas(RUN, "c", 0, "fresh") == 3  # "must be absent" holds: it is


def test_a_transaction_that_read_a_cell_tombstone_since_reclaimed_conflicts():
    e, clock = engine()
    e.st_set(RUN, "c", 1)
    e.st_delete(RUN, "c")
    assert e.tx_read(RUN, "st", "c") == [False, None, 2]
    clock.advance(BUCKET_S)
    sweep_all(e)
    with pytest.raises(TransactionConflict):
        e.tx_commit(RUN, [["st", "c", 2]], [["st.set", [RUN, "b", 1]]])
    assert e.tx_read(RUN, "st", "c") == [False, None, 0]
    assert e.tx_commit(RUN, [["st", "c", 0]], [["st.set", [RUN, "c", 1]]]) == [3]


def test_a_delete_inside_a_transaction_rolled_back_reclaims_nothing():
    e, clock = engine()
    e.st_set(RUN, "c", 1)
    with pytest.raises(Exception):
        e.tx_commit(RUN, [], [["st.delete", [RUN, "c"]], ["st.set", [RUN, "", 1]]])
    clock.advance(BUCKET_S)
    assert sweep_all(e) == 0
    assert e.st_read(RUN, "c").value == 1


# -- JSON documents ----------------------------------------------------------------------

def test_a_deleted_document_stays_for_the_retention_then_is_reclaimed():
    e, clock = engine(retention=60)
    e.js_put(RUN, "d", {"a": 1})
    e.js_set(RUN, "d", "$.b", 2)
    assert e.js_delete(RUN, "d") is True  # version 3
    clock.advance(30)
    assert sweep_all(e) == 0
    assert "d" in docs(e)
    clock.advance(30 + BUCKET_S)
    assert sweep_all(e) == 1
    assert not docs(e)
    assert floors(e) == ({}, {}, {RUN: 3})
    assert shard_info(0, e, None)["json_reclaimed"] == 1


def test_a_new_document_in_a_run_with_a_floor_starts_above_it_on_every_write_path():
    e, clock = engine()
    e.js_put(RUN, "old", 1)
    e.js_put(RUN, "old", 2)
    e.js_delete(RUN, "old")  # version 3
    clock.advance(BUCKET_S)
    sweep_all(e)
    assert e.dead_json.floors == {RUN: 3}
    assert e.js_get(RUN, "old") is None
    assert e.js_delete(RUN, "old") is False
    assert e.js_delete(RUN, "old", "$.a") is False
    assert e.js_pop(RUN, "old", "$.items") is None
    assert e.js_put(RUN, "p", {"a": 1}) == 4
    assert e.js_set(RUN, "s", "$.a.b", 1) == 4
    assert e.js_push(RUN, "q", "$.items", 1) == 1
    assert e.tx_read(RUN, "js", "q")[2] == 4
    assert e.tx_commit(RUN, [["js", "t", 0]], [["js.put", [RUN, "t", 1]]]) == [4]
    assert e.js_put(RUN, "old", "back") == 4
    assert e.kv_put(RUN, "k", 1) == 1 and e.st_set(RUN, "c", 1) == 1


def test_a_document_that_holds_null_is_not_dead():
    e, clock = engine()
    e.js_put(RUN, "n", None)
    e.js_put(RUN, "d", 1)
    e.js_delete(RUN, "d")
    clock.advance(BUCKET_S)
    assert sweep_all(e) == 1
    assert list(docs(e)) == ["n"]
    assert e.js_delete(RUN, "n") is True


def test_a_document_deleted_reclaimed_and_put_again_is_found_by_its_new_text_only():
    # The index follows the history: the new life's version is above the old one's, so
    # the old put (not yet indexed) is never taken for the current document.
    e, clock = engine()
    e.js_put(RUN, "d", {"text": "alpha"})
    e.js_delete(RUN, "d")
    clock.advance(BUCKET_S)
    sweep_all(e)
    e.js_put(RUN, "d", {"text": "beta"})
    assert search(e, ["alpha"]) == []
    assert search(e, ["beta"]) == ["d"]


# -- both, and the bounds ----------------------------------------------------------------

def test_a_run_deleted_and_begun_again_starts_every_family_from_floor_0():
    e, clock = engine()
    e.st_set(RUN, "c", 1)
    e.st_delete(RUN, "c")
    e.js_put(RUN, "d", 1)
    e.js_delete(RUN, "d")
    clock.advance(BUCKET_S)
    assert sweep_all(e) == 2
    assert e.run_delete(RUN)
    assert floors(e) == ({}, {}, {})
    e.begin_run(run_id=RUN)
    assert e.st_set(RUN, "c", 1) == 1
    assert e.js_put(RUN, "d", 1) == 1


@pytest.mark.parametrize("family", ["state", "json"])
def test_creates_and_deletes_of_unique_names_stay_bounded_without_a_sweep(family):
    # An embedded in-memory store runs no upkeep: its own deletes reclaim due ones.
    e, clock = engine(retention=1)
    table = cells(e) if family == "state" else docs(e)
    for i in range(20_000):
        if family == "state":
            e.st_set(RUN, f"c{i}", i)
            e.st_delete(RUN, f"c{i}")
        else:
            e.js_put(RUN, f"d{i}", {"i": i})
            e.js_delete(RUN, f"d{i}")
        clock.advance(0.001)
    assert len(table) < 5_000  # ~2.05 s of deletes are due or nearly: ~2100
    d = e.dead_state if family == "state" else e.dead_json
    assert d.reclaimed > 15_000
    assert e.counts()[family] == len(table)


def test_one_sweep_is_a_bounded_slice_across_the_families():
    e, clock = engine()
    n = dead_keys.SWEEP_ENTRIES
    for i in range(n):
        e.kv_put(RUN, f"k{i}", 1)
        e.kv_delete(RUN, f"k{i}")
        e.st_set(RUN, f"c{i}", 1)
        e.st_delete(RUN, f"c{i}")
        e.js_put(RUN, f"d{i}", 1)
        e.js_delete(RUN, f"d{i}")
    clock.advance(BUCKET_S)
    assert 0 < e.sweep_dead() <= n
    assert sweep_all(e) > 0
    assert not e.runs[RUN].kv and not cells(e) and not docs(e)
    assert (e.dead.reclaimed, e.dead_state.reclaimed, e.dead_json.reclaimed) == (n, n, n)


def test_a_backlog_of_one_family_does_not_starve_the_others():
    e, clock = engine()
    for i in range(3 * dead_keys.SWEEP_ENTRIES):
        e.kv_put(RUN, f"k{i}", 1, ttl=0.5)
    e.st_set(RUN, "c", 1)
    e.st_delete(RUN, "c")
    e.js_put(RUN, "d", 1)
    e.js_delete(RUN, "d")
    clock.advance(1 + BUCKET_S)
    for _ in range(3):
        e.sweep_dead()
    assert not cells(e) and not docs(e)


def test_the_sweep_waits_while_the_index_is_rebuilt():
    e, clock = engine()
    e.st_set(RUN, "c", 1)
    e.st_delete(RUN, "c")
    e.js_put(RUN, "d", 1)
    e.js_delete(RUN, "d")
    clock.advance(BUCKET_S)
    e.index.rebuilding = True
    assert e.sweep_dead() == 0
    e.st_set(RUN, "c2", 1)
    e.st_delete(RUN, "c2")  # nor inline
    assert "c" in cells(e) and "d" in docs(e)
    e.index.rebuilding = False
    clock.advance(BUCKET_S)
    assert sweep_all(e) == 3


# -- snapshots and recovery --------------------------------------------------------------

def reclaimed_engine():
    e, clock = engine(log=True)
    for i in range(3):
        e.st_set(RUN, "c", i)
    e.st_delete(RUN, "c")  # version 4
    e.js_put(RUN, "d", 1)
    e.js_delete(RUN, "d")  # version 2
    e.kv_put(RUN, "k", 1)
    e.kv_delete(RUN, "k")  # version 2
    e.st_set(RUN, "keep", 1)
    clock.advance(BUCKET_S)
    sweep_all(e)
    e.begin_run(run_id="plain")
    e.st_set("plain", "x", 1)
    assert floors(e) == ({RUN: 2}, {RUN: 4}, {RUN: 2})
    return e, clock


def reloaded(sections: dict, clock) -> Engine:
    e = Engine(clock=clock, dead_key_retention_s=0)
    EngineRecovery(e).load_snapshot(sections)
    return e


def test_a_snapshot_keeps_each_familys_floors():
    e, clock = reclaimed_engine()
    counts, sections = dump(e)
    sections = dict(sections)
    assert msgpack.unpackb(sections[fmt.META], raw=False)["codec"] == CODEC_VERSION == 4
    back = reloaded(sections, clock)
    assert floors(back) == ({RUN: 2}, {RUN: 4}, {RUN: 2})
    assert back.st_set(RUN, "c", 1) == 5
    assert back.st_set(RUN, "new", 1) == 5
    assert back.js_put(RUN, "d", 1) == 3
    assert back.kv_put(RUN, "new", 1) == 3
    assert back.st_set("plain", "y", 1) == 1


def as_codec_3(sections: dict) -> dict:
    """What the previous build wrote: META says codec 3, and a run has only its KV floor."""
    pack = msgpack.Packer(use_bin_type=True).pack
    meta = msgpack.unpackb(sections[fmt.META], raw=False)
    runs = msgpack.unpackb(sections[fmt.RUNS], raw=False)
    return {**sections, fmt.META: pack({**meta, "codec": 3}),
            fmt.RUNS: pack([row[:8] for row in runs])}


def test_a_codec_3_snapshot_loads_with_cell_and_document_floors_0():
    # A build that wrote codec 3 kept every dead cell and document: nothing to be above.
    e, clock = engine(log=True)
    e.kv_put(RUN, "k", 1)
    e.kv_delete(RUN, "k")
    clock.advance(BUCKET_S)
    sweep_all(e)
    e.st_set(RUN, "c", 1)
    e.st_delete(RUN, "c")  # not due yet: in the snapshot, as the old build kept it
    back = reloaded(as_codec_3(dict(dump(e)[1])), clock)
    assert floors(back) == ({RUN: 2}, {}, {})
    assert list(cells(back)) == ["c"]
    clock.advance(BUCKET_S)
    assert sweep_all(back) == 1  # found without a note, by the rescan after a recovery
    assert back.st_set(RUN, "c", 2) == 3
    assert back.st_set(RUN, "other", 2) == 3


@pytest.mark.parametrize("field", [8, 9])
@pytest.mark.parametrize("floor", [-1, "4", None, 1.5])
def test_a_snapshot_with_a_floor_that_is_not_a_count_is_refused(field, floor):
    e, clock = reclaimed_engine()
    sections = dict(dump(e)[1])
    runs = msgpack.unpackb(sections[fmt.RUNS], raw=False)
    runs[0][field] = floor
    sections[fmt.RUNS] = msgpack.packb(runs, use_bin_type=True)
    with pytest.raises(UnreadableContent) as info:
        reloaded(sections, clock)
    assert info.value.section == fmt.RUNS


def test_a_codec_4_run_of_8_fields_is_refused():
    e, clock = reclaimed_engine()
    sections = dict(dump(e)[1])
    runs = msgpack.unpackb(sections[fmt.RUNS], raw=False)
    sections[fmt.RUNS] = msgpack.packb([row[:8] for row in runs], use_bin_type=True)
    with pytest.raises(UnreadableContent):
        reloaded(sections, clock)


def test_tombstones_a_recovery_brings_back_are_found_and_reclaimed_again():
    # Reclaiming is not logged: the WAL replays the tombstones, which go again, and the
    # versions handed out after a reclaim are replayed as given.
    e, clock = engine(log=True)
    e.st_set(RUN, "c", 1)
    e.st_delete(RUN, "c")
    e.js_put(RUN, "d", 1)
    e.js_delete(RUN, "d")
    clock.advance(BUCKET_S)
    sweep_all(e)
    assert e.st_set(RUN, "c", 2) == 3
    assert e.js_put(RUN, "d", 2) == 3
    e.st_delete(RUN, "c")
    e.js_delete(RUN, "d")
    back = Engine(clock=clock, dead_key_retention_s=0)
    EngineRecovery(back).apply_records([p for p, _n in record_payloads(e.take_log())])
    assert list(cells(back)) == ["c"] and list(docs(back)) == ["d"]
    clock.advance(BUCKET_S)
    assert sweep_all(back) == 2
    assert floors(back) == ({}, {RUN: 4}, {RUN: 4})
    assert back.st_set(RUN, "c", 3) == 5
    assert back.js_put(RUN, "d", 3) == 5
    assert shard_info(0, back, None)["state_reclaimed"] == 1


def test_after_a_recovery_runs_without_cells_cost_the_cells_rescan_nothing():
    # Thousands of runs of KV keys alone, one deleted cell: the rescans that find dead
    # entries after a recovery look only at runs with entries of their family.
    e, clock = engine(log=True)
    for i in range(dead_keys.SWEEP_ENTRIES + 1000):
        e.begin_run(run_id=f"kv{i}")
        e.kv_put(f"kv{i}", "k", 1)
    e.st_set(RUN, "c", 1)
    e.st_delete(RUN, "c")
    back = reloaded(dict(dump(e)[1]), clock)
    clock.advance(BUCKET_S)
    back.sweep_dead()  # KV's rescan takes this round whole
    assert "c" in cells(back)
    back.sweep_dead()  # the cells' rescan: one run, then its due tombstone
    assert not cells(back)
