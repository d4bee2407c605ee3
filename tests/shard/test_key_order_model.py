"""KV listings and versions against a model, through every way a run's key set changes.

A state machine drives one engine (with a WAL log and a test clock) through
puts (one, many, a pipeline's series, a cas), deletes, TTLs and clock moves,
transactions that commit or roll back, run deletion, sweeps of dead entries
(a bounded slice, or everything due), snapshots and recovery from a snapshot
and the WAL after it; after each step, pages of `kv.keys` and `kv.items` with
a random prefix, `after` and `limit` must be exactly the model's live keys in
order, and every key's version what the model says: a key in the table
continues its own, one that is not starts at the run's floor + 1, the floor
being the highest version reclaimed (`shard.dead_keys`). The writes that make
dead entries reclaim due ones on their own; the model takes in which ones, and
checks that each was due.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant, precondition, rule,
                                 run_state_machine_as_test)

from inmem.errors import InvalidKey
from inmem.recovery import snapshot_format as fmt
from inmem.shard.effects import record_payloads
from inmem.shard import key_order
from inmem.shard.engine import Engine
from inmem.shard.recovery_apply import EngineRecovery
from inmem.shard.dead_keys import BUCKET_SHIFT
from inmem.shard.snapshot_codec import dump
from set_clock import Clock

RUN = "model"
#: keys that share prefixes, so pages and prefixes cut through each other
keys = st.text(alphabet="ab/", min_size=1, max_size=4)
prefixes = st.text(alphabet="ab/", max_size=3)
afters = st.none() | st.text(alphabet="ab/z", max_size=4)
limits = st.none() | st.integers(1, 6)
ttls = st.sampled_from([None, None, 0.5, 1, 2])
values = st.integers(-3, 3) | st.text(max_size=2)
#: the µs of a note's bucket after its time (shard.dead_keys): due once all of it is past
BUCKET_LAST = (1 << BUCKET_SHIFT) - 1


@dataclass
class Entry:
    """What the model holds of a key's entry: its value (None: deleted), version, times."""
    value: object
    version: int
    ts: int
    expires: int | None = None

    def dead_since(self):
        return self.ts if self.value is None else self.expires


class ListingMachine(RuleBasedStateMachine):
    """Subclassed per test with the engine's dead_key_retention_s."""

    retention_s = 0

    def __init__(self):
        super().__init__()
        self.clock = Clock()
        self.engine = self.new_engine()
        self.engine.begin_run(run_id=RUN)
        #: key -> Entry: every entry the run's table holds, dead ones included
        self.entries: dict = {}
        #: the run's version floor: the highest version of a reclaimed entry
        self.floor = 0
        #: the snapshot sections last taken (None: none yet), and the WAL groups since
        self.snapshot = None
        self.wal: list = []
        #: what a recovery brings back: the floor the snapshot holds, and the dead
        #: entries reclaimed since it (the WAL or the snapshot holds them again)
        self.snapshot_floor = 0
        self.reclaimed_since: dict = {}

    def new_engine(self) -> Engine:
        return Engine(clock=self.clock, log=True, dead_key_retention_s=self.retention_s)

    # -- the model ---------------------------------------------------------------

    def live(self) -> dict:
        now = self.clock.now_us
        return {k: e.value for k, e in self.entries.items()
                if e.value is not None and (e.expires is None or now < e.expires)}

    def due(self, e: Entry) -> bool:
        """Whether a sweep now must reclaim `e`: dead, and its whole bucket past the retention."""
        since = e.dead_since()
        cutoff = self.clock.now_us - int(self.retention_s * 1_000_000)
        return since is not None and since <= self.clock.now_us and since | BUCKET_LAST <= cutoff

    def expires(self, ttl):
        return None if ttl is None else self.clock.now_us + int(ttl * 1_000_000)

    def next_version(self, key) -> int:
        e = self.entries.get(key)
        return self.floor + 1 if e is None else e.version + 1

    def wrote(self, key, value, version, ttl=None) -> None:
        assert version == self.next_version(key), (key, version, self.next_version(key))
        self.entries[key] = Entry(value, version, self.clock.now_us, self.expires(ttl))

    def deleted(self, key, answer) -> None:
        """A kv.delete of `key` answered `answer`: a tombstone unless it was one or missing."""
        e = self.entries.get(key)
        if e is None or e.value is None:
            assert answer is False
            return
        assert answer is (key in self.live())
        self.entries[key] = Entry(None, e.version + 1, self.clock.now_us)

    def logged(self) -> None:
        self.wal.extend(self.engine.take_log())
        self.sync()

    def sync(self) -> None:
        """Take in what the engine reclaimed (a sweep, or the writes that make dead entries
        reclaiming due ones): only due entries may have gone, and nothing else."""
        table = self.engine.runs[RUN].kv
        assert table.keys() <= self.entries.keys()
        for key in [k for k in self.entries if k not in table]:
            e = self.entries.pop(key)
            assert self.due(e), (key, e)
            self.floor = max(self.floor, e.version)
            self.reclaimed_since[key] = e
        assert self.engine.kv_floors.get(RUN, 0) == self.floor

    # -- writes ------------------------------------------------------------------

    @rule(key=keys, value=values, ttl=ttls)
    def put(self, key, value, ttl):
        self.wrote(key, value, self.engine.kv_put(RUN, key, value, ttl), ttl)
        self.logged()

    @rule(pairs=st.lists(st.tuples(keys, values), max_size=5), ttl=ttls)
    def put_many(self, pairs, ttl):
        versions = self.engine.kv_put_many(RUN, [list(p) for p in pairs], ttl)
        for (k, v), version in zip(pairs, versions, strict=True):
            self.wrote(k, v, version, ttl)
        self.logged()

    @rule(pairs=st.lists(st.tuples(keys, values), min_size=2, max_size=5))
    def put_series(self, pairs):
        out = self.engine.execute_batch([("kv.put", [RUN, k, v]) for k, v in pairs])
        for (k, v), version in zip(pairs, out, strict=True):
            self.wrote(k, v, version)
        self.logged()

    @rule(key=keys, value=values)
    def cas(self, key, value):
        found, _value, version = self.engine.tx_read(RUN, "kv", key)
        live = key in self.live()
        assert found is live
        self.wrote(key, value, self.engine.kv_cas(RUN, key, version if live else 0, value))
        self.logged()

    @rule(key=keys)
    def delete(self, key):
        self.deleted(key, self.engine.kv_delete(RUN, key))
        self.logged()

    @rule(seconds=st.sampled_from([0.25, 0.5, 1, 3]))
    def advance(self, seconds):
        self.clock.now_us += int(seconds * 1_000_000)

    @rule(writes=st.lists(st.tuples(st.booleans(), keys, values), max_size=4),
          fails=st.booleans())
    def transaction(self, writes, fails):
        ops = [["kv.put", [RUN, k, v]] if put else ["kv.delete", [RUN, k]]
               for put, k, v in writes]
        if fails:  # a refused write at the end: everything before it is taken back
            ops.append(["kv.put", [RUN, "", 1]])
            with pytest.raises(InvalidKey):
                self.engine.tx_commit(RUN, [], ops)
        else:
            out = self.engine.tx_commit(RUN, [], ops)
            for (put, k, v), result in zip(writes, out, strict=True):
                if put:
                    self.wrote(k, v, result)
                else:
                    self.deleted(k, result)
        self.logged()

    @rule()
    def delete_run_and_begin_it_again(self):
        assert self.engine.run_delete(RUN)
        self.engine.begin_run(run_id=RUN)
        self.entries.clear()
        self.floor = 0
        # A recovery replays the run's deletion and creation: nothing before comes back.
        self.snapshot_floor = 0
        self.reclaimed_since.clear()
        self.logged()

    # -- reclaiming dead entries ----------------------------------------------------

    @rule(entries=st.integers(1, 4))
    def sweep_a_slice(self, entries):
        self.engine.sweep_dead(entries)
        self.sync()

    @rule()
    def sweep_everything_due(self):
        self.engine.sweep_dead(10**9)
        self.sync()
        assert not [k for k, e in self.entries.items() if self.due(e)]

    # -- snapshot and recovery -----------------------------------------------------

    @rule()
    def take_snapshot(self):
        self.logged()
        _counts, sections = dump(self.engine)
        self.snapshot = dict(sections)
        self.wal = []
        self.snapshot_floor = self.floor
        self.reclaimed_since = {}

    @rule()
    def recover(self):
        """A new engine from the last snapshot and the WAL since, as a restart builds it."""
        self.logged()
        engine = self.new_engine()
        target = EngineRecovery(engine)
        if self.snapshot is not None:
            assert fmt.KV in self.snapshot
            target.load_snapshot(self.snapshot)
        if self.wal:
            target.apply_records([payload for payload, _n in record_payloads(self.wal)])
        self.engine = engine
        # What was reclaimed since the snapshot is back (a later write of the key wins).
        for key, e in self.reclaimed_since.items():
            self.entries.setdefault(key, e)
        self.reclaimed_since = {}
        self.floor = self.snapshot_floor
        self.sync()

    # -- listings ------------------------------------------------------------------

    @rule(prefix=prefixes, after=afters, limit=limits)
    def page(self, prefix, after, limit):
        self.check_page(prefix, after, limit)

    @precondition(lambda self: bool(self.entries))
    @rule(data=st.data(), prefix=prefixes, limit=limits)
    def page_after_a_stored_key(self, data, prefix, limit):
        # after= is usually the last key of the page before, which may since have died
        after = data.draw(st.sampled_from(sorted(self.entries)))
        self.check_page(prefix, after, limit)

    def check_page(self, prefix, after, limit):
        live = self.live()
        want = sorted(k for k in live if k.startswith(prefix) and (after is None or k > after))
        if limit is not None:
            want = want[:limit]
        assert self.engine.kv_keys(RUN, prefix, after, limit) == want
        assert self.engine.kv_items(RUN, prefix, after, limit) == [(k, live[k]) for k in want]

    @invariant()
    def whole_listing_agrees(self):
        live = self.live()
        assert self.engine.kv_keys(RUN) == sorted(live)

    @invariant()
    def versions_agree(self):
        self.sync()
        live = self.live()
        for key, e in self.entries.items():
            got = self.engine.tx_read(RUN, "kv", key)
            if key in live:
                assert got == [True, e.value, e.version], key
                assert self.engine.kv_get_versioned(RUN, key).version == e.version
            else:
                assert got == [False, None, e.version], key
        for key, e in self.reclaimed_since.items():
            if key not in self.entries:
                assert self.engine.tx_read(RUN, "kv", key) == [False, None, 0]


#: (keys per chunk, rebuild share): the real ones, and tiny chunks that split on every few
#: inserts, with new keys merged in bulk or (share too large to reach) put in place one by one
SHAPES = [(key_order.CHUNK, key_order.REBUILD_SHARE), (2, key_order.REBUILD_SHARE), (3, 10**9)]


@pytest.mark.parametrize("kept_from", [key_order.KEPT_FROM, 0])
@pytest.mark.parametrize("chunk,share", SHAPES)
@pytest.mark.parametrize("retention_s", [0, 1, 60])
def test_listings_and_versions_agree_with_a_model(monkeypatch, chunk, share, kept_from,
                                                  retention_s):
    # kept_from 0: every run keeps its order, however small, and catches it up
    monkeypatch.setattr(key_order, "KEPT_FROM", kept_from)
    monkeypatch.setattr(key_order, "CHUNK", chunk)
    monkeypatch.setattr(key_order, "REBUILD_SHARE", share)

    class Machine(ListingMachine):
        pass
    Machine.retention_s = retention_s
    run_state_machine_as_test(Machine,
                              settings=settings(max_examples=100, stateful_step_count=40,
                                                deadline=None))


@pytest.mark.parametrize("chunk,share", SHAPES)
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # set once, same for all
@given(steps=st.lists(st.lists(keys, max_size=12), max_size=8), starts=st.lists(afters, max_size=4))
def test_an_order_catches_up_with_the_keys_added_to_its_table(monkeypatch, chunk, share, steps,
                                                             starts):
    monkeypatch.setattr(key_order, "CHUNK", chunk)
    monkeypatch.setattr(key_order, "REBUILD_SHARE", share)
    table: dict = {}
    order = key_order.KeyOrder(table)
    for added in steps:
        table.update(dict.fromkeys(added))
        order.catch_up()
        assert [k for c in order.chunks for k in c] == sorted(table)
        assert order.maxes == [c[-1] for c in order.chunks] and all(order.chunks)
        for start in starts:
            if start is None:
                continue
            for size in (1, 3, 100):
                for inclusive in (True, False):
                    got, place = [], order.find(start, inclusive)
                    while True:
                        keys, place = order.take(place, size)
                        if not keys:
                            break
                        assert len(keys) <= size
                        got += keys
                    assert got == sorted(k for k in table if k > start or inclusive and k == start)
