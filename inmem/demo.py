"""`inmem demo`: plays a small agent run against a Database and prints what it did.

The same script runs against the embedded engine or a cluster; it shows each
primitive once (memory, events, a coordination cell, traces, a JSON document,
a transaction, a pipeline) and ends by verifying the run's hash chain.

The agents of every demo share one long-lived run, SHARED_RUN, whose state
cell counts their steps across restarts. It is active while a demo plays and
paused when the demo finishes (`finish`), so a clean restart finds no
orphaned run: only a crash mid-demo leaves it active without an end.
"""

from __future__ import annotations

import time

from .errors import InvalidStatusTransition

#: the run the demo's agents coordinate through
SHARED_RUN = "demo-coordination"


def _open_shared(db) -> None:
    status = db.run_status(SHARED_RUN)
    if status == "not_found":
        db.begin_run(name="shared coordination", run_id=SHARED_RUN)
    elif status == "paused":
        try:
            db.runs.resume(SHARED_RUN)
        except InvalidStatusTransition:
            pass  # another demo resumed it first


def finish(db) -> None:
    """Pause the shared run at the end of a demo: it is not left active without an end."""
    if db.run_status(SHARED_RUN) in ("active", "orphaned"):
        try:
            db.runs.pause(SHARED_RUN)
        except InvalidStatusTransition:
            pass  # another demo paused it first


def play(db, out=print, steps: int = 5) -> dict:
    """Play one agent run against `db`, printing each step with `out`; a summary of it."""
    t0 = time.perf_counter()
    shared = SHARED_RUN
    _open_shared(db)
    run = db.begin_run(name="research agent", tags=["demo"], metadata={"model": "example"})
    out(f"began run {run} ({db.run_status(run)})")

    db.kv.put(run, "goal", "summarise what the tools found")
    db.json.put(run, "plan", {"steps": [], "done": False})
    root = db.traces.record(run, "thought", {"text": "split the goal into tool calls"},
                            tags=["planning"])
    for step in range(steps):
        tool = ("search", "fetch", "read")[step % 3]
        call = db.traces.record(run, "tool_call", {"tool": tool, "step": step}, parent_id=root)
        db.events.append(run, "tool_result", {"tool": tool, "step": step, "ok": True})
        db.json.array_push(run, "plan", "$.steps", f"{tool}#{step}")
        with db.transaction(run) as tx:
            n = tx.kv.get("tool_calls", 0)
            tx.kv.put("tool_calls", n + 1)
            tx.events.append("counted", {"tool_calls": n + 1})
        _, version = db.state.transition_or_init(shared, "agents_busy", 0,
                                                 lambda s: (s.value + 1, s.value + 1))
        db.traces.record(run, "decision", {"next": "continue" if step < steps - 1 else "stop"},
                         parent_id=call)
        out(f"  step {step}: {tool} -> event #{db.events.count(run) - 1}, "
            f"shared counter v{version}")
    with db.pipeline() as p:
        for i in range(100):
            p.kv.put(run, f"notes/{i:03d}", {"i": i, "text": f"note {i}"})
        results = p.execute()
    out(f"pipelined {len(results)} note writes in one batch")
    db.json.set(run, "plan", "$.done", True)
    chain = db.events.verify_chain(run)
    db.end_run(run)
    summary = {
        "run": run,
        "status": db.run_status(run),
        "events": db.events.count(run),
        "chain_valid": chain.valid,
        "tool_calls": db.kv.get(run, "tool_calls"),
        "notes": len(db.kv.keys(run, "notes/")),
        "plan": db.json.get(run, "plan"),
        "trace_roots": len(db.traces.roots(run)),
        "seconds": round(time.perf_counter() - t0, 4),
    }
    out(f"ended run: {summary['status']}; {summary['events']} events, chain valid: "
        f"{summary['chain_valid']}; {summary['notes']} notes; plan done: {summary['plan']['done']}")
    return summary
