"""Replay: folding a run's journal into a read-only view of the run at a position.

The journal (`shard.history`) holds every committed effect of the run in
order (see `shard.effects`), so the state of each primitive after the first
`at` effects is a fold over its first `at` entries: the last write to each
key wins, events and traces accumulate. The fold reads only the run's journal — O(run
size), never O(shard size) — writes nothing, and depends on nothing but the
journal, so two replays of the same run and position are identical.

Key expiry is judged against the timestamp of the last folded effect (the
run's own clock at that position), not against the wall clock, for the same
reason.

`ReplayOps` is the part of the `Engine` that serves it (`run_replay`).
"""

from __future__ import annotations

from inmem.display import short_value
from inmem.errors import InvalidValue

from .effects import (CODE, EV_APPEND, EXPIRES, JS_DEL, JS_PUT, KEY, KEYED, KV_DEL, KV_PUT,
                      ST_DEL, ST_PUT, TR_ADD, TS_FIELD, VALUE)
from .entries import PLAIN_AT, entry_expires, entry_ts, entry_value


class ReplayOps:
    """The replay operation of the engine."""

    def run_replay(self, run: str, at: int | None = None) -> list:
        """The run as it was after its first `at` journal entries (all of them: None); see `fold`."""
        r, at = self.replay_bounds(run, at)
        return fold(r.journal.raw(0, at), at)

    def replay_bounds(self, run: str, at: int | None = None) -> tuple:
        """(the run's data, the journal position `at` names: None for its end, a negative
        one from the end)."""
        r = self._run(run)
        if at is not None and type(at) is not int:
            raise InvalidValue(f"at must be an int journal position or None, got {short_value(at)}")
        n = len(r.journal)
        if at is None or at > n:
            at = n
        elif at < 0:
            at = max(n + at, 0)
        return r, at


def _slot(item) -> tuple:
    """(packed value or None, expires or None) of a keyed history item or effect."""
    if len(item) == 3:  # (code, key, entry), shard.history
        e = item[2]
        return entry_value(e), entry_expires(e)
    return item[VALUE], (item[EXPIRES] if len(item) > EXPIRES else None)


def _live_values(latest: dict) -> dict:
    """key -> packed value of each key's last write, sorted by key, deletes left out."""
    out = {}
    for k in sorted(latest):
        item = latest[k]
        if len(item) == 3 and (at_ := PLAIN_AT[item[2][0]]):
            out[k] = item[2][at_:]
        elif (v := _slot(item)[0]) is not None:
            out[k] = v
    return out


def fold(items: list, at: int | None = None) -> list:
    """[kv, json, state, events, traces, position] of the run after its first `at` entries.

    `items` are the run's history from position 0, as `History.raw` gives
    them (effect tuples, or `(code, key, entry)` items for keyed writes).
    Values, payloads and trace data are the packed bytes; events and traces are
    their effect tuples without the code. `inmem.types.RunView.from_wire` decodes.
    """
    if at is None or at > len(items):
        at = len(items)
    folding = Folding()
    folding.feed(items, at)
    return folding.view()


class Folding:
    """A fold fed in pieces, in journal order (`fold` feeds it at once; a shard worker
    feeds a long journal a slice at a time between its turns, shard.deferred_reads)."""

    __slots__ = ("kv", "state", "docs", "events", "traces", "last", "count")

    def __init__(self):
        self.kv: dict = {}
        self.state: dict = {}
        self.docs: dict = {}
        self.events: list = []
        self.traces: list = []
        self.last = None
        self.count = 0

    def feed(self, items: list, stop: int | None = None) -> None:
        """The next entries: `items[:stop]` (all of them: None)."""
        if stop is None:
            stop = len(items)
        if not stop:
            return
        kv, state, docs = self.kv, self.state, self.docs
        events, traces = self.events, self.traces
        for i in range(stop):
            item = items[i]
            code = item[CODE]
            if code == KV_PUT or code == KV_DEL:
                kv[item[KEY]] = item
            elif code == EV_APPEND:
                events.append(item)
            elif code == ST_PUT or code == ST_DEL:
                state[item[KEY]] = item
            elif code == JS_PUT or code == JS_DEL:
                docs[item[KEY]] = item
            elif code == TR_ADD:
                traces.append(item)
        self.last = items[stop - 1]
        self.count += stop

    def view(self) -> list:
        """The wire form of the run after the entries fed (see `fold`)."""
        now = 0
        last = self.last
        if last is not None:
            code = last[CODE]
            now = entry_ts(last[2]) if code in KEYED and len(last) == 3 else last[TS_FIELD[code]]
        # Values stay in the msgpack bytes they are stored as: the caller decodes
        # each once (RunView.from_wire), so a cluster never unpacks and repacks them.
        kv = self.kv
        kv_view = {}
        for k in sorted(kv):
            item = kv[k]
            # A history item of a live entry without a TTL (the usual one) is its
            # value's bytes past a fixed header: no call to take them.
            if len(item) == 3 and (at_ := PLAIN_AT[item[2][0]]):
                kv_view[k] = item[2][at_:]
                continue
            value, exp = _slot(item)
            if value is not None and (exp is None or exp > now):
                kv_view[k] = value
        event_view = [e[1:] for e in self.events]  # every field after the code
        trace_view = [e[1:] for e in self.traces]
        return [kv_view, _live_values(self.docs), _live_values(self.state), event_view,
                trace_view, self.count]
