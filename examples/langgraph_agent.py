"""A LangGraph agent that checkpoints into a local inmem cluster.

    pip install -e '.[langgraph]'
    python examples/langgraph_agent.py                 # starts a 2-shard cluster of its own
    python examples/langgraph_agent.py --connect ipc:///tmp/inmem/coordinator.sock

The graph is plain Python (no model): it plans a trip, looks up prices,
stops for a human to approve the budget (an interrupt), and books. The
example then

1. runs it until the interrupt, and resumes it with the approval;
2. walks the thread's checkpoint history, newest first;
3. forks from the checkpoint where the agent waited for approval, with a
   smaller budget, and runs the fork to its end (the original branch stays);
4. looks at the same thread as inmem sees it — one run on one shard — with
   `replay_run` (the run's state, and the state as of an earlier point in
   its journal) and `diff_runs` (a copy taken before the fork against the
   thread after it).
"""

from __future__ import annotations

import argparse
import operator
import sys
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

import inmem
from inmem.langgraph import InmemSaver
from inmem.langgraph.keys import thread_run

PRICES = {"train": 120, "hotel": 90, "museum": 15}


class Trip(TypedDict):
    request: str
    budget: int
    plan: list
    log: Annotated[list, operator.add]
    approved: str
    booked: list


def plan(state: Trip) -> dict:
    items = [w for w in ("train", "hotel", "museum") if w in state["request"]]
    return {"plan": items, "log": [f"plan: {', '.join(items)}"]}


def price(state: Trip) -> dict:
    total = sum(PRICES[i] for i in state["plan"])
    return {"log": [f"price: {total} for a budget of {state['budget']}"]}


def approve(state: Trip) -> dict:
    answer = interrupt({"question": "book within this budget?", "budget": state["budget"]})
    return {"approved": answer, "log": [f"approve: {answer}"]}


def book(state: Trip) -> dict:
    booked, left = [], state["budget"]
    for item in state["plan"]:
        if PRICES[item] <= left:
            booked.append(item)
            left -= PRICES[item]
    return {"booked": booked, "log": [f"book: {', '.join(booked) or 'nothing'} ({left} left)"]}


def build(saver):
    g = StateGraph(Trip)
    for name, fn in (("plan", plan), ("price", price), ("approve", approve), ("book", book)):
        g.add_node(name, fn)
    g.add_edge(START, "plan")
    g.add_edge("plan", "price")
    g.add_edge("price", "approve")
    g.add_edge("approve", "book")
    g.add_edge("book", END)
    return g.compile(checkpointer=saver)


def main(db, out=print) -> dict:
    saver = InmemSaver(db)
    graph = build(saver)
    thread = {"configurable": {"thread_id": "trip-to-lyon"}}
    saver.delete_thread("trip-to-lyon")  # a fresh start each time the example runs
    saver.delete_thread("trip-to-lyon@before-fork")

    out("== 1. run until the interrupt, then resume")
    result = graph.invoke({"request": "train, hotel and a museum", "budget": 250, "plan": [],
                           "log": [], "approved": "", "booked": []}, thread)
    waiting = graph.get_state(thread)
    out(f"interrupted before {waiting.next}: {result['__interrupt__'][0].value}")
    result = graph.invoke(Command(resume="yes"), thread)
    out(f"resumed and finished: booked {result['booked']}")

    out("== 2. the thread's history, newest first")
    history = list(graph.get_state_history(thread))
    for snap in history:
        out(f"  step {snap.metadata['step']:>2} {snap.metadata['source']:<6} "
            f"next={list(snap.next)} log={len(snap.values.get('log', []))} lines")

    out("== 3. fork from the approval point with a smaller budget")
    saver.copy_thread("trip-to-lyon", "trip-to-lyon@before-fork")
    at_approval = next(s for s in history if s.next == ("approve",))
    fork = graph.update_state(at_approval.config, {"budget": 140})
    forked = graph.invoke(Command(resume="yes, but cheaper"), fork)
    out(f"fork booked {forked['booked']}; the original still has "
        f"{graph.get_state(history[0].config).values['booked']}")
    out(f"history now holds {len(list(graph.get_state_history(thread)))} checkpoints")

    out("== 4. the same thread as an inmem run")
    run = thread_run(saver.prefix, "trip-to-lyon")
    view = db.replay_run(run)
    checkpoints = sorted(k for k in view.kv if k.startswith("checkpoint/"))
    out(f"run {run}: {len(checkpoints)} checkpoints, "
        f"{sum(k.startswith('blob/') for k in view.kv)} channel blobs, "
        f"{len(view.json)} pending-write documents, journal position {view.position}")
    earlier = db.replay_run(run, at=view.position // 2)
    out(f"replayed to position {earlier.position}: "
        f"{sum(k.startswith('checkpoint/') for k in earlier.kv)} checkpoints existed then")
    diff = db.diff_runs(thread_run(saver.prefix, "trip-to-lyon@before-fork"), run)
    added = [e.key for e in diff.added if e.key.startswith("checkpoint/")]
    moved = [e.key for e in diff.modified]
    out(f"diff against the copy taken before the fork: {len(added)} checkpoints added, "
        f"changed {moved}")
    out("done")
    return {"booked": result["booked"], "forked": forked["booked"], "history": len(history),
            "added": len(added), "checkpoints": len(checkpoints)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", metavar="URL",
                        help="use a running cluster instead of starting one")
    opts = parser.parse_args()
    if opts.connect:
        with inmem.connect(opts.connect) as database:
            main(database)
    else:
        with inmem.Cluster(shards=2, durability="buffered") as cluster:
            with cluster.connect() as database:
                main(database)
    sys.exit(0)
