"""Tier durability: what writing to disk costs, per op and under group commit.

- `embedded.kv.put.buffered`: acknowledged once in the WAL buffer; beside
  SQLite (WAL journal, synchronous=NORMAL) and LMDB (sync off), each put one
  transaction. Flush interval variants show what the interval trades.
- `embedded.kv.put.strict`: one writer, acknowledged after fsync; beside
  SQLite synchronous=FULL and LMDB sync on, one commit (one fsync) per put.
  The three are measured in interleaved rounds (`bench.rounds`): an fsync's
  cost drifts with whatever else the disk is doing, and this row's target is
  a ratio to SQLite, so both sides of it must run in the same seconds.
- `embedded.kv.put.strict.group{1,8,32}`: 1/8/32 writer threads; our strict
  mode shares one fsync among every record waiting (group commit); SQLite
  and LMDB serialise their writers, one fsync each.
- `durability.fsync.raw`: the machine's floor, a 100-byte append + fsync.

Every store lives in a scratch directory on the output's filesystem, so all
of them hit the same disk.
"""

from __future__ import annotations

import os

import inmem

from ..context import Context, error_row, make_row, peer_value, skipped_row, target
from ..harness import measure, measure_threads, timed_loop
from ..rounds import Side, interleave
from ..workloads import (VALUE_BYTES, lmdb_opener, make_keys, make_value, measure_peer_kv,
                         measure_stats, sqlite_file_opener)

TIER = "durability"
PEERS = ("sqlite", "lmdb")
GROUP_THREADS = (1, 8, 32)

TARGETS = {
    "embedded.kv.put.buffered": target(">= 250K ops/s, p50 < 5 µs", "goal: durability",
                                       ops_per_s=250_000, p50_us=5.0),
    "embedded.kv.put.strict": target(">= SQLite synchronous=FULL", "goal: durability",
                                     at_least_peer="sqlite"),
}


class DurableUnavailable(Exception):
    """Opening a durable store failed: the rows that need one are reported skipped."""


def open_durable(path, durability, **options):
    try:
        return inmem.open(path, durability=durability, **options)
    except Exception as exc:  # any failure to open means "cannot measure", not a crash
        raise DurableUnavailable(f"inmem.open(path, durability={durability!r}) failed: "
                                 f"{type(exc).__name__}: {exc}") from None


def run(ctx: Context) -> None:
    s = ctx.sizes
    reps = s["repeats"]
    cases = [
        ("embedded.kv.put.buffered", "buffered", PEERS,
         lambda: _put_row(ctx, "embedded.kv.put.buffered", "buffered", s["buffered_ops"], reps)),
        ("embedded.kv.put.strict", "strict", PEERS,
         lambda: _strict_row(ctx, s["strict_ops"], s["strict_rounds"])),
        *[(f"embedded.kv.put.strict.group{t}", "strict", PEERS,
           (lambda t=t: _group_row(ctx, t, max(2, s["group_ops_total"] // t))))
          for t in GROUP_THREADS],
        *[(f"embedded.kv.put.buffered.flush{ms}ms", "buffered", (),
           (lambda ms=ms: _flush_variant(ctx, ms, s["buffered_ops"], reps)))
          for ms in (10, 1000)],
        ("durability.fsync.raw", "strict", (), lambda: _raw_fsync(ctx, s["strict_ops"], reps)),
    ]
    for name, mode, peers, fn in cases:
        with ctx.case(f"durability: {name}"):
            try:
                fn()
            except DurableUnavailable as exc:
                ctx.add(skipped_row(name, TIER, mode, "ops/s", str(exc), peers=peers,
                                    target=TARGETS.get(name)))
            except Exception as exc:  # one broken case must not cost the others
                ctx.add(error_row(name, TIER, mode, "ops/s", exc, peers=peers,
                                  target=TARGETS.get(name)))


def _put_row(ctx, name, mode, n, reps):
    value = make_value(VALUE_BYTES)
    keys = make_keys(n)
    path = ctx.scratch("ours")
    db = open_durable(path, mode, snapshot_on_close=False)
    try:
        run = db.begin_run(name="bench")
        put = db.kv.put
        nk = len(keys)
        m = measure(lambda i: put(run, keys[i % nk], value), n, repeats=reps,
                    warmup=min(n, 1000 if mode == "buffered" else 20))
    finally:
        db.close()
        ctx.discard(path)
    details: dict = {}
    sync = "NORMAL" if mode == "buffered" else "FULL"
    sq_open, sq_clean, _ = sqlite_file_opener(ctx, sync)
    peers = {"sqlite": peer_value(lambda: measure_peer_kv(sq_open, "put", keys, value, n,
                                                          repeats=reps, cleanup=sq_clean),
                                  details, "sqlite")}
    sq_clean()
    lm_open, lm_clean, _ = lmdb_opener(ctx, sync=(mode == "strict"), value_bytes=VALUE_BYTES,
                                       nkeys=n, on_tmpfs=False)
    peers["lmdb"] = peer_value(lambda: measure_peer_kv(lm_open, "put", keys, value, n,
                                                       repeats=reps, bytes_keys=True,
                                                       cleanup=lm_clean), details, "lmdb")
    lm_clean()
    extra = {"ours": measure_stats(m), "peer_detail": details, "value_bytes": VALUE_BYTES,
             "peer_config": {
                 "sqlite": f"file, journal_mode=WAL, synchronous={sync}, autocommit per put",
                 "lmdb": f"disk, sync {'on' if mode == 'strict' else 'off'}, one write "
                         "transaction per put"}}
    ctx.add(make_row(name, TIER, mode, "ops/s", value=m.ops_per_s, p50=m.p50_us, p99=m.p99_us,
                     n=m.n, peers=peers, target=TARGETS.get(name), extra=extra))


def _strict_row(ctx, n, rounds):
    """`embedded.kv.put.strict`: ours, SQLite FULL and LMDB sync, `n` puts each per round."""
    name = "embedded.kv.put.strict"
    value = make_value(VALUE_BYTES)
    keys = make_keys(n)
    bkeys = [k.encode() for k in keys]
    nk = len(keys)
    path = ctx.scratch("ours")
    db = open_durable(path, "strict", snapshot_on_close=False)
    peers_open: list = []
    cleanups: list = []
    try:
        run = db.begin_run(name="bench")
        put = db.kv.put
        sides = [Side("ours", _round(lambda i: put(run, keys[i % nk], value), n))]
        sq_open, sq_clean, _ = sqlite_file_opener(ctx, "FULL")
        lm_open, lm_clean, _ = lmdb_opener(ctx, sync=True, value_bytes=VALUE_BYTES, nkeys=n,
                                           on_tmpfs=False)
        cleanups += [sq_clean, lm_clean]
        for peer, opener, ks in (("sqlite", sq_open, keys), ("lmdb", lm_open, bkeys)):
            sides.append(Side(peer, _peer_round(opener, ks, value, n, peers_open),
                              optional=True))
        il = interleave(sides, rounds, ctx.log)
    finally:
        db.close()
        ctx.discard(path)
        for kv in peers_open:
            kv.close()
        for clean in cleanups:
            clean()
    lat = il.latency("ours")
    extra = {"rounds": il.rounds, "round_order": il.orders, "ops_per_round": n,
             "ours": il.side_summary("ours"),
             "peer_detail": {p: il.side_summary(p) for p in PEERS},
             "value_bytes": VALUE_BYTES,
             "peer_config": {
                 "sqlite": "file, journal_mode=WAL, synchronous=FULL, autocommit per put",
                 "lmdb": "disk, sync on, one write transaction per put"}}
    ctx.add(make_row(name, TIER, "strict", "ops/s", value=il.median("ours"), p50=lat["p50_us"],
                     p99=lat["p99_us"], n=n * il.rounds, peers={p: il.median(p) for p in PEERS},
                     ratio_spread={p: il.ratio_spread("ours", p) for p in PEERS},
                     target=TARGETS.get(name), extra=extra))


def _round(op, n):
    """A side of the interleaved strict row: each round `n` fresh puts (a few warm-up first)."""
    def fn(r):
        return timed_loop(op, n, warmup=5, start=r * (n + 5), samples=n)
    return fn


def _peer_round(opener, keys, value, n, opened: list):
    """A peer's side: its store opened at its first round and kept for the others."""
    state: dict = {}

    def fn(r):
        if "put" not in state:
            kv = opener()
            opened.append(kv)
            state["put"] = kv.ops()[0]
        put, nk = state["put"], len(keys)
        return timed_loop(lambda i: put(keys[i % nk], value), n, warmup=5, start=r * (n + 5),
                          samples=n)
    return fn


def _group_row(ctx, threads, per_thread):
    value = make_value(VALUE_BYTES)
    name = f"embedded.kv.put.strict.group{threads}"
    path = ctx.scratch("ours")
    db = open_durable(path, "strict", snapshot_on_close=False)
    try:
        runs = [db.begin_run(name=f"writer-{t}") for t in range(threads)]
        put = db.kv.put

        def make_op(t):
            run = runs[t]
            keys = make_keys(per_thread, prefix=f"t{t}-")
            return lambda i: put(run, keys[i], value)

        m = measure_threads(make_op, threads, per_thread)
    finally:
        db.close()
        ctx.discard(path)
    details: dict = {}
    peers = {"sqlite": peer_value(lambda: _sqlite_group(ctx, threads, per_thread, value),
                                  details, "sqlite"),
             "lmdb": peer_value(lambda: _lmdb_group(ctx, threads, per_thread, value),
                                details, "lmdb")}
    extra = {"threads": threads, "ops_per_thread": per_thread, "ours": measure_stats(m),
             "peer_detail": details,
             "peer_config": {"sqlite": "synchronous=FULL, one connection per thread",
                             "lmdb": "sync on, one environment shared by the threads"}}
    ctx.add(make_row(name, TIER, "strict", "ops/s", value=m.ops_per_s, p50=m.p50_us,
                     p99=m.p99_us, n=m.n, peers=peers, extra=extra))


def _sqlite_group(ctx, threads, per_thread, value):
    sq_open, sq_clean, _ = sqlite_file_opener(ctx, "FULL")
    first = sq_open()
    conns = [first] + [first.connect_again() for _ in range(threads - 1)]
    try:
        def make_op(t):
            put, _get = conns[t].ops()
            keys = make_keys(per_thread, prefix=f"t{t}-")
            return lambda i: put(keys[i], value)

        m = measure_threads(make_op, threads, per_thread)
    finally:
        for c in conns:
            c.close()
        sq_clean()
    return m.ops_per_s, measure_stats(m)


def _lmdb_group(ctx, threads, per_thread, value):
    lm_open, lm_clean, _ = lmdb_opener(ctx, sync=True, value_bytes=len(value),
                                       nkeys=threads * per_thread, on_tmpfs=False)
    kv = lm_open()
    try:
        put, _get = kv.ops()

        def make_op(t):
            keys = [k.encode() for k in make_keys(per_thread, prefix=f"t{t}-")]
            return lambda i: put(keys[i], value)

        m = measure_threads(make_op, threads, per_thread)
    finally:
        kv.close()
        lm_clean()
    return m.ops_per_s, measure_stats(m)


def _flush_variant(ctx, flush_ms, n, reps):
    value = make_value(VALUE_BYTES)
    keys = make_keys(n)
    path = ctx.scratch("ours")
    db = open_durable(path, "buffered", snapshot_on_close=False, flush_interval_ms=flush_ms)
    try:
        run = db.begin_run(name="bench")
        put = db.kv.put
        m = measure(lambda i: put(run, keys[i % n], value), n, repeats=reps)
    finally:
        db.close()
        ctx.discard(path)
    ctx.add(make_row(f"embedded.kv.put.buffered.flush{flush_ms}ms", TIER, "buffered", "ops/s",
                     value=m.ops_per_s, p50=m.p50_us, p99=m.p99_us, n=m.n,
                     extra={"flush_interval_ms": flush_ms, "ours": measure_stats(m),
                            "note": "at most this interval of writes is lost on a crash"}))


def _raw_fsync(ctx, n, reps):
    path = ctx.scratch("fsync")
    fd = os.open(os.path.join(path, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    record = make_value(VALUE_BYTES)
    write, fsync = os.write, os.fsync
    try:
        def op(_i):
            write(fd, record)
            fsync(fd)

        m = measure(op, n, repeats=reps, warmup=min(n, 20))
    finally:
        os.close(fd)
        ctx.discard(path)
    ctx.add(make_row("durability.fsync.raw", TIER, "strict", "ops/s", value=m.ops_per_s,
                     p50=m.p50_us, p99=m.p99_us, n=m.n,
                     extra={"note": "the disk's floor: a 100-byte append + fsync, no store"}))
