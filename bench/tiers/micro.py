"""Tier micro: every primitive's operations, embedded, in memory, one thread.

get and put run side by side with SQLite (`:memory:`, one autocommit
statement per op) and LMDB (sync off, on tmpfs when there is one), through
the same `op(i)` loop; the other primitives have no peer doing the same job.
"""

from __future__ import annotations

import inmem

from ..context import Context, error_row, make_row, peer_value, target
from ..harness import measure
from ..workloads import (VALUE_BYTES, lmdb_opener, load_ours, make_keys, make_value,
                         measure_peer_kv, measure_stats)

TIER = "micro"
MODE = "inmemory"
PEERS = ("sqlite", "lmdb")

TARGETS = {
    "embedded.kv.get": target("p50 < 1 µs, >= 1M ops/s", "goal: embedded hot path", ops_per_s=1_000_000,
                              p50_us=1.0),
    "embedded.kv.put.inmemory": target("p50 < 2 µs, >= 500K ops/s", "goal: embedded hot path",
                                       ops_per_s=500_000, p50_us=2.0),
    "embedded.kv.cas": target("p50 < 5 µs", "baseline (CAS, inmemory)", p50_us=5.0),
    "embedded.kv.delete": target("p50 < 3 µs", "baseline (delete, inmemory)", p50_us=3.0),
    "embedded.events.append": target("p50 < 10 µs", "goal: embedded hot path", p50_us=10.0),
    "embedded.state.cas": target("p50 < 10 µs", "goal: embedded hot path", p50_us=10.0),
    "embedded.traces.record": target("p50 < 10 µs", "goal: embedded hot path", p50_us=10.0),
    "embedded.kv.mixed.10r1w": target(">= 200K ops/s", "baseline (mixed 10:1, inmemory)",
                                      ops_per_s=200_000),
}

VALUE_SIZES = (("64B", 64), ("1KiB", 1024), ("64KiB", 65536))


def run(ctx: Context) -> None:
    for name, fn in _cases(ctx):
        with ctx.case(f"micro: {name}"):
            try:
                fn()
            except Exception as exc:  # one broken case must not cost the others
                with_peers = name.startswith(("embedded.kv.get", "embedded.kv.put.inmemory"))
                peers = PEERS if with_peers else ()
                ctx.add(error_row(name, TIER, MODE, "ops/s", exc, peers=peers,
                                  target=TARGETS.get(name)))


def _cases(ctx):
    s = ctx.sizes
    n, slow, big = s["micro_ops"], s["micro_slow_ops"], s["micro_big_ops"]
    reps = s["repeats"]
    return [
        ("embedded.kv.get",
         lambda: _kv_row(ctx, "embedded.kv.get", "get", VALUE_BYTES, n, n, reps)),
        ("embedded.kv.put.inmemory",
         lambda: _kv_row(ctx, "embedded.kv.put.inmemory", "put", VALUE_BYTES, n, n, reps)),
        *[(f"embedded.kv.put.inmemory.v{label}",
           (lambda label=label, size=size: _kv_row(
               ctx, f"embedded.kv.put.inmemory.v{label}", "put", size,
               big if size >= 65536 else n, min(1000, big) if size >= 65536 else n, reps)))
          for label, size in VALUE_SIZES],
        ("embedded.kv.cas", lambda: _kv_cas(ctx, n, reps)),
        ("embedded.kv.delete", lambda: _kv_delete(ctx, n, reps)),
        ("embedded.kv.mixed.10r1w", lambda: _kv_mixed(ctx, n, reps)),
        ("embedded.kv.put.pipeline1000", lambda: _kv_pipeline(ctx, n, reps)),
        ("embedded.events.append", lambda: _events_append(ctx, slow, reps)),
        ("embedded.events.read", lambda: _events_read(ctx, slow, reps)),
        ("embedded.state.transition", lambda: _state_transition(ctx, slow, reps)),
        ("embedded.state.cas", lambda: _state_cas(ctx, slow, reps)),
        ("embedded.state.read", lambda: _state_read(ctx, slow, reps)),
        ("embedded.traces.record", lambda: _traces_record(ctx, slow, reps)),
        ("embedded.json.set_path", lambda: _json_set(ctx, slow, reps)),
        ("embedded.json.get_path", lambda: _json_get(ctx, slow, reps)),
        ("embedded.tx.10r1w", lambda: _tx_10r1w(ctx, slow, reps)),
    ]


def _fresh():
    db = inmem.open(None)
    return db, db.begin_run(name="bench")


def _ours_row(name, m, *, peers=None, extra=None, peer_details=None):
    extra = dict(extra or {})
    extra["ours"] = measure_stats(m)
    if peer_details:
        extra["peer_detail"] = peer_details
    return make_row(name, TIER, MODE, "ops/s", value=m.ops_per_s, p50=m.p50_us, p99=m.p99_us,
                    n=m.n, peers=peers, target=TARGETS.get(name), extra=extra)


def _kv_row(ctx, name, kind, value_size, n, nkeys, reps):
    value = make_value(value_size)
    keys = make_keys(nkeys)
    db, run = _fresh()
    try:
        if kind == "get":
            load_ours(db, run, keys, value)
        m = measure(_ours_kv_loop(db, run, kind, keys, value), n, repeats=reps)
    finally:
        db.close()
    details: dict = {}
    peers = {
        "sqlite": peer_value(lambda: measure_peer_kv(
            lambda: ctx.peers.sqlite(":memory:"), kind, keys, value, n, repeats=reps),
            details, "sqlite"),
    }
    lmdb_open, lmdb_clean, where = lmdb_opener(ctx, sync=False, value_bytes=value_size,
                                               nkeys=nkeys, on_tmpfs=True)
    peers["lmdb"] = peer_value(lambda: measure_peer_kv(
        lmdb_open, kind, keys, value, n, repeats=reps, bytes_keys=True, cleanup=lmdb_clean),
        details, "lmdb")
    lmdb_clean()
    extra = {"value_bytes": value_size, "keys": nkeys,
             "peer_config": {"sqlite": ":memory:, autocommit, one statement per op",
                             "lmdb": f"sync off, {where}, one transaction per op"}}
    ctx.add(_ours_row(name, m, peers=peers, extra=extra, peer_details=details))


def _ours_kv_loop(db, run, kind, keys, value):
    get, put = db.kv.get, db.kv.put
    nk = len(keys)
    if kind == "get":
        return lambda i: get(run, keys[i % nk])
    return lambda i: put(run, keys[i % nk], value)


def _kv_cas(ctx, n, reps):
    db, run = _fresh()
    try:
        nk = min(n, 10_000)
        keys = make_keys(nk)
        value = make_value(VALUE_BYTES)
        versions = [db.kv.put(run, k, value) for k in keys]
        cas = db.kv.cas

        def op(i):
            j = i % nk
            versions[j] = cas(run, keys[j], versions[j], value)

        m = measure(op, n, repeats=reps)
    finally:
        db.close()
    ctx.add(_ours_row("embedded.kv.cas", m, extra={"keys": nk}))


def _kv_delete(ctx, n, reps):
    db, run = _fresh()
    try:
        keys = make_keys(n)
        value = make_value(VALUE_BYTES)
        delete = db.kv.delete

        def refill(_r):
            load_ours(db, run, keys, value)

        m = measure(lambda i: delete(run, keys[i % n]), n, repeats=reps, before_repeat=refill)
    finally:
        db.close()
    ctx.add(_ours_row("embedded.kv.delete", m, extra={"keys": n, "note": "every delete hits a "
                                                      "live key (refilled before each pass)"}))


def _kv_mixed(ctx, n, reps):
    db, run = _fresh()
    try:
        keys = make_keys(n)
        value = make_value(VALUE_BYTES)
        load_ours(db, run, keys, value)
        get, put = db.kv.get, db.kv.put

        def op(i):
            if i % 11 == 10:
                put(run, keys[i % n], value)
            else:
                get(run, keys[i % n])

        m = measure(op, n, repeats=reps)
    finally:
        db.close()
    ctx.add(_ours_row("embedded.kv.mixed.10r1w", m, extra={"keys": n,
                                                           "note": "10 gets : 1 put"}))


def _kv_pipeline(ctx, n, reps):
    batch = 1000
    batches = max(5, n // batch)
    db, run = _fresh()
    try:
        keys = make_keys(batch * 10)
        value = make_value(VALUE_BYTES)
        pipeline = db.pipeline

        def op(i):
            base = (i % 10) * batch
            p = pipeline()
            put = p.kv.put
            for k in keys[base:base + batch]:
                put(run, k, value)
            p.execute()

        m = measure(op, batches, repeats=reps, warmup=2, samples=min(batches, 200))
    finally:
        db.close()
    row = make_row("embedded.kv.put.pipeline1000", TIER, MODE, "ops/s",
                   value=m.ops_per_s * batch, p50=None, p99=None, n=m.n * batch,
                   extra={"batch": batch, "batch_p50_us": m.p50_us, "batch_p99_us": m.p99_us,
                          "note": "p50/p99 are per pipeline of 1000 puts"})
    ctx.add(row)


def _events_append(ctx, n, reps):
    db, run = _fresh()
    try:
        append = db.events.append

        m = measure(lambda i: append(run, "tool_call", {"tool": "search", "i": i}), n,
                    repeats=reps)
        events = db.events.count(run)
    finally:
        db.close()
    ctx.add(_ours_row("embedded.events.append", m, extra={"events_at_end": events,
                                                          "payload": "2-field dict"}))


def _events_read(ctx, n, reps):
    db, run = _fresh()
    try:
        count = min(n, 10_000)
        load = db.pipeline()
        for i in range(count):
            load.events.append(run, "tool_call", {"tool": "search", "i": i})
        load.execute()
        read = db.events.read
        m = measure(lambda i: read(run, i % count), n, repeats=reps)
    finally:
        db.close()
    ctx.add(_ours_row("embedded.events.read", m, extra={"events": count}))


def _state_transition(ctx, n, reps):
    db, run = _fresh()
    try:
        db.state.init(run, "counter", 0)
        transition = db.state.transition

        def bump(state):
            return state.value + 1, None

        m = measure(lambda i: transition(run, "counter", bump), n, repeats=reps)
    finally:
        db.close()
    ctx.add(_ours_row("embedded.state.transition", m,
                      extra={"note": "read + fn + cas, uncontended"}))


def _state_cas(ctx, n, reps):
    db, run = _fresh()
    try:
        cell = [db.state.init(run, "cell", 0)]
        cas = db.state.cas

        def op(i):
            cell[0] = cas(run, "cell", cell[0], i)

        m = measure(op, n, repeats=reps)
    finally:
        db.close()
    ctx.add(_ours_row("embedded.state.cas", m))


def _state_read(ctx, n, reps):
    db, run = _fresh()
    try:
        db.state.init(run, "cell", {"owner": "agent-1", "step": 3})
        read = db.state.read
        m = measure(lambda i: read(run, "cell"), n, repeats=reps)
    finally:
        db.close()
    ctx.add(_ours_row("embedded.state.read", m))


def _traces_record(ctx, n, reps):
    db, run = _fresh()
    try:
        record = db.traces.record
        m = measure(lambda i: record(run, "tool_call", {"tool": "search", "i": i}), n,
                    repeats=reps)
    finally:
        db.close()
    ctx.add(_ours_row("embedded.traces.record", m))


def _json_doc():
    return {"agent": {"name": "planner", "step": 0, "memory": {"facts": ["a", "b", "c"]}},
            "tools": [{"name": "search", "calls": 0}, {"name": "fetch", "calls": 0}]}


def _json_set(ctx, n, reps):
    db, run = _fresh()
    try:
        db.json.put(run, "doc", _json_doc())
        jset = db.json.set
        m = measure(lambda i: jset(run, "doc", "$.agent.step", i), n, repeats=reps)
    finally:
        db.close()
    ctx.add(_ours_row("embedded.json.set_path", m, extra={"path": "$.agent.step"}))


def _json_get(ctx, n, reps):
    db, run = _fresh()
    try:
        db.json.put(run, "doc", _json_doc())
        jget = db.json.get
        m = measure(lambda i: jget(run, "doc", "$.tools[1].name"), n, repeats=reps)
    finally:
        db.close()
    ctx.add(_ours_row("embedded.json.get_path", m, extra={"path": "$.tools[1].name"}))


def _tx_10r1w(ctx, n, reps):
    db, run = _fresh()
    try:
        nk = 1000
        keys = make_keys(nk)
        load_ours(db, run, keys, 0)
        transaction = db.transaction

        def op(i):
            with transaction(run) as tx:
                get = tx.kv.get
                total = 0
                for j in range(10):
                    total += get(keys[(i + j * 97) % nk], 0)
                tx.kv.put(keys[i % nk], total % 1000)

        m = measure(op, n, repeats=reps)
    finally:
        db.close()
    ctx.add(_ours_row("embedded.tx.10r1w", m, extra={"note": "10 kv.get + 1 kv.put, one commit",
                                                     "keys": nk}))


REQUIRED_ROWS = ("embedded.kv.get", "embedded.kv.put.inmemory", "embedded.kv.cas",
                 "embedded.kv.delete", "embedded.events.append", "embedded.state.transition",
                 "embedded.state.cas", "embedded.traces.record", "embedded.json.set_path",
                 "embedded.tx.10r1w", "embedded.kv.put.inmemory.v64B",
                 "embedded.kv.put.inmemory.v1KiB", "embedded.kv.put.inmemory.v64KiB")
