"""Replay: folding a run's journal into a read-only view of the run at a position.

The journal holds every committed effect of the run in order (see
`shard.effects`), so the state of each primitive after the first `at`
effects is a fold over `journal[:at]`: the last effect on each key wins,
events and traces accumulate. The fold reads only the run's journal — O(run
size), never O(shard size) — writes nothing, and depends on nothing but the
journal, so two replays of the same run and position are identical.

Key expiry is judged against the timestamp of the last folded effect (the
run's own clock at that position), not against the wall clock, for the same
reason.
"""

from __future__ import annotations

from .effects import EV_APPEND, JS_DEL, JS_PUT, KV_DEL, KV_PUT, RUN_CREATE, RUN_STATUS, ST_DEL, ST_PUT, TR_ADD

#: where each effect keeps its timestamp
_TS_INDEX = {RUN_CREATE: 6, RUN_STATUS: 2, KV_PUT: 4, KV_DEL: 4, EV_APPEND: 4, ST_PUT: 4,
             ST_DEL: 4, TR_ADD: 7, JS_PUT: 4, JS_DEL: 4}


def fold(journal: list, at=None) -> list:
    """[kv, json, state, events, traces, position] of the run after `at` journal entries.

    Values, payloads and trace data are the packed bytes; events and traces are
    their effect tuples without the code. `inmem.types.RunView.from_wire` decodes.
    """
    n = len(journal)
    if at is None or at > n:
        at = n
    elif at < 0:
        at = max(n + at, 0)
    kv: dict = {}
    state: dict = {}
    docs: dict = {}
    events: list = []
    traces: list = []
    for i in range(at):
        eff = journal[i]
        code = eff[0]
        if code == KV_PUT or code == KV_DEL:
            kv[eff[1]] = eff
        elif code == EV_APPEND:
            events.append(eff)
        elif code == ST_PUT or code == ST_DEL:
            state[eff[1]] = eff
        elif code == JS_PUT or code == JS_DEL:
            docs[eff[1]] = eff
        elif code == TR_ADD:
            traces.append(eff)
    now = journal[at - 1][_TS_INDEX[journal[at - 1][0]]] if at else 0
    # Values stay in the msgpack bytes they are stored as: the caller decodes
    # each once (RunView.from_wire), so a cluster never unpacks and repacks them.
    kv_view = {k: e[2] for k, e in sorted(kv.items())
               if e[2] is not None and (e[5] is None or e[5] > now)}
    state_view = {k: e[2] for k, e in sorted(state.items()) if e[2] is not None}
    json_view = {k: e[2] for k, e in sorted(docs.items()) if e[2] is not None}
    event_view = [e[1:] for e in events]
    trace_view = [e[1:] for e in traces]
    return [kv_view, json_view, state_view, event_view, trace_view, at]
