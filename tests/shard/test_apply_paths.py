"""One apply path: only `inmem.shard.effects` changes a run's tables, and every way in agrees.

A run's tables (KV, state and JSON entries, events, traces and their indexes)
are changed by live writes, by a failed transaction taking its writes back,
by WAL records read back at recovery and by a snapshot being loaded. Each of
these must go through the functions of `inmem.shard.effects`; the guard below
swaps every table of every run for one that records which module changed it.
The rebuilt engines must then hold exactly what the live one held.
"""

from __future__ import annotations

import itertools
import random
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inmem.errors import InmemError
from inmem.shard import effects as fx
from inmem.shard.effects import decode_batch, record_payloads
from inmem.shard.engine import Engine
from inmem.shard.recovery_apply import EngineRecovery
from inmem.shard.runs import RunData
from inmem.shard.snapshot_codec import dump

SEEDS = [1, 2, 3]
EFFECTS_MODULE = fx.__name__
DICT_TABLES = ("kv", "state", "json", "events_by_type", "traces", "traces_by_type",
               "traces_by_tag", "trace_children")
LIST_TABLES = ("events", "trace_order", "trace_roots")


class Writes:
    """Which module changed a guarded table, and how often."""

    def __init__(self):
        self.by_module: dict[str, int] = {}
        self.by_table: dict[str, int] = {}

    def note(self, table: str) -> None:
        module = sys._getframe(2).f_globals.get("__name__")
        self.by_module[module] = self.by_module.get(module, 0) + 1
        self.by_table[table] = self.by_table.get(table, 0) + 1


def _guarded(base, names):
    """A subclass of `base` whose mutating methods note their caller's module first."""
    def wrap(name):
        method = getattr(base, name)

        def guarded(self, *args, **kwargs):
            self._writes.note(self._table)
            return method(self, *args, **kwargs)
        return guarded
    return type(f"Guarded{base.__name__}", (base,),
                {"__slots__": ("_writes", "_table"), **{n: wrap(n) for n in names}})


GuardedDict = _guarded(dict, ("__setitem__", "__delitem__", "update", "pop", "popitem",
                              "setdefault", "clear"))
GuardedList = _guarded(list, ("__setitem__", "__delitem__", "__iadd__", "append", "extend",
                              "insert", "pop", "remove", "clear", "sort", "reverse"))


@pytest.fixture
def writes(monkeypatch):
    """Every RunData made while the test runs gets guarded tables; yields the record."""
    record = Writes()
    plain_init = RunData.__init__

    def init(self, eff, *args):
        plain_init(self, eff, *args)
        for names, cls in ((DICT_TABLES, GuardedDict), (LIST_TABLES, GuardedList)):
            for name in names:
                table = cls(getattr(self, name))
                table._writes, table._table = record, name
                setattr(self, name, table)

    monkeypatch.setattr(RunData, "__init__", init)
    return record


def workload(engine: Engine, rng: random.Random) -> None:
    """Writes of every kind to a few runs, with transactions that commit and ones that fail."""
    runs = [engine.begin_run(f"n{i}", f"run{i}", None, [f"t{i}"], {"i": i}) for i in range(3)]
    keys = [f"k{i}" for i in range(12)]
    for step in range(400):
        run = rng.choice(runs)
        r = engine.runs[run]
        kind = rng.randrange(10)
        if kind < 4:  # the KV fast path, with and without a ttl; deletes; cas
            key = rng.choice(keys)
            if rng.random() < 0.2:
                engine.kv_delete(run, key)
            elif rng.random() < 0.1:
                live = engine.kv_get_versioned(run, key)
                engine.kv_cas(run, key, 0 if live is None else live.version, step)
            else:
                engine.kv_put(run, key, rng.choice([step, f"v{step}", b"b", [step]]),
                              rng.choice([None, None, 3600]))
        elif kind == 4:
            engine.ev_append(run, rng.choice(["a", "b"]), {"step": step})
        elif kind == 5:
            parent = rng.choice([None, *r.traces]) if r.traces else None
            engine.tr_record(run, "thought", {"s": step}, parent, [rng.choice(["x", "y"])])
        elif kind == 6:
            name = rng.choice(["c1", "c2"])
            if rng.random() < 0.2:
                engine.st_delete(run, name)
            else:
                engine.st_set(run, name, step)
        elif kind == 7:
            key = rng.choice(["d1", "d2"])
            if rng.random() < 0.2:
                engine.js_delete(run, key)
            else:
                engine.js_set(run, key, "$.s", step)
        elif kind == 8:  # a committed transaction: several KV writes and more in one group
            writes = [["kv.put", [run, rng.choice(keys), step + i]] for i in range(3)]
            if rng.random() < 0.5:
                writes.append(["ev.append", [run, "tx", step]])
            engine.tx_commit(run, [], writes)
        else:  # a transaction refused at its last write: all its writes are taken back
            key = rng.choice(keys)
            writes = [["kv.put", [run, key, step]], ["kv.put", [run, "fresh" + str(step), 1]],
                      ["ev.append", [run, "tx", step]],
                      ["tr.record", [run, "decision", {"s": step}, None, ["z"]]],
                      ["st.set", [run, "c1", step]], ["js.put", [run, "d1", {"s": step}]],
                      ["kv.cas", [run, key, 10**6, 0]]]
            with pytest.raises(InmemError):
                engine.tx_commit(run, [], writes)
    engine.set_status(runs[0], "completed")
    engine.begin_run(None, "gone")
    engine.kv_put("gone", "k", 1)
    engine.run_delete("gone")


def state_of(engine: Engine) -> dict:
    """Every run's tables, journal and status fields, as plain values."""
    out = {}
    for run_id, r in engine.runs.items():
        tables = {name: dict(getattr(r, name)) for name in DICT_TABLES}
        tables.update({name: list(getattr(r, name)) for name in LIST_TABLES})
        tables["journal"] = list(r.journal)
        tables["info"] = r.info()
        out[run_id] = tables
    return out


def clock():
    ticks = itertools.count(1_000_000)
    return lambda: next(ticks)


def live(seed: int) -> Engine:
    engine = Engine(clock=clock(), log=True)
    workload(engine, random.Random(seed))
    return engine


def replayed(groups) -> Engine:
    engine = Engine(clock=clock())
    target = EngineRecovery(engine)
    for payload, _n in record_payloads(groups):
        target.apply_records([payload])
    return engine


@pytest.mark.parametrize("seed", SEEDS)
def test_only_the_effects_module_changes_a_run_s_tables(writes, seed):
    engine = live(seed)
    groups = engine.take_log()
    rebuilt_from_log = replayed(groups)
    rebuilt_from_snapshot = Engine(clock=clock())
    EngineRecovery(rebuilt_from_snapshot).load_snapshot(dict(dump(engine)[1]))

    assert set(writes.by_module) == {EFFECTS_MODULE}, f"seed {seed}: {writes.by_module}"
    # The guard saw every kind of table change (it is not idle).
    assert set(writes.by_table) == set(DICT_TABLES) | set(LIST_TABLES), f"seed {seed}"
    assert state_of(rebuilt_from_log) == state_of(engine), f"seed {seed}"
    assert state_of(rebuilt_from_snapshot) == state_of(engine), f"seed {seed}"


@pytest.mark.parametrize("seed", SEEDS)
def test_snapshot_then_log_rebuilds_what_was_served(seed):
    engine = Engine(clock=clock(), log=True)
    rng = random.Random(seed)
    workload(engine, rng)
    engine.take_log()  # covered by the snapshot below
    sections = dict(dump(engine)[1])
    for run_id in [r for r in engine.runs if engine.run_status(r) == "active"]:
        for i in range(50):
            engine.kv_put(run_id, f"k{i % 7}", i)
        engine.tx_commit(run_id, [], [["kv.put", [run_id, "t", i]] for i in range(5)])
    rebuilt = Engine(clock=clock())
    target = EngineRecovery(rebuilt)
    target.load_snapshot(sections)
    for payload, _n in record_payloads(engine.take_log()):
        count, batches = decode_batch(payload)
        assert any(len(effs) > 1 for _run, effs in batches), "no bulk batch was exercised"
        target.apply_records([payload])
    assert state_of(rebuilt) == state_of(engine), f"seed {seed}"


@pytest.mark.parametrize("seed", SEEDS)
def test_bulk_apply_leaves_the_table_one_by_one_apply_leaves(seed):
    rng = random.Random(seed)
    for apply_one, apply_many, table, codes in (
            (fx.apply_kv, fx.apply_kv_many, "kv", (fx.KV_PUT, fx.KV_DEL)),
            (fx.apply_state, fx.apply_state_many, "state", (fx.ST_PUT, fx.ST_DEL)),
            (fx.apply_json, fx.apply_json_many, "json", (fx.JS_PUT, fx.JS_DEL))):
        effs = [(rng.choice(codes), f"k{rng.randrange(20)}", b"v", i, i, None) for i in range(300)]
        one = RunData((fx.RUN_CREATE, "r", None, None, (), None, 0))
        many = RunData((fx.RUN_CREATE, "r", None, None, (), None, 0))
        many_table = getattr(many, table)
        many_table["k0"] = one_entry = (codes[0], "k0", b"old", 0, 0, None)
        getattr(one, table)["k0"] = one_entry
        for eff in effs:
            apply_one(one, eff)
        apply_many(many, effs)
        assert list(getattr(one, table).items()) == list(many_table.items()), f"seed {seed}"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("block", [1, 7, 10_000])
def test_records_applied_in_blocks_leave_what_one_by_one_leaves(seed, block):
    engine = live(seed)
    for value in (1, 2):  # a run deleted and made again: its records merge across both lives
        engine.begin_run(None, "again")
        engine.kv_put("again", "k", value)
        engine.kv_put("again", "k2", value)
        if value == 1:
            engine.run_delete("again")
    groups = engine.take_log()
    # One record per group, as strict mode writes under a light load: consecutive
    # records of one run merge into one batch when applied as a block.
    payloads = [p for g in groups for p, _n in record_payloads([g])]
    one_by_one = replayed(groups)
    blocked = Engine(clock=clock())
    target = EngineRecovery(blocked)
    applied = sum(target.apply_records(payloads[i:i + block])
                  for i in range(0, len(payloads), block))
    assert applied == len(groups)
    assert state_of(blocked) == state_of(one_by_one) == state_of(engine), f"seed {seed}"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.sampled_from("abc"), st.integers(0, 3)), st.integers())))
def test_grouped_is_appending_one_by_one(pairs):
    keys = [k for k, _v in pairs]
    values = [v for _k, v in pairs]
    expected: dict = {}
    for k, v in pairs:
        expected.setdefault(k, []).append(v)
    got = fx.grouped(keys, values)
    assert got == expected
    assert list(got) == list(expected)  # keys in order of first appearance


@pytest.mark.parametrize("seed", SEEDS)
def test_events_and_traces_load_in_bulk_as_one_by_one(seed):
    rng = random.Random(seed)
    events = [(fx.EV_APPEND, i, rng.choice(["a", "b", "c"]), b"\xc0", i, b"", b"")
              for i in range(200)]
    traces = []
    for i in range(200):
        parent = rng.choice([None, None, *(t[fx.TR_ID] for t in traces)]) if traces else None
        tags = rng.sample(["x", "y", "z"], rng.randrange(3))
        traces.append((fx.TR_ADD, f"t{i}", parent, rng.choice(["thought", "call"]), b"\xc0",
                       tags, None, i))
    one = RunData((fx.RUN_CREATE, "r", None, None, (), None, 0))
    bulk = RunData((fx.RUN_CREATE, "r", None, None, (), None, 0))
    for eff in events:
        fx.apply_event(one, eff)
    for eff in traces:
        fx.apply_trace(one, eff)
    fx.load_events(bulk, events)
    fx.load_traces(bulk, traces)
    for name in ("events", "trace_order", "trace_roots", *DICT_TABLES):
        assert getattr(bulk, name) == getattr(one, name), name
        if isinstance(getattr(one, name), dict):
            assert list(getattr(bulk, name)) == list(getattr(one, name)), name


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("form", ["entry", "mixed"])
def test_bulk_kv_apply_of_entry_forms_leaves_what_one_by_one_leaves(seed, form):
    # Format 2 logs plain puts as (code, key, entry); a record may mix them with
    # effects in their field form (deletes, puts made in transactions).
    from inmem.shard.entries import entry_of
    rng = random.Random(seed)
    effs = []
    for i in range(300):
        eff = (rng.choice((fx.KV_PUT, fx.KV_DEL)), f"k{rng.randrange(20)}", None, i + 1, i, None)
        if eff[0] == fx.KV_PUT:
            eff = (fx.KV_PUT, eff[1], b"\xa1v", i + 1, i, rng.choice((None, 10 ** 9)))
        if form == "entry" or rng.random() < 0.5:
            eff = (eff[0], eff[1], entry_of(eff))
        effs.append(eff)
    one = RunData((fx.RUN_CREATE, "r", None, None, (), None, 0))
    many = RunData((fx.RUN_CREATE, "r", None, None, (), None, 0))
    for eff in effs:
        fx.apply_kv(one, eff)
    fx.apply_kv_many(many, effs)
    assert list(one.kv.items()) == list(many.kv.items()), f"seed {seed}"
    assert list(one.journal) == list(many.journal), f"seed {seed}"
    if form == "entry":  # the logged tuples are the history items themselves
        assert all(a is b for a, b in zip(many.journal.items[1:], effs))
