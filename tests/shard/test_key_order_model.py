"""KV listings against a sorted-dict model, through every way a run's key set changes.

A state machine drives one engine (with a WAL log and a test clock) through
puts (one, many, a pipeline's series, a cas), deletes, TTLs and clock moves,
transactions that commit or roll back, run deletion, snapshots and recovery
from a snapshot and the WAL after it; after each step, pages of `kv.keys` and
`kv.items` with a random prefix, `after` and `limit` must be exactly the
model's live keys in order.
"""

from __future__ import annotations

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
from inmem.shard.snapshot_codec import dump

RUN = "model"
#: keys that share prefixes, so pages and prefixes cut through each other
keys = st.text(alphabet="ab/", min_size=1, max_size=4)
prefixes = st.text(alphabet="ab/", max_size=3)
afters = st.none() | st.text(alphabet="ab/z", max_size=4)
limits = st.none() | st.integers(1, 6)
ttls = st.sampled_from([None, None, 0.5, 1, 2])
values = st.integers(-3, 3) | st.text(max_size=2)


class Clock:
    def __init__(self):
        self.now_us = 1_700_000_000_000_000

    def __call__(self) -> int:
        return self.now_us


class ListingMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.clock = Clock()
        self.engine = Engine(clock=self.clock, log=True)
        self.engine.begin_run(run_id=RUN)
        #: key -> (value, expires at in µs or None): what the run holds, dead keys included
        self.model: dict = {}
        #: the snapshot sections last taken (None: none yet), and the WAL groups since
        self.snapshot = None
        self.wal: list = []

    # -- the model ---------------------------------------------------------------

    def live(self) -> dict:
        now = self.clock.now_us
        return {k: v for k, (v, exp) in self.model.items() if exp is None or now < exp}

    def expires(self, ttl):
        return None if ttl is None else self.clock.now_us + int(ttl * 1_000_000)

    def logged(self) -> None:
        self.wal.extend(self.engine.take_log())

    # -- writes ------------------------------------------------------------------

    @rule(key=keys, value=values, ttl=ttls)
    def put(self, key, value, ttl):
        self.engine.kv_put(RUN, key, value, ttl)
        self.model[key] = (value, self.expires(ttl))
        self.logged()

    @rule(pairs=st.lists(st.tuples(keys, values), max_size=5), ttl=ttls)
    def put_many(self, pairs, ttl):
        self.engine.kv_put_many(RUN, [list(p) for p in pairs], ttl)
        for k, v in pairs:
            self.model[k] = (v, self.expires(ttl))
        self.logged()

    @rule(pairs=st.lists(st.tuples(keys, values), min_size=2, max_size=5))
    def put_series(self, pairs):
        out = self.engine.execute_batch([("kv.put", [RUN, k, v]) for k, v in pairs])
        assert all(type(v) is int for v in out), out
        for k, v in pairs:
            self.model[k] = (v, None)
        self.logged()

    @rule(key=keys, value=values)
    def cas(self, key, value):
        found, _value, version = self.engine.tx_read(RUN, "kv", key)
        live = key in self.live()
        assert found is live
        self.engine.kv_cas(RUN, key, version if live else 0, value)
        self.model[key] = (value, None)
        self.logged()

    @rule(key=keys)
    def delete(self, key):
        self.engine.kv_delete(RUN, key)
        self.model.pop(key, None)
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
            self.engine.tx_commit(RUN, [], ops)
            for put, k, v in writes:
                if put:
                    self.model[k] = (v, None)
                else:
                    self.model.pop(k, None)
        self.logged()

    @rule()
    def delete_run_and_begin_it_again(self):
        assert self.engine.run_delete(RUN)
        self.engine.begin_run(run_id=RUN)
        self.model.clear()
        self.logged()

    # -- snapshot and recovery -----------------------------------------------------

    @rule()
    def take_snapshot(self):
        self.logged()
        _counts, sections = dump(self.engine)
        self.snapshot = dict(sections)
        self.wal = []

    @rule()
    def recover(self):
        """A new engine from the last snapshot and the WAL since, as a restart builds it."""
        self.logged()
        engine = Engine(clock=self.clock, log=True)
        target = EngineRecovery(engine)
        if self.snapshot is not None:
            assert fmt.KV in self.snapshot
            target.load_snapshot(self.snapshot)
        if self.wal:
            target.apply_records([payload for payload, _n in record_payloads(self.wal)])
        self.engine = engine

    # -- listings ------------------------------------------------------------------

    @rule(prefix=prefixes, after=afters, limit=limits)
    def page(self, prefix, after, limit):
        self.check_page(prefix, after, limit)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data(), prefix=prefixes, limit=limits)
    def page_after_a_stored_key(self, data, prefix, limit):
        # after= is usually the last key of the page before, which may since have died
        after = data.draw(st.sampled_from(sorted(self.model)))
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


#: (keys per chunk, rebuild share): the real ones, and tiny chunks that split on every few
#: inserts, with new keys merged in bulk or (share too large to reach) put in place one by one
SHAPES = [(key_order.CHUNK, key_order.REBUILD_SHARE), (2, key_order.REBUILD_SHARE), (3, 10**9)]


@pytest.mark.parametrize("kept_from", [key_order.KEPT_FROM, 0])
@pytest.mark.parametrize("chunk,share", SHAPES)
def test_listings_agree_with_a_sorted_model(monkeypatch, chunk, share, kept_from):
    # kept_from 0: every run keeps its order, however small, and catches it up
    monkeypatch.setattr(key_order, "KEPT_FROM", kept_from)
    monkeypatch.setattr(key_order, "CHUNK", chunk)
    monkeypatch.setattr(key_order, "REBUILD_SHARE", share)
    run_state_machine_as_test(ListingMachine,
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
