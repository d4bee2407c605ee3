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

`ReplayOps` is the part of the `Engine` that serves it (`run_replay`).
"""

from __future__ import annotations

from inmem.errors import InvalidValue

from .effects import (CODE, EV_APPEND, EXPIRES, JS_DEL, JS_PUT, KEY, KV_DEL, KV_PUT, ST_DEL,
                      ST_PUT, TR_ADD, TS_FIELD, VALUE)


class ReplayOps:
    """The replay operation of the engine."""

    def run_replay(self, run: str, at: int | None = None) -> list:
        """The run as it was after its first `at` journal entries (all of them: None); see `fold`."""
        r = self._run(run)
        if at is not None and type(at) is not int:
            raise InvalidValue(f"at must be an int journal position or None, got {at!r}")
        return fold(r.journal, at)


def fold(journal: list, at: int | None = None) -> list:
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
        code = eff[CODE]
        if code == KV_PUT or code == KV_DEL:
            kv[eff[KEY]] = eff
        elif code == EV_APPEND:
            events.append(eff)
        elif code == ST_PUT or code == ST_DEL:
            state[eff[KEY]] = eff
        elif code == JS_PUT or code == JS_DEL:
            docs[eff[KEY]] = eff
        elif code == TR_ADD:
            traces.append(eff)
    last = journal[at - 1] if at else None
    now = last[TS_FIELD[last[CODE]]] if at else 0
    # Values stay in the msgpack bytes they are stored as: the caller decodes
    # each once (RunView.from_wire), so a cluster never unpacks and repacks them.
    kv_view = {k: e[VALUE] for k, e in sorted(kv.items())
               if e[VALUE] is not None and (e[EXPIRES] is None or e[EXPIRES] > now)}
    state_view = {k: e[VALUE] for k, e in sorted(state.items()) if e[VALUE] is not None}
    json_view = {k: e[VALUE] for k, e in sorted(docs.items()) if e[VALUE] is not None}
    event_view = [e[1:] for e in events]  # every field after the code
    trace_view = [e[1:] for e in traces]
    return [kv_view, json_view, state_view, event_view, trace_view, at]
