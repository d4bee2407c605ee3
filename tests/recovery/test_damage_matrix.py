"""Damage anywhere in a store's files: the proven prefix, or a typed error naming the file.

A store is built with one write per WAL record (strict mode, one thread), so
record i is op i, and the full state after every op is kept (runs, KV, events
and their chain check, traces, and each run's replay, which reads the history
files). Then one file is damaged, one byte flipped or the file cut short,
and the store is opened as an application would. The model of what may come
back:

- in the newest WAL segment: a cut keeps exactly the records wholly before
  it; a flip inside the last record is a torn tail (the records before it),
  inside any other record it is corruption, and in the zero fill a killed
  strict store leaves after its records it loses nothing;
- anywhere else (an older segment, a snapshot, a history file): the full
  state (the damage is in something recovery does not need, or a damaged
  snapshot was set aside and an older one used), or a CorruptionError whose
  text names the damaged file.

Never another exception, a hang, or a state that is not the model's.
"""

from __future__ import annotations

import itertools
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import inmem
from inmem.processes import child_env
from inmem.recovery.errors import WalGapError

OPTIONS = {"snapshot_on_close": False, "snapshot_interval_s": None, "segment_bytes_max": 600,
           "history_compact_dead_fraction": None}
RECORD_HEADER = struct.Struct("<IBB")  # length u32, type u8, version u8 (wal.record)
CRC_BYTES = 4

# The workload, run in this process and in a child that is killed: one op per line.
BUILD = textwrap.dedent("""
    import itertools, os, pickle, sys
    import inmem

    def pinned_clock():
        ticks = itertools.count(1_700_000_000_000_000, 7)
        return lambda: next(ticks)

    def dump(db):
        out = []
        for info in db.runs.list():
            r = info.run_id
            view = db.replay_run(r)
            status = "active" if info.status == "orphaned" else info.status
            out.append((info._replace(status=status), db.kv.items(r),
                        db.events.range(r, 0, 1000), db.events.verify_chain(r),
                        db.traces.roots(r), view.kv, view.json, view.state, view.events,
                        view.traces, view.position))
        return out

    def ops():
        yield lambda db: db.begin_run(run_id="r1", name="n")
        for i in range(6):
            yield lambda db, i=i: db.kv.put("r1", f"k{i % 3}", {"i": i, "s": "x" * i})
            yield lambda db, i=i: db.events.append("r1", "step", {"i": i})
        yield lambda db: db.state.set("r1", "cell", 1)
        yield lambda db: db.json.put("r1", "doc", {"a": [1, 2]})
        yield lambda db: db.traces.record("r1", "thought", {"t": 1})
        yield lambda db: db.begin_run(run_id="r2")
        yield lambda db: db.kv.put_many("r2", {"a": 1, "b": 2})
        yield lambda db: db.kv.delete("r1", "k0")
        yield lambda db: db.end_run("r2")
        yield lambda db: db.kv.put("r1", "last", "v")

    def build(path, snapshot_after, options, kill):
        db = inmem.open(path, "strict", clock=pinned_clock(), **options)
        states = [dump(db)]
        for i, op in enumerate(ops()):
            op(db)
            states.append(dump(db))
            if i + 1 in snapshot_after:
                db.snapshot()
        with open(os.path.join(path, "..", "states"), "wb") as f:
            pickle.dump(states, f)
        if kill:
            os._exit(0)  # no close: the WAL ends as a crash leaves it
        db.close()
""")
_ns: dict = {}
exec(compile(BUILD, "damage_matrix_build", "exec"), _ns)
dump, pinned_clock = _ns["dump"], _ns["pinned_clock"]


class Store:
    """A built store directory, its states after each op, and the files worth damaging."""

    def __init__(self, root, snapshot_after, kill):
        self.path = os.path.join(root, "db")
        if kill:
            code = BUILD + f"\nbuild({self.path!r}, {snapshot_after!r}, {OPTIONS!r}, True)\n"
            subprocess.run([sys.executable, "-c", code], check=True, env=child_env(),
                           timeout=120)
        else:
            _ns["build"](self.path, snapshot_after, OPTIONS, False)
        with open(os.path.join(root, "states"), "rb") as f:
            self.states = pickle.load(f)
        wal = sorted(os.listdir(os.path.join(self.path, "wal")))
        self.newest = os.path.join("wal", wal[-1])
        self.files = [os.path.join(sub, name) for sub in ("wal", "snapshots", "history")
                      for name in sorted(os.listdir(os.path.join(self.path, sub)))
                      if os.path.getsize(os.path.join(self.path, sub, name))]


@pytest.fixture(scope="module", params=[
    ("wal only", (), False), ("two snapshots", (6, 14), False),
    ("two snapshots, killed", (6, 14), True)], ids=lambda p: p[0])
def store(request, tmp_path_factory):
    _name, snapshot_after, kill = request.param
    return Store(tmp_path_factory.mktemp("matrix"), snapshot_after, kill)


def records(path) -> list[tuple[int, int]]:
    """(offset, end) of every record of a segment, walking the length fields."""
    with open(path, "rb") as f:
        data = f.read()
    out, off = [], 0
    while off + RECORD_HEADER.size + CRC_BYTES <= len(data):
        length, rtype, _version = RECORD_HEADER.unpack_from(data, off)
        if rtype == 0:
            break
        end = off + RECORD_HEADER.size + length + CRC_BYTES
        out.append((off, end))
        off = end
    return out


def expected(store: Store, rel: str, damage: str, at: int):
    """The state index the model allows, or None where only the final state or an error may be."""
    if rel != store.newest:
        return None
    first = int(os.path.basename(rel)[:-4])
    spans = records(os.path.join(store.path, rel))
    if damage == "cut":
        return first + sum(1 for _off, end in spans if end <= at)
    for j, (off, end) in enumerate(spans):
        if off <= at < end:
            if j == len(spans) - 1:
                return first + j  # a torn tail: the last record goes
            return "corruption"
    return len(store.states) - 1  # in the zero fill after the last record


def reopen(store: Store, rel: str, damage: str, at: int, mask: int):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "db")
        shutil.copytree(store.path, path)
        os.unlink(os.path.join(path, "LOCK"))
        target = os.path.join(path, rel)
        if damage == "cut":
            os.truncate(target, at)
        else:
            with open(target, "r+b") as f:
                f.seek(at)
                byte = f.read(1)[0]
                f.seek(at)
                f.write(bytes([byte ^ mask]))
        try:
            with inmem.open(path, "strict", **OPTIONS) as db:
                return dump(db), None
        except inmem.CorruptionError as exc:
            return None, exc


@pytest.mark.timeout(600)
@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_one_damaged_byte_or_cut_gives_the_model_state_or_a_typed_error(store, data):
    rel = data.draw(st.sampled_from(store.files), label="file")
    size = os.path.getsize(os.path.join(store.path, rel))
    damage = data.draw(st.sampled_from(["flip", "cut"]), label="damage")
    at = data.draw(st.integers(0, size - 1), label="offset")
    mask = data.draw(st.integers(1, 255), label="mask")
    state, error = reopen(store, rel, damage, at, mask)
    want = expected(store, rel, damage, at)
    if want == "corruption":
        assert error is not None and error.path == os.path.join(
            os.path.dirname(error.path), os.path.basename(rel)), error
    elif want is not None:
        assert error is None, error
        assert state == store.states[want], f"expected the state after {want} ops"
    elif error is not None:
        assert os.path.basename(rel) in str(error), error
    else:
        assert state == store.states[-1]


@pytest.mark.timeout(120)
def test_when_the_only_snapshot_is_damaged_the_gap_error_names_it(tmp_path):
    # Retention let the WAL go below the snapshot: without it nothing can be
    # recovered, and the error must say the snapshot is why, not only the WAL.
    path = tmp_path / "db"
    with inmem.open(path, "strict", clock=pinned_clock(), **OPTIONS) as db:
        run = db.begin_run(run_id="r")
        for i in range(40):
            db.kv.put(run, f"k{i % 3}", i)
        (info,) = db.snapshot()
        db.kv.put(run, "after", 1)
    snap = info.path
    with open(snap, "r+b") as f:
        f.seek(20)
        f.write(b"\xff")
    for attempt in range(2):  # the first open sets it aside; the next must still say so
        with pytest.raises(WalGapError) as caught:
            inmem.open(path, "strict", **OPTIONS).close()
        assert os.path.basename(snap) + ".broken.1" in str(caught.value), (attempt, caught.value)
