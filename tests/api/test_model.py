"""A stateful model test: random sequences of KV operations, TTL clock moves
and transactions, run against the database and a plain dict side by side.
After every step every key must agree on existence, value and version.

Version bookkeeping: each key has a floor (the last version the store is
known to have used) and whether the next write's version is exactly floor+1.
It is exact after any write we observed; it becomes "only known to be
greater" when a key expires or a missing key is deleted, because the
contract fixes neither whether those count as writes, only that a stale
version never validates again. It also becomes "only greater" once a key has
been dead (deleted or expired) for the store's dead_key_retention_s (the
default, 60 s): its dead entry may have been reclaimed, and the key then
starts again above its run's version floor; a key never written starts there
too once any key of the run may have been reclaimed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant, rule,
                                 run_state_machine_as_test)

import inmem

KEYS = ["a", "ab", "b", "b/1", "b/2", "c"]
PREFIXES = ["", "a", "b", "b/", "c", "z"]
TTLS = [None, None, None, 0.5, 1, 2.5]
ADVANCES = [0.25, 0.5, 1, 2.5]
#: the default dead_key_retention_s, in µs: a key dead this long may have been reclaimed
RETENTION_US = 60_000_000

keys = st.sampled_from(KEYS)
values = (st.integers(-5, 5) | st.text(max_size=3) | st.binary(max_size=2)
          | st.lists(st.integers(0, 3), max_size=3) | st.none())


@dataclass
class Entry:
    value: object
    version: int
    expires_us: int | None


class KVMachine(RuleBasedStateMachine):
    """Subclassed per test with the backend factory and the clock class."""

    factory = None
    clock_class = None

    def __init__(self):
        super().__init__()
        self.clock = self.clock_class()
        self.db = self.factory(clock=self.clock)
        self.run = self.db.begin_run(name="model")
        self.entries: dict[str, Entry] = {}
        self.floor = {k: 0 for k in KEYS}
        self.exact = {k: True for k in KEYS}
        #: key -> when its entry died (a delete; an expiry once seen), until written again
        self.deaths: dict[str, int] = {}
        #: the earliest death of any key so far: the run's floor may rise from then on
        self.first_death: int | None = None

    def teardown(self):
        self.db.close()

    # --- model helpers ----------------------------------------------------

    def alive(self, key) -> Entry | None:
        entry = self.entries.get(key)
        if entry is not None and entry.expires_us is not None and self.clock.now_us >= entry.expires_us:
            del self.entries[key]
            self.exact[key] = False
            self.died(key, entry.expires_us)
            return None
        return entry

    def died(self, key, at: int) -> None:
        self.deaths[key] = at
        if self.first_death is None or at < self.first_death:
            self.first_death = at

    def may_be_reclaimed(self, key) -> bool:
        """Whether `key`'s next version may come from its run's floor rather than from it."""
        cutoff = self.clock.now_us - RETENTION_US
        for k, e in self.entries.items():  # expired, and not looked at since
            if e.expires_us is not None and e.expires_us <= self.clock.now_us:
                self.died(k, e.expires_us)
        if key in self.deaths:
            return self.deaths[key] <= cutoff
        return key not in self.entries and self.first_death is not None \
            and self.first_death <= cutoff

    def wrote(self, key, version, value, ttl=None):
        if self.may_be_reclaimed(key):
            self.exact[key] = False
        self.deaths.pop(key, None)
        if self.exact[key]:
            assert version == self.floor[key] + 1, (key, version, self.floor[key])
        else:
            assert version > self.floor[key], (key, version, self.floor[key])
        self.floor[key] = version
        self.exact[key] = True
        expires = None if ttl is None else self.clock.now_us + round(ttl * 1_000_000)
        self.entries[key] = Entry(value, version, expires)

    # --- rules ------------------------------------------------------------

    @rule(key=keys, value=values, ttl=st.sampled_from(TTLS))
    def put(self, key, value, ttl):
        self.alive(key)
        version = self.db.kv.put(self.run, key, value, ttl=ttl)
        self.wrote(key, version, value, ttl)

    @rule(key=keys)
    def delete(self, key):
        entry = self.alive(key)
        existed = self.db.kv.delete(self.run, key)
        assert existed is (entry is not None)
        if entry is not None:
            del self.entries[key]
            self.floor[key] = entry.version + 1
            self.exact[key] = True
            self.died(key, self.clock.now_us)
        else:
            self.exact[key] = False

    @rule(key=keys, value=values)
    def cas_right(self, key, value):
        entry = self.alive(key)
        if entry is None:
            version = self.db.kv.cas(self.run, key, 0, value)
            self.wrote(key, version, value)
        elif entry.expires_us is None:
            version = self.db.kv.cas(self.run, key, entry.version, value)
            self.wrote(key, version, value)
        else:
            # Whether a cas keeps a ttl is not part of the contract; check the
            # refusal of "must not exist" instead, which is.
            with pytest.raises(inmem.VersionMismatch) as info:
                self.db.kv.cas(self.run, key, 0, value)
            assert (info.value.expected, info.value.actual) == (0, entry.version)

    @rule(key=keys, value=values, offset=st.sampled_from([-2, -1, 1, 2, 7]))
    def cas_wrong(self, key, value, offset):
        entry = self.alive(key)
        if entry is None:
            # Any nonzero version is stale for a missing key, the last one it had included.
            wrong = max(1, self.floor[key] + offset)
        else:
            wrong = entry.version + offset
            if wrong < 0:
                wrong = entry.version + 1
        with pytest.raises(inmem.VersionMismatch) as info:
            self.db.kv.cas(self.run, key, wrong, value)
        assert info.value.expected == wrong
        if entry is not None:
            assert info.value.actual == entry.version

    @rule(seconds=st.sampled_from(ADVANCES))
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule(prefix=st.sampled_from(PREFIXES))
    def keys_and_items(self, prefix):
        live = sorted(k for k in KEYS if k.startswith(prefix) and self.alive(k) is not None)
        assert self.db.kv.keys(self.run, prefix=prefix) == live
        assert self.db.kv.items(self.run, prefix=prefix) == [
            (k, self.entries[k].value) for k in live]

    @rule(wanted=st.lists(keys, max_size=4))
    def get_many(self, wanted):
        expected = [e.value if (e := self.alive(k)) is not None else None for k in wanted]
        assert self.db.kv.get_many(self.run, wanted) == expected

    @rule(reads=st.lists(keys, unique=True, max_size=3),
          writes=st.dictionaries(keys, values, max_size=3),
          interleave=st.booleans())
    def transaction(self, reads, writes, interleave):
        conflicting = interleave and bool(reads)
        try:
            with self.db.transaction(self.run) as tx:
                for k in reads:
                    entry = self.alive(k)
                    assert tx.kv.get(k) == (None if entry is None else entry.value)
                if conflicting:
                    target = reads[0]
                    self.alive(target)
                    version = self.db.kv.put(self.run, target, "interleaved")
                    self.wrote(target, version, "interleaved")
                for k, v in writes.items():
                    assert tx.kv.put(k, v) is None
        except inmem.TransactionConflict:
            assert conflicting, "a transaction without a conflicting write was refused"
            return
        assert not conflicting, "a transaction whose read changed was committed"
        results = list(tx.results)
        assert len(results) == len(writes)
        for (k, v), version in zip(writes.items(), results):
            self.alive(k)
            self.wrote(k, version, v)

    # --- the check after every step ---------------------------------------

    @invariant()
    def agrees_with_model(self):
        for key in KEYS:
            entry = self.alive(key)
            got = self.db.kv.get_versioned(self.run, key)
            if entry is None:
                assert got is None, (key, got)
                assert self.db.kv.get(self.run, key, "missing") == "missing"
                assert self.db.kv.exists(self.run, key) is False
            else:
                assert got is not None, key
                assert (got.value, got.version) == (entry.value, entry.version), key
                assert got.timestamp <= self.clock.now_us
                assert self.db.kv.get(self.run, key) == entry.value
                assert self.db.kv.exists(self.run, key) is True
        assert self.db.kv.keys(self.run) == sorted(self.entries)


# A database per example, each step a round trip: through a cluster on two
# busy cores the default 120 s is not enough for the whole state machine.
@pytest.mark.timeout(400)
def test_kv_agrees_with_a_dict_model(backend_factory, clock_factory):
    class Machine(KVMachine):
        factory = staticmethod(backend_factory)
        clock_class = clock_factory

    run_state_machine_as_test(Machine, settings=settings(stateful_step_count=30))
