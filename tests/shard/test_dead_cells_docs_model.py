"""State cells and JSON documents against a model, through deletes, reclaims and recoveries.

A state machine drives one engine (with a WAL log and a test clock) through
every write of a cell (init, set, cas with the right, a stale or the absent
version, delete) and of a document (put, set at a path, delete of a part or
of the whole), transactions that commit or roll back, KV deletes beside them,
clock moves, sweeps of dead entries (a bounded slice, or everything due),
run deletion, snapshots and recovery from a snapshot and the WAL after it
(a reopen). After each step every name's value and version is what the model
says: a name in its table continues its own version, one that is not starts
at its family's floor + 1, the floor being the highest version reclaimed in
that family of the run (`shard.dead_keys`); the writes that make tombstones
reclaim due ones on their own, and the model checks that each was due.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from inmem.errors import InvalidKey, StateExists, VersionMismatch
from inmem.shard.dead_keys import BUCKET_SHIFT
from inmem.shard.effects import record_payloads
from inmem.shard.engine import Engine
from inmem.shard.recovery_apply import EngineRecovery
from inmem.shard.snapshot_codec import dump
from set_clock import Clock

RUN = "model"
FAMILIES = ("kv", "state", "json")
names = st.sampled_from(["a", "b", "c", "d/e"])
values = st.integers(-3, 3) | st.text(max_size=2)
BUCKET_LAST = (1 << BUCKET_SHIFT) - 1
#: a deleted entry in the model (a JSON document may hold None)
GONE = object()


@dataclass
class Entry:
    value: object  # GONE: a tombstone
    version: int
    ts: int


class CellsDocsMachine(RuleBasedStateMachine):
    """Subclassed per test with the engine's dead_key_retention_s."""

    retention_s = 0

    def __init__(self):
        super().__init__()
        self.clock = Clock()
        self.engine = self.new_engine()
        self.engine.begin_run(run_id=RUN)
        #: family -> {name: Entry}: what each table holds, tombstones included
        self.tables = {f: {} for f in FAMILIES}
        self.floors = dict.fromkeys(FAMILIES, 0)
        self.snapshot = None
        self.wal: list = []
        self.snapshot_floors = dict(self.floors)
        #: family -> {name: Entry} reclaimed since the snapshot (a recovery brings them back)
        self.reclaimed_since = {f: {} for f in FAMILIES}

    def new_engine(self) -> Engine:
        return Engine(clock=self.clock, log=True, dead_key_retention_s=self.retention_s)

    # -- the model ---------------------------------------------------------------

    def due(self, e: Entry) -> bool:
        cutoff = self.clock.now_us - int(self.retention_s * 1_000_000)
        return e.value is GONE and e.ts | BUCKET_LAST <= cutoff

    def live(self, family, name):
        e = self.tables[family].get(name)
        return None if e is None or e.value is GONE else e

    def next_version(self, family, name) -> int:
        e = self.tables[family].get(name)
        return self.floors[family] + 1 if e is None else e.version + 1

    def wrote(self, family, name, value, version) -> None:
        want = self.next_version(family, name)
        assert version == want, (family, name, version, want)
        self.tables[family][name] = Entry(value, version, self.clock.now_us)

    def deleted(self, family, name, answer) -> None:
        e = self.live(family, name)
        assert answer is (e is not None), (family, name, answer)
        if e is not None:
            self.tables[family][name] = Entry(GONE, e.version + 1, self.clock.now_us)

    def logged(self) -> None:
        self.wal.extend(self.engine.take_log())
        self.sync()

    def sync(self) -> None:
        """Take in what the engine reclaimed: only due tombstones may have gone."""
        r = self.engine.runs[RUN]
        for family in FAMILIES:
            table = getattr(r, family)
            model = self.tables[family]
            assert table.keys() <= model.keys(), family
            for name in [n for n in model if n not in table]:
                e = model.pop(name)
                assert self.due(e), (family, name, e)
                self.floors[family] = max(self.floors[family], e.version)
                self.reclaimed_since[family][name] = e
        got = tuple(d.floors.get(RUN, 0) for d in self.engine.dead_families())
        assert got == tuple(self.floors[f] for f in FAMILIES)

    # -- state cells ---------------------------------------------------------------

    @rule(name=names, value=values)
    def st_set(self, name, value):
        self.wrote("state", name, value, self.engine.st_set(RUN, name, value))
        self.logged()

    @rule(name=names, value=values)
    def st_init(self, name, value):
        if self.live("state", name) is not None:
            with pytest.raises(StateExists):
                self.engine.st_init(RUN, name, value)
        else:
            self.wrote("state", name, value, self.engine.st_init(RUN, name, value))
        self.logged()

    @rule(name=names, value=values, how=st.sampled_from(["right", "stale", "absent"]))
    def st_cas(self, name, value, how):
        e = self.live("state", name)
        actual = 0 if e is None else e.version
        if how == "right":
            expected = actual
        elif how == "absent":
            expected = 0
        else:  # a version of an earlier life, or of this one before its last write
            old = self.tables["state"].get(name) or self.reclaimed_since["state"].get(name)
            expected = max(1, (old.version - 1) if old else self.floors["state"])
        if expected == actual:
            self.wrote("state", name, value, self.engine.st_cas(RUN, name, expected, value))
        else:
            with pytest.raises(VersionMismatch) as info:
                self.engine.st_cas(RUN, name, expected, value)
            assert (info.value.expected, info.value.actual) == (expected, actual)
            assert (info.value.current is None) is (e is None)
        self.logged()

    @rule(name=names)
    def st_delete(self, name):
        self.deleted("state", name, self.engine.st_delete(RUN, name))
        self.logged()

    # -- JSON documents --------------------------------------------------------------

    @rule(name=names, value=values)
    def js_put(self, name, value):
        self.wrote("json", name, {"v": value}, self.engine.js_put(RUN, name, {"v": value}))
        self.logged()

    @rule(name=names, value=values)
    def js_set(self, name, value):
        e = self.live("json", name)
        doc = {} if e is None else dict(e.value)
        doc["w"] = value
        self.wrote("json", name, doc, self.engine.js_set(RUN, name, "$.w", value))
        self.logged()

    @rule(name=names)
    def js_delete_a_part(self, name):
        e = self.live("json", name)
        got = self.engine.js_delete(RUN, name, "$.v")
        if e is None or "v" not in e.value:
            assert got is False
        else:
            assert got is True
            doc = dict(e.value)
            del doc["v"]
            self.tables["json"][name] = Entry(doc, e.version + 1, self.clock.now_us)
        self.logged()

    @rule(name=names)
    def js_delete(self, name):
        self.deleted("json", name, self.engine.js_delete(RUN, name))
        self.logged()

    # -- KV beside them: its own floor -------------------------------------------------

    @rule(name=names, value=values, delete=st.booleans())
    def kv_write(self, name, value, delete):
        if delete:
            self.deleted("kv", name, self.engine.kv_delete(RUN, name))
        else:
            self.wrote("kv", name, value, self.engine.kv_put(RUN, name, value))
        self.logged()

    # -- transactions ------------------------------------------------------------------

    @rule(writes=st.lists(st.tuples(st.sampled_from(["st.set", "st.delete", "js.put",
                                                      "js.delete"]), names, values),
                          max_size=4),
          fails=st.booleans())
    def transaction(self, writes, fails):
        writes = [(op, n, {"v": v} if op == "js.put" else v) for op, n, v in writes]
        ops = [[op, [RUN, n, v] if op.endswith(("set", "put")) else [RUN, n]]
               for op, n, v in writes]
        if fails:
            ops.append(["st.set", [RUN, "", 1]])
            with pytest.raises(InvalidKey):
                self.engine.tx_commit(RUN, [], ops)
        else:
            out = self.engine.tx_commit(RUN, [], ops)
            for (op, n, v), result in zip(writes, out, strict=True):
                family = "state" if op.startswith("st") else "json"
                if op.endswith("delete"):
                    self.deleted(family, n, result)
                else:
                    self.wrote(family, n, v, result)
        self.logged()

    # -- time, sweeps, runs -------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.25, 0.5, 1, 3]))
    def advance(self, seconds):
        self.clock.now_us += int(seconds * 1_000_000)

    @rule(entries=st.integers(1, 4))
    def sweep_a_slice(self, entries):
        self.engine.sweep_dead(entries)
        self.sync()

    @rule(age=st.booleans())
    def sweep_everything_due(self, age):
        if age:  # past the retention of what died so far
            self.clock.now_us += int((self.retention_s + 2) * 1_000_000)
        for _ in range(3):  # the rescans after a recovery take their share first
            self.engine.sweep_dead(10**9)
        self.sync()
        for family in FAMILIES:
            assert not [n for n, e in self.tables[family].items() if self.due(e)], family

    @rule()
    def delete_run_and_begin_it_again(self):
        assert self.engine.run_delete(RUN)
        self.engine.begin_run(run_id=RUN)
        for family in FAMILIES:
            self.tables[family].clear()
            self.reclaimed_since[family].clear()
        self.floors = dict.fromkeys(FAMILIES, 0)
        self.snapshot_floors = dict(self.floors)
        self.logged()

    # -- snapshot and reopen ------------------------------------------------------------

    @rule()
    def take_snapshot(self):
        self.logged()
        self.snapshot = dict(dump(self.engine)[1])
        self.wal = []
        self.snapshot_floors = dict(self.floors)
        self.reclaimed_since = {f: {} for f in FAMILIES}

    @rule(snapshot_first=st.booleans())
    def reopen(self, snapshot_first):
        """A new engine from the last snapshot and the WAL since, as a restart builds it."""
        if snapshot_first:
            self.take_snapshot()
        self.logged()
        engine = self.new_engine()
        target = EngineRecovery(engine)
        if self.snapshot is not None:
            target.load_snapshot(self.snapshot)
        if self.wal:
            target.apply_records([payload for payload, _n in record_payloads(self.wal)])
        self.engine = engine
        for family in FAMILIES:
            for name, e in self.reclaimed_since[family].items():
                self.tables[family].setdefault(name, e)
        self.reclaimed_since = {f: {} for f in FAMILIES}
        self.floors = dict(self.snapshot_floors)
        self.sync()

    # -- what every step must leave ---------------------------------------------------

    @invariant()
    def values_and_versions_agree(self):
        self.sync()
        e = self.engine
        for name in ("a", "b", "c", "d/e"):
            cell = self.live("state", name)
            got = e.st_read(RUN, name)
            assert (None if got is None else (got.value, got.version)) == \
                (None if cell is None else (cell.value, cell.version)), name
            doc = self.live("json", name)
            assert e.js_get(RUN, name) == (None if doc is None else doc.value), name
            for family, ns in (("state", "st"), ("json", "js")):
                m = self.tables[family].get(name)
                found, value, version = e.tx_read(RUN, ns, name)
                if m is None:
                    assert (found, version) == (False, 0), (family, name)
                elif m.value is GONE:
                    assert (found, version) == (False, m.version), (family, name)
                else:
                    assert (found, value, version) == (True, m.value, m.version), (family, name)


# A hang detector: shrinking a failing run of the machine takes minutes.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("retention_s", [0, 1, 60])
def test_cells_and_documents_agree_with_a_model(retention_s):
    class Machine(CellsDocsMachine):
        pass
    Machine.retention_s = retention_s
    run_state_machine_as_test(Machine,
                              settings=settings(max_examples=100, stateful_step_count=60,
                                                deadline=None))
