"""Tier scenarios: agent-shaped workloads on the embedded store.

- `scenario.agent_step` (inmemory, buffered): one step of an agent run is 10
  event appends, a transaction that reads and writes 2 keys, and every 5th
  step a read of the last 50 events of its history; steps/s and per-step
  latency.
- `scenario.multi_agent.threads{2,4,8}`: agents (threads) moving one shared
  state cell forward with `state.transition`; transitions/s and how often a
  transition had to retry.
- `scenario.replay.{100,1K,5K}`: `replay_run` of a run with that many events
  (plus a KV write every 10 events), median of the repeats; skipped when the
  build has no replay yet.
- `scenario.scan.{100,1K,5K}`: reading such a run back through the public
  reads (events.range over the whole run + kv.items): what a replay can be
  built from today.
- `scenario.diff_runs.1K`: `diff_runs` of two runs of 1K keys each.
"""

from __future__ import annotations

import statistics

import inmem

from ..context import Context, error_row, fmt_count, make_row, skipped_row, target
from ..harness import measure, measure_threads, time_once
from ..workloads import measure_stats
from .durability import DurableUnavailable, open_durable

TIER = "scenarios"

TARGETS = {
    "scenario.replay.1K": target("< 10 ms (acceptable < 50 ms)", "baseline", max_ms=10),
    "scenario.diff_runs.1K": target("< 5 ms (acceptable < 50 ms)", "baseline", max_ms=5),
}


def run(ctx: Context) -> None:
    s = ctx.sizes
    cases = [
        ("scenario.agent_step", "inmemory", "ops/s",
         lambda: _agent_step(ctx, "inmemory", s["scenario_steps"], s["repeats"])),
        ("scenario.agent_step", "buffered", "ops/s",
         lambda: _agent_step(ctx, "buffered", s["scenario_steps"], s["repeats"])),
        *[(f"scenario.multi_agent.threads{t}", "inmemory", "ops/s",
           (lambda t=t: _multi_agent(ctx, t, max(10, s["scenario_steps"] * 2 // t))))
          for t in (2, 4, 8)],
    ]
    for events in s["replay_events"]:
        label = fmt_count(events)
        cases.append((f"scenario.replay.{label}", "inmemory", "ms",
                      lambda events=events: _replay(ctx, events, s["repeats"])))
        cases.append((f"scenario.scan.{label}", "inmemory", "ms",
                      lambda events=events: _scan(ctx, events, s["repeats"])))
    cases.append(("scenario.diff_runs.1K", "inmemory", "ms",
                  lambda: _diff(ctx, 1000, s["repeats"])))
    for name, mode, unit, fn in cases:
        with ctx.case(f"scenarios: {name} [{mode}]"):
            try:
                fn()
            except (DurableUnavailable, _Missing) as exc:
                ctx.add(skipped_row(name, TIER, mode, unit, str(exc), target=TARGETS.get(name)))
            except Exception as exc:  # one broken case must not cost the others
                ctx.add(error_row(name, TIER, mode, unit, exc, target=TARGETS.get(name)))


class _Missing(Exception):
    """The build under test has no such call yet."""


def _open(ctx, mode):
    if mode == "inmemory":
        return inmem.open(None), None
    path = ctx.scratch(f"scenario-{mode}")
    return open_durable(path, mode, snapshot_on_close=False), path


def _agent_step(ctx, mode, steps, reps):
    db, path = _open(ctx, mode)
    try:
        run = db.begin_run(name="agent", tags=["bench"])
        append, transaction, rng = db.events.append, db.transaction, db.events.range
        db.kv.put(run, "plan", {"step": 0})
        db.kv.put(run, "memory", {"facts": 0})
        counter = [0]  # steps done, so the history read always names events that exist

        def step(i):
            for j in range(10):
                append(run, "tool_call", {"tool": "search", "step": i, "call": j})
            with transaction(run) as tx:
                plan = tx.kv.get("plan")
                mem = tx.kv.get("memory")
                tx.kv.put("plan", {"step": plan["step"] + 1})
                tx.kv.put("memory", {"facts": mem["facts"] + 1})
            counter[0] += 1
            if i % 5 == 4:
                head = counter[0] * 10
                rng(run, max(0, head - 50), head)

        m = measure(step, steps, repeats=reps, warmup=min(steps, 50), samples=min(steps, 500))
    finally:
        db.close()
        if path:
            ctx.discard(path)
    ctx.add(make_row("scenario.agent_step", TIER, mode, "ops/s", value=m.ops_per_s,
                     p50=m.p50_us, p99=m.p99_us, n=m.n,
                     extra={"ours": measure_stats(m), "unit_note": "steps/s",
                            "ops_per_step": "10 appends + 1 tx (2 reads, 2 puts) + "
                                            "every 5th step a 50-event range read",
                            "events_per_s": m.ops_per_s * 10}))


def _multi_agent(ctx, threads, per):
    db = inmem.open(None)
    try:
        run = db.begin_run(name="coordination")
        db.state.init(run, "board", {"turn": 0, "log": []})
        calls = [0] * threads

        def make_op(t):
            def fn(state):
                calls[t] += 1
                board = state.value
                return {"turn": board["turn"] + 1, "log": (board["log"] + [t])[-8:]}, None

            transition = db.state.transition
            return lambda i: transition(run, "board", fn, retries=10_000)

        m = measure_threads(make_op, threads, per)
        final = db.state.read(run, "board").value["turn"]
    finally:
        db.close()
    done = threads * per
    total_calls = sum(calls)
    ctx.add(make_row(f"scenario.multi_agent.threads{threads}", TIER, "inmemory", "ops/s",
                     value=m.ops_per_s, p50=m.p50_us, p99=m.p99_us, n=done,
                     extra={"threads": threads, "transitions": done, "fn_calls": total_calls,
                            "retry_rate": (total_calls - done) / total_calls if total_calls
                            else None, "lost_updates": done - final,
                            "note": "threads in one process; client processes against a "
                                    "cluster are in the cluster tier"}))


def _build_run(db, events: int) -> str:
    run = db.begin_run(name=f"replay-{events}")
    p = db.pipeline()
    for i in range(events):
        p.events.append(run, "tool_call", {"tool": "search", "i": i})
        if i % 10 == 0:
            p.kv.put(run, f"k{i // 10}", {"i": i})
    for r in p.execute():
        if isinstance(r, BaseException):
            raise r
    return run


def _median_ms(fn, reps: int) -> tuple[float, list]:
    times = []
    for _ in range(max(3, reps)):
        ms, _ = time_once(fn)
        times.append(ms)
    return statistics.median(times), times


def _replay(ctx, events, reps):
    name = f"scenario.replay.{fmt_count(events)}"
    db = inmem.open(None)
    try:
        if not hasattr(db, "replay_run"):
            raise _Missing("Database.replay_run is not in this build yet")
        run = _build_run(db, events)
        view = db.replay_run(run)
        if len(view.events) != events:
            raise RuntimeError(f"replay saw {len(view.events)} events, expected {events}")
        ms, times = _median_ms(lambda: db.replay_run(run), reps)
    finally:
        db.close()
    ctx.add(make_row(name, TIER, "inmemory", "ms", value=ms, n=events,
                     target=TARGETS.get(name), extra={"times_ms": times}))


def _scan(ctx, events, reps):
    name = f"scenario.scan.{fmt_count(events)}"
    db = inmem.open(None)
    try:
        run = _build_run(db, events)

        def scan():
            evs = db.events.range(run, 0, events)
            items = db.kv.items(run)
            return len(evs), len(items)

        got = scan()
        if got[0] != events:
            raise RuntimeError(f"scan saw {got[0]} events, expected {events}")
        ms, times = _median_ms(scan, reps)
    finally:
        db.close()
    ctx.add(make_row(name, TIER, "inmemory", "ms", value=ms, n=events,
                     extra={"times_ms": times, "note": "events.range(0, N) + kv.items"}))


def _diff(ctx, keys, reps):
    name = "scenario.diff_runs.1K"
    db = inmem.open(None)
    try:
        if not hasattr(db, "diff_runs"):
            raise _Missing("Database.diff_runs is not in this build yet")
        a = db.begin_run(name="a")
        b = db.begin_run(name="b")
        p = db.pipeline()
        for i in range(keys):
            p.kv.put(a, f"k{i:05d}", i)
            p.kv.put(b, f"k{i:05d}", i if i % 10 else -i)
        p.execute()
        ms, times = _median_ms(lambda: db.diff_runs(a, b), reps)
    finally:
        db.close()
    ctx.add(make_row(name, TIER, "inmemory", "ms", value=ms, n=keys, target=TARGETS.get(name),
                     # k00000 is not modified: -0 == 0.
                     extra={"times_ms": times, "modified_keys": len(range(10, keys, 10))}))
