"""Effects: the resolved mutations a shard commits, and the one function that applies them.

Every write the engine accepts becomes one effect (a transaction, several):
a tuple whose first item is a code from the table below, with every
non-deterministic part (timestamp, version, generated id, hash) already
decided. The same tuple is

- applied to the shard's state by `APPLY[code]` (live writes and recovery
  share this path, so a replayed log rebuilds exactly what was served),
- appended to the run's journal (replay and diff fold it),
- written to the WAL (a record holds whole groups of effects),
- and, for KV, state and JSON, kept as the entry itself: the stored entry *is*
  the last effect on that key, so history and state share one object.

Codes are part of the on-disk format: never renumber them.

An effect does not repeat its run id: it lives inside its run (journal,
entries), and the WAL logs it in a group `(run id, effect, ...)` — one group
per operation or committed transaction, always of one run.

| code | name          | fields after the code                                          |
|------|---------------|----------------------------------------------------------------|
| 1    | RUN_CREATE    | run, name, parent, tags, metadata (packed or None), ts         |
| 2    | RUN_STATUS    | status, ts, error                                              |
| 3    | RUN_DELETE    | run, ts  (logged, never journaled: the journal goes with the run) |
| 10   | KV_PUT        | key, value (packed), version, ts, expires_at (or None)         |
| 11   | KV_DEL        | key, None, version, ts, None                                   |
| 20   | EV_APPEND     | sequence, event_type, payload (packed), ts, prev_hash, hash    |
| 30   | ST_PUT        | name, value (packed), version, ts                              |
| 31   | ST_DEL        | name, None, version, ts                                        |
| 40   | TR_ADD        | id, parent_id, trace_type, data (packed), tags, metadata (packed or None), ts |
| 50   | JS_PUT        | key, document (packed), version, ts                            |
| 51   | JS_DEL        | key, None, version, ts                                         |

The payload of a WAL record (type BATCH) is `msgpack([group_count, batches])`
where `batches` is a list of `[run id, [effect, ...]]`: consecutive groups of
the same run are merged into one batch. Group boundaries need not survive
inside a record, because a record is recovered whole or not at all; the
count is kept for the recovery report. The engine encodes each group's
effects when it commits it, before applying it (encode before acknowledge:
a write that cannot be logged is refused at the call and changes nothing),
so a record is assembled by joining encoded effects, never by encoding at
flush time.

Entries of KV, state and JSON therefore share one layout: [1] key, [2] packed
value (None: deleted), [3] version, [4] timestamp; KV adds [5] expiry.
"""

from __future__ import annotations

from itertools import groupby
from operator import itemgetter

import msgpack

from inmem.wal.record import RECORD_BYTES_MAX

RUN_CREATE = 1
RUN_STATUS = 2
RUN_DELETE = 3
KV_PUT = 10
KV_DEL = 11
EV_APPEND = 20
ST_PUT = 30
ST_DEL = 31
TR_ADD = 40
JS_PUT = 50
JS_DEL = 51

#: which primitive (snapshot section) an effect belongs to
PRIMITIVE = {
    RUN_CREATE: "runs", RUN_STATUS: "runs", RUN_DELETE: "runs",
    KV_PUT: "kv", KV_DEL: "kv",
    EV_APPEND: "events",
    ST_PUT: "state", ST_DEL: "state",
    TR_ADD: "traces",
    JS_PUT: "json", JS_DEL: "json",
}

#: end states: a run in one of these has ended (not orphaned by a crash)
ENDED = frozenset(("completed", "failed", "cancelled", "archived"))


def apply_kv(r, eff):
    r.kv[eff[1]] = eff


def apply_state(r, eff):
    r.state[eff[1]] = eff


def apply_json(r, eff):
    r.json[eff[1]] = eff


def apply_event(r, eff):
    events = r.events
    events.append(eff)
    by_type = r.events_by_type.get(eff[2])
    if by_type is None:
        r.events_by_type[eff[2]] = [eff[1]]
    else:
        by_type.append(eff[1])


def apply_trace(r, eff):
    tid, parent = eff[1], eff[2]
    r.traces[tid] = eff
    r.trace_order.append(tid)
    r.traces_by_type.setdefault(eff[3], []).append(tid)
    for tag in eff[5]:
        r.traces_by_tag.setdefault(tag, []).append(tid)
    if parent is None:
        r.trace_roots.append(tid)
    else:
        r.trace_children.setdefault(parent, []).append(tid)


def apply_status(r, eff):
    r.status = eff[1]
    r.updated_at = eff[2]
    if eff[1] in ENDED and r.ended_at is None:
        r.ended_at = eff[2]
    if eff[3] is not None:
        r.error = eff[3]
    if eff[1] != "active":
        r.orphaned = False


def apply_create(r, eff):  # the run object is built by the engine from the effect
    pass


APPLY = {
    KV_PUT: apply_kv, KV_DEL: apply_kv,
    ST_PUT: apply_state, ST_DEL: apply_state,
    JS_PUT: apply_json, JS_DEL: apply_json,
    EV_APPEND: apply_event,
    TR_ADD: apply_trace,
    RUN_STATUS: apply_status,
    RUN_CREATE: apply_create,
}


#: the most one group may take once encoded: a record holds at least one whole group
GROUP_BYTES_MAX = RECORD_BYTES_MAX - 4096
#: bytes a batch header may add per group in a record: [run id, [...]] around its effects
_GROUP_FRAMING = 8 + 4 * 1024


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def record_payload(groups) -> bytes:
    """The WAL record payload for encoded groups `(run id, effect count, packed effects)`.

    Consecutive groups of one run share a batch, so a record repeats a run id
    once per run rather than once per operation.
    """
    parts = [b"\x92", msgpack.packb(len(groups)), None]
    batches = 0
    for run_id, grp in groupby(groups, _FIRST):
        grp = list(grp)
        parts.append(b"\x92")
        parts.append(msgpack.packb(run_id))
        if len(grp) == 1:
            parts.append(_array_header(grp[0][1]))
            parts.append(grp[0][2])
        else:
            parts.append(_array_header(sum(map(_COUNT, grp))))
            parts.extend(map(_PACKED, grp))
        batches += 1
    parts[2] = _array_header(batches)
    return b"".join(parts)


def record_payloads(groups):
    """Yield `(payload, n)`: records of whole groups, in order, each within RECORD_BYTES_MAX."""
    limit = RECORD_BYTES_MAX - 64
    if sum(map(len, map(_PACKED, groups))) + _GROUP_FRAMING * len(groups) <= limit:
        yield record_payload(groups), len(groups)
        return
    start = size = 0
    for i, group in enumerate(groups):
        need = len(group[2]) + _GROUP_FRAMING
        if size and size + need > limit:
            yield record_payload(groups[start:i]), i - start
            start, size = i, 0
        size += need
    if start < len(groups):
        yield record_payload(groups[start:]), len(groups) - start


_FIRST = itemgetter(0)
_COUNT = itemgetter(1)
_PACKED = itemgetter(2)


def decode_batch(payload):
    """(group count, batches) from a WAL record payload."""
    count, batches = msgpack.unpackb(payload, raw=False, use_list=False)
    return count, batches
