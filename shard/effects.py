"""Effects: the resolved mutations a shard commits, their field layout, and how they are applied.

Every write the engine accepts becomes one effect (a transaction, several):
a tuple whose first item is a code from the table below, with every
non-deterministic part (timestamp, version, generated id, hash) already
decided. The same tuple is

- applied to the shard's state by `APPLY[code]` (live writes and recovery
  share this path, so a replayed log rebuilds exactly what was served), which
  also appends it to the run's history (`shard.history`; replay and diff fold it),
- written to the WAL (a record holds whole groups of effects),
- and, for KV, state and JSON, packed into the key's entry (`shard.entries`):
  one `bytes` per key, which the history item of the write shares.

Codes are part of the on-disk format: never renumber them.

An effect does not repeat its run id: it lives inside its run (journal,
entries), and the WAL logs it in a group `(run id, effect, ...)` — one group
per operation or committed transaction, always of one run.

| code | name          | fields after the code                                          |
|------|---------------|----------------------------------------------------------------|
| 1    | RUN_CREATE    | run, name, parent, tags, metadata (packed or None), ts[, flags] |
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

Effects of KV, state and JSON share one layout: KEY, VALUE (packed; None:
deleted), VERSION, TS; KV adds EXPIRES. The field positions of every
layout are named below; code reads fields by these names, never by number.
Effects stay plain tuples (a NamedTuple costs too much on the write path).

A keyed effect may also be written in its *entry form*, `(code, key, entry)`:
the entry it leaves (`shard.entries`: its version, time and expiry packed in
front of the value) in place of the fields, which the entry holds all of.
It is what the run's history holds for a keyed write, and the plain puts
(`kv.put`, a pipeline's series of puts, `kv.put_many`) log it as it is, from
WAL record format 2 on: reading one back is then a table insert of the
entry the record already holds, where the field form must pack a new one.
`effect_of` turns either form into the field form; every reader of the log
takes both (records of format 1 hold only the field form).

This module is also the only code that changes a run's tables (the KV, state
and JSON entries, the event list, the trace indexes): a live write, a WAL
record read back, a snapshot section loaded and a transaction rolled back all
go through the functions here, so they cannot disagree about what an effect
does.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, compress, groupby, repeat
from operator import is_not, itemgetter, not_

import msgpack

from inmem.wal.record import RECORD_BYTES_MAX

from .entries import entry_of, plain_kv_entries, unpack_entry

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


#: every effect: its code
CODE = 0

#: keyed entries (KV_*, ST_*, JS_*): the key, the packed value (None: deleted),
#: the slot's version (deletes count), the time of the write; KV adds the expiry
KEY = 1
VALUE = 2
VERSION = 3
TS = 4
EXPIRES = 5

#: EV_APPEND: the event's sequence, type, packed payload, time, chain hashes
EV_SEQ = 1
EV_TYPE = 2
EV_PAYLOAD = 3
EV_TS = 4
EV_PREV_HASH = 5
EV_HASH = 6

#: TR_ADD: the trace's id, parent id, type, packed data, tags, packed metadata, time
TR_ID = 1
TR_PARENT = 2
TR_TYPE = 3
TR_DATA = 4
TR_TAGS = 5
TR_METADATA = 6
TR_TS = 7

#: RUN_CREATE: the run's id, name, parent, tags, packed metadata, time, and flags: an
#: int, present only when not 0, so a run made without any is logged as before
CREATE_RUN = 1
CREATE_NAME = 2
CREATE_PARENT = 3
CREATE_TAGS = 4
CREATE_METADATA = 5
CREATE_TS = 6
CREATE_FLAGS = 7
#: a RUN_CREATE flag: nothing of the run goes into the keyword search index
UNSEARCHABLE = 1

#: RUN_STATUS: the new status, time, error text (or None)
STATUS = 1
STATUS_TS = 2
STATUS_ERROR = 3

#: RUN_DELETE: the run's id, time
DELETE_RUN = 1
DELETE_TS = 2

#: where each effect keeps its timestamp
TS_FIELD = {RUN_CREATE: CREATE_TS, RUN_STATUS: STATUS_TS, RUN_DELETE: DELETE_TS,
            KV_PUT: TS, KV_DEL: TS, EV_APPEND: EV_TS, ST_PUT: TS, ST_DEL: TS, TR_ADD: TR_TS,
            JS_PUT: TS, JS_DEL: TS}

_KEY_OF = itemgetter(KEY)
_EV_TYPE_OF = itemgetter(EV_TYPE)
_EV_SEQ_OF = itemgetter(EV_SEQ)
_TR_ID_OF = itemgetter(TR_ID)
_TR_TYPE_OF = itemgetter(TR_TYPE)
_TR_TAGS_OF = itemgetter(TR_TAGS)
_TR_PARENT_OF = itemgetter(TR_PARENT)
_CODE_OF = itemgetter(CODE)
_ENTRY_FORM = {3}


#: the codes of keyed writes, which also have an entry form
KEYED = frozenset((KV_PUT, KV_DEL, ST_PUT, ST_DEL, JS_PUT, JS_DEL))
_KV = frozenset((KV_PUT, KV_DEL))


def effect_of(item: tuple) -> tuple:
    """The field form of an effect or history item (an entry form is unpacked; others as they are)."""
    if len(item) == 3 and item[0] in KEYED:
        code, key, e = item
        value, version, ts, expires = unpack_entry(e)
        if code in _KV:
            return (code, key, value, version, ts, expires)
        return (code, key, value, version, ts)
    return item


# -- applying one effect ----------------------------------------------------------
# Each takes the run (a RunData) and the effect, applies it to the run's tables
# and appends it to the run's history (`shard.history`). None of them checks
# anything: an effect is only built (or logged) after its write was validated.
# A keyed write becomes one packed entry (`shard.entries`), held by the table
# and by the history item `(code, key, entry)` alike.

def apply_kv(r, eff: tuple) -> None:
    if len(eff) == 3:  # the entry form: the history item itself
        r.kv[eff[KEY]] = eff[2]
        r.journal.append(eff)
        return
    e = entry_of(eff)
    r.kv[eff[KEY]] = e
    r.journal.append((eff[CODE], eff[KEY], e))


def put_kv_item(r, key: str, e: bytes, item: tuple) -> None:
    """apply_kv for a KV_PUT in its entry form `item`, `(KV_PUT, key, e)` (the put fast path)."""
    r.kv[key] = e
    journal = r.journal
    journal.items.append(item)  # History.append, inline
    if journal.unread is not None:
        journal.unread.add(journal.run_id)


def apply_state(r, eff: tuple) -> None:
    if len(eff) == 3:
        r.state[eff[KEY]] = eff[2]
        r.journal.append(eff)
        return
    e = entry_of(eff)
    r.state[eff[KEY]] = e
    r.journal.append((eff[CODE], eff[KEY], e))


def apply_json(r, eff: tuple) -> None:
    if len(eff) == 3:
        r.json[eff[KEY]] = eff[2]
        r.journal.append(eff)
        return
    e = entry_of(eff)
    r.json[eff[KEY]] = e
    r.journal.append((eff[CODE], eff[KEY], e))


def apply_event(r, eff: tuple) -> None:
    _event_state(r, eff)
    r.journal.append(eff)


def _event_state(r, eff: tuple) -> None:
    r.events.append(eff)
    by_type = r.events_by_type.get(eff[EV_TYPE])
    if by_type is None:
        r.events_by_type[eff[EV_TYPE]] = [eff[EV_SEQ]]
    else:
        by_type.append(eff[EV_SEQ])


def apply_trace(r, eff: tuple) -> None:
    _trace_state(r, eff)
    r.journal.append(eff)


def _trace_state(r, eff: tuple) -> None:
    tid, parent = eff[TR_ID], eff[TR_PARENT]
    r.traces[tid] = eff
    r.trace_order.append(tid)
    r.traces_by_type.setdefault(eff[TR_TYPE], []).append(tid)
    for tag in eff[TR_TAGS]:
        r.traces_by_tag.setdefault(tag, []).append(tid)
    if parent is None:
        r.trace_roots.append(tid)
    else:
        r.trace_children.setdefault(parent, []).append(tid)


def apply_status(r, eff: tuple) -> None:
    status, ts = eff[STATUS], eff[STATUS_TS]
    r.status = status
    r.updated_at = ts
    if status in ENDED and r.ended_at is None:
        r.ended_at = ts
    if eff[STATUS_ERROR] is not None:
        r.error = eff[STATUS_ERROR]
    if status != "active":
        r.orphaned = False
    r.journal.append(eff)


APPLY = {
    KV_PUT: apply_kv, KV_DEL: apply_kv,
    ST_PUT: apply_state, ST_DEL: apply_state,
    JS_PUT: apply_json, JS_DEL: apply_json,
    EV_APPEND: apply_event,
    TR_ADD: apply_trace,
    RUN_STATUS: apply_status,
}


# -- applying many effects of one table -------------------------------------------
# The bulk variants of apply_kv, apply_state and apply_json, for recovery and
# snapshot loading: `effs` in order, all of the table's codes,
# leave the table and the history exactly as applying them one by one would
# (the last effect on a key is its entry), but the loops run in C.

def _apply_keyed_many(r, table: dict, effs: Sequence[tuple], entries=None) -> None:
    keys = list(map(_KEY_OF, effs))
    if entries is None:
        entries = list(map(entry_of, effs))
    table.update(zip(keys, entries))
    r.journal.extend(zip(map(_CODE_OF, effs), keys, entries))


def apply_kv_many(r, effs: Sequence[tuple]) -> None:
    if set(map(len, effs)) == _ENTRY_FORM:  # as plain puts log them (format 2)
        apply_kv_entries(r, effs)
    else:
        _apply_keyed_many(r, r.kv, effs, plain_kv_entries(effs))


def apply_kv_entries(r, items: Sequence[tuple]) -> None:
    """apply_kv_many for KV effects all in their entry form: the items go in as they are."""
    # A loop of stores, not table.update(zip(...)): update() takes an iterable of
    # pairs through its generic path, a pair tuple at a time, which costs 2-6 times
    # as much per entry (a put_many of 4: 2.2 us against 0.55).
    kv = r.kv
    for _code, key, e in items:
        kv[key] = e
    r.journal.extend(items)


def apply_state_many(r, effs: Sequence[tuple]) -> None:
    _apply_keyed_many(r, r.state, effs)


def apply_json_many(r, effs: Sequence[tuple]) -> None:
    _apply_keyed_many(r, r.json, effs)


# -- loading state that a snapshot holds ---------------------------------------------
# A snapshot holds the tables themselves and the history apart (shard.snapshot_codec):
# these fill the tables without touching the history.

def load_entries(table: dict, keys: Sequence[str], entries: Sequence[bytes]) -> None:
    table.update(zip(keys, entries))


def load_events(r, effs: Sequence[tuple]) -> None:
    """A run's events, in order, and the sequences of each type: loops in C."""
    if r.events or r.events_by_type:  # not a fresh run: one by one, as appends go
        for eff in effs:
            _event_state(r, eff)
        return
    r.events.extend(effs)
    r.events_by_type.update(grouped(list(map(_EV_TYPE_OF, effs)), list(map(_EV_SEQ_OF, effs))))


def load_traces(r, effs: Sequence[tuple]) -> None:
    """A run's traces, in order, and their indexes by type, tag and parent: loops in C."""
    if r.traces or r.trace_order:  # not a fresh run: one by one, as records go
        for eff in effs:
            _trace_state(r, eff)
        return
    ids = list(map(_TR_ID_OF, effs))
    r.traces.update(zip(ids, effs))
    r.trace_order.extend(ids)
    r.traces_by_type.update(grouped(list(map(_TR_TYPE_OF, effs)), ids))
    tag_lists = list(map(_TR_TAGS_OF, effs))
    tagged = list(chain.from_iterable(map(repeat, ids, map(len, tag_lists))))
    r.traces_by_tag.update(grouped(list(chain.from_iterable(tag_lists)), tagged))
    parents = list(map(_TR_PARENT_OF, effs))
    child = list(map(is_not, parents, repeat(None)))
    r.trace_roots.extend(compress(ids, map(not_, child)))
    r.trace_children.update(grouped(list(compress(parents, child)), list(compress(ids, child))))


def grouped(keys: list, values: list) -> dict:
    """key -> the values at that key's positions, in order; keys in order of first appearance.

    What appending each value to its key's list does, with C-level loops: a
    stable sort of the positions by key, then one slice of values per key.
    Keys that do not sort (mixed types) are grouped one by one.
    """
    if not keys:
        return {}
    first = dict.fromkeys(keys)
    if len(first) == 1:
        return {keys[0]: list(values)}
    key_at, value_at = keys.__getitem__, values.__getitem__
    try:
        order = sorted(range(len(keys)), key=key_at)
    except TypeError:
        out: dict = {}
        for k, v in zip(keys, values):
            out.setdefault(k, []).append(v)
        return out
    groups = {k: list(map(value_at, at)) for k, at in groupby(order, key_at)}
    return {k: groups[k] for k in first}


# -- taking an effect back --------------------------------------------------------
# A transaction that fails part-way undoes what it applied, newest first. Keyed
# entries go back to the entry they replaced; events and traces are the last of
# their lists, so taking one back pops it.

def restore_entry(table: dict, key, previous) -> None:
    """Put `previous` (an entry, or None: there was none) back at `key` of a keyed table."""
    if previous is None:
        table.pop(key, None)
    else:
        table[key] = previous


def unapply_event(r, eff: tuple) -> None:
    """Take back `eff`, the run's last event."""
    r.events.pop()
    event_type = eff[EV_TYPE]
    by_type = r.events_by_type[event_type]
    by_type.pop()
    if not by_type:
        del r.events_by_type[event_type]


def unapply_trace(r, eff: tuple) -> None:
    """Take back `eff`, the run's last trace."""
    tid, parent = eff[TR_ID], eff[TR_PARENT]
    del r.traces[tid]
    r.trace_order.pop()
    for index, k in ((r.traces_by_type, eff[TR_TYPE]),
                     *((r.traces_by_tag, tag) for tag in eff[TR_TAGS])):
        lst = index[k]
        lst.pop()
        if not lst:
            del index[k]
    if parent is None:
        r.trace_roots.pop()
    else:
        lst = r.trace_children[parent]
        lst.pop()
        if not lst:
            del r.trace_children[parent]


#: the most one group may take once encoded: a record holds at least one whole group
GROUP_BYTES_MAX = RECORD_BYTES_MAX - 4096
#: bytes a batch header may add per group in a record: [run id, [...]] around its effects
_GROUP_FRAMING = 8 + 4 * 1024


def check_group_size(effs) -> None:
    """ValueTooLarge if a group of effects would not fit one WAL record: the limit a store
    without a log (in memory) applies too, so that a call accepted in memory is accepted
    by a durable store and a cluster alike.

    It counts the bytes and strs the effects carry (their values, keys and names),
    which is what their encoding is made of but a few bytes of headers each: a
    group near the limit may be taken in memory and refused on disk, never one
    far over it.
    """
    size = 0
    for eff in effs:
        for field in eff:
            t = type(field)
            if t is bytes or t is str:
                size += len(field)
    if size > GROUP_BYTES_MAX:
        from inmem.errors import ValueTooLarge
        raise ValueTooLarge(f"this write takes at least {size} bytes in the log, over the "
                            f"limit of {GROUP_BYTES_MAX} for one operation or transaction; "
                            "split it into smaller ones")


def array_header(n: int) -> bytes:
    """The msgpack header of an array of `n` elements."""
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
    if len(groups) == 1:  # one operation per record: what a strict single writer commits
        group = groups[0]
        count = group[1]
        return b"".join((_ONE_BATCH, _pack(group[0]),
                         _ARRAY_HEADS[count] if count < 16 else array_header(count), group[2]))
    parts = [b"\x92", _pack(len(groups)), None]
    append = parts.append
    heads = []  # (index in parts, effect count) of each batch's array header
    run_id = None
    for group in groups:
        if heads and group[0] == run_id:
            heads[-1][1] += group[1]
        else:
            run_id = group[0]
            append(b"\x92")
            append(_pack(run_id))
            heads.append([len(parts), group[1]])
            append(None)  # the batch's array header, once its count is known
        append(group[2])
    for at, count in heads:
        parts[at] = _ARRAY_HEADS[count] if count < 16 else array_header(count)
    parts[2] = array_header(len(heads))
    return b"".join(parts)


def record_payloads(groups) -> list:
    """`[(payload, n), ...]`: records of whole groups, in order, each within RECORD_BYTES_MAX."""
    if len(groups) == 1:  # a group always fits a record (`GROUP_BYTES_MAX`)
        return [(record_payload(groups), 1)]
    limit = RECORD_BYTES_MAX - 64
    if sum(map(len, map(_PACKED, groups))) + _GROUP_FRAMING * len(groups) <= limit:
        return [(record_payload(groups), len(groups))]
    out = []
    start = size = 0
    for i, group in enumerate(groups):
        need = len(group[2]) + _GROUP_FRAMING
        if size and size + need > limit:
            out.append((record_payload(groups[start:i]), i - start))
            start, size = i, 0
        size += need
    if start < len(groups):
        out.append((record_payload(groups[start:]), len(groups) - start))
    return out


#: msgpack array headers of 0..15 elements (one byte each)
_ARRAY_HEADS = tuple(bytes((0x90 | n,)) for n in range(16))
#: a payload's head when it holds one group: [1, [ then the group's batch [run id, effects]
_ONE_BATCH = b"\x92\x01\x91\x92"
#: run ids and counts as msgpack (str and int: packing them calls back into no Python code,
#: so one packer serves every caller)
_pack = msgpack.Packer().pack
_PACKED = itemgetter(2)


def record_batches(payload) -> tuple:
    """(group count, [(run id, start, end)]): where each run's batch sits in a record payload.

    Read without decoding the effects, so a batch can be copied as it is.
    """
    u = msgpack.Unpacker(raw=False, max_buffer_size=max(len(payload), 1))
    u.feed(payload)
    if u.read_array_header() != 2:
        raise ValueError("a record payload is [group count, batches]")
    count = u.unpack()
    spans = []
    for _ in range(u.read_array_header()):
        start = u.tell()
        if u.read_array_header() != 2:
            raise ValueError("a batch is [run id, effects]")
        run_id = u.unpack()
        u.skip()
        spans.append((run_id, start, u.tell()))
    return count, spans


def payload_of_batches(payload, count: int, spans: list) -> bytes:
    """A record payload holding only the batches `spans` of `payload`, as they are."""
    parts = [b"\x92", msgpack.packb(count), array_header(len(spans))]
    view = memoryview(payload)
    parts.extend(view[start:end] for _run, start, end in spans)
    return b"".join(parts)


def decode_batch(payload):
    """(group count, batches) from a WAL record payload."""
    count, batches = msgpack.unpackb(payload, raw=False, use_list=False)
    return count, batches
