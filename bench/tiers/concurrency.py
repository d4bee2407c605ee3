"""Tier concurrency: threads sharing one embedded store (in memory).

- `concurrency.kv.put.disjoint.threads{1,2,4}`: each thread writes its own
  run; total ops/s (one process: the lock and the GIL set the ceiling).
- `concurrency.kv.cas.contended.threads{2,8}`: every thread read-then-CASes
  one hot key; committed ops/s and the conflict rate (failed / attempted).
- `concurrency.tx.contended.threads{2,8}`: `run_transaction` increments one
  counter; commits/s, conflict rate, and a lost-update check (the counter
  must equal the number of commits).
- `concurrency.state.cas.one_winner`: rounds in which every thread CASes the
  same cell with the same expected version; exactly one may win each round.

Client processes against a cluster belong to the cluster tier.
"""

from __future__ import annotations

import threading
import time

import inmem

from ..context import Context, error_row, make_row
from ..harness import gc_paused, measure_threads
from ..workloads import VALUE_BYTES, make_keys, make_value, measure_stats

TIER = "concurrency"
MODE = "inmemory"


def run(ctx: Context) -> None:
    per = ctx.sizes["concurrency_ops_per_thread"]
    cases = [
        *[(f"concurrency.kv.put.disjoint.threads{t}", (lambda t=t: _disjoint(ctx, t, per)))
          for t in (1, 2, 4)],
        *[(f"concurrency.kv.cas.contended.threads{t}", (lambda t=t: _cas_contended(ctx, t, per)))
          for t in (2, 8)],
        *[(f"concurrency.tx.contended.threads{t}",
           (lambda t=t: _tx_contended(ctx, t, max(10, per // 5)))) for t in (2, 8)],
        ("concurrency.state.cas.one_winner", lambda: _one_winner(ctx, 4, max(10, per // 50))),
    ]
    for name, fn in cases:
        with ctx.case(f"concurrency: {name}"):
            try:
                fn()
            except Exception as exc:  # one broken case must not cost the others
                ctx.add(error_row(name, TIER, MODE, "ops/s", exc))


def _disjoint(ctx, threads, per):
    db = inmem.open(None)
    try:
        runs = [db.begin_run(name=f"agent-{t}") for t in range(threads)]
        value = make_value(VALUE_BYTES)
        put = db.kv.put

        def make_op(t):
            run = runs[t]
            keys = make_keys(per, prefix=f"t{t}")
            return lambda i: put(run, keys[i], value)

        m = measure_threads(make_op, threads, per)
    finally:
        db.close()
    ctx.add(make_row(f"concurrency.kv.put.disjoint.threads{threads}", TIER, MODE, "ops/s",
                     value=m.ops_per_s, p50=m.p50_us, p99=m.p99_us, n=m.n,
                     extra={"threads": threads, "ours": measure_stats(m)}))


def _cas_contended(ctx, threads, per):
    db = inmem.open(None)
    try:
        run = db.begin_run(name="hot")
        db.kv.put(run, "hot", 0)
        get_versioned, cas = db.kv.get_versioned, db.kv.cas
        stats = [[0, 0] for _ in range(threads)]

        def make_op(t):
            mine = stats[t]

            def op(i):
                v = get_versioned(run, "hot")
                try:
                    cas(run, "hot", v.version, v.value + 1)
                    mine[0] += 1
                except inmem.VersionMismatch:
                    mine[1] += 1
            return op

        m = measure_threads(make_op, threads, per)
        final = db.kv.get(run, "hot")
    finally:
        db.close()
    won = sum(s[0] for s in stats)
    lost = sum(s[1] for s in stats)
    attempts = won + lost
    ctx.add(make_row(f"concurrency.kv.cas.contended.threads{threads}", TIER, MODE, "ops/s",
                     value=m.ops_per_s * won / attempts if attempts else 0.0,
                     p50=m.p50_us, p99=m.p99_us, n=attempts,
                     extra={"threads": threads, "committed": won, "conflicts": lost,
                            "conflict_rate": lost / attempts if attempts else None,
                            "lost_updates": won - final,
                            "note": "value = committed CAS/s; p50/p99 per attempt "
                                    "(read + cas)"}))


def _tx_contended(ctx, threads, per):
    db = inmem.open(None)
    try:
        run = db.begin_run(name="hot")
        db.kv.put(run, "counter", 0)
        attempts = [0] * threads

        def make_op(t):
            def body(tx):
                attempts[t] += 1
                tx.kv.put("counter", tx.kv.get("counter", 0) + 1)

            return lambda i: db.run_transaction(run, body, retries=1000)

        m = measure_threads(make_op, threads, per)
        final = db.kv.get(run, "counter")
    finally:
        db.close()
    total_attempts = sum(attempts)
    commits = threads * per
    ctx.add(make_row(f"concurrency.tx.contended.threads{threads}", TIER, MODE, "ops/s",
                     value=m.ops_per_s, p50=m.p50_us, p99=m.p99_us, n=commits,
                     extra={"threads": threads, "commits": commits, "attempts": total_attempts,
                            "conflict_rate": (total_attempts - commits) / total_attempts
                            if total_attempts else None,
                            "lost_updates": commits - final,
                            "note": "value = committed transactions/s, retries included"}))


def _one_winner(ctx, threads, rounds):
    db = inmem.open(None)
    try:
        run = db.begin_run(name="election")
        db.state.init(run, "leader", None)
        cas, read = db.state.cas, db.state.read
        start = threading.Barrier(threads + 1)
        done = threading.Barrier(threads + 1)
        wins = [0] * threads
        expected = [0]
        errors: list = []

        def worker(t):
            try:
                for _ in range(rounds):
                    start.wait()
                    try:
                        cas(run, "leader", expected[0], f"agent-{t}")
                        wins[t] += 1
                    except inmem.VersionMismatch:
                        pass
                    done.wait()
            except BaseException as exc:  # reported by the caller
                errors.append(exc)
                start.abort()
                done.abort()

        pool = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
        for th in pool:
            th.start()
        bad_rounds = 0
        with gc_paused():
            t0 = time.perf_counter_ns()
            for _ in range(rounds):
                expected[0] = read(run, "leader").version
                before = sum(wins)
                start.wait()
                done.wait()
                if sum(wins) - before != 1:
                    bad_rounds += 1
            elapsed = time.perf_counter_ns() - t0
        for th in pool:
            th.join(timeout=10)
        if errors:
            raise errors[0]
    finally:
        db.close()
    ctx.add(make_row("concurrency.state.cas.one_winner", TIER, MODE, "ops/s",
                     value=rounds / (elapsed / 1e9), n=rounds,
                     extra={"threads": threads, "rounds": rounds,
                            "rounds_without_exactly_one_winner": bad_rounds,
                            "note": "value = election rounds/s (barrier-synchronised)"}))
