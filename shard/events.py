"""Event operations of a run: an append-only, hash-chained log.

`EventOps` is one of the parts the `Engine` is assembled from. Each event is
an EV_APPEND effect (`shard.effects`: EV_SEQ, EV_TYPE, EV_PAYLOAD, EV_TS,
EV_PREV_HASH, EV_HASH) whose hash covers the event and the previous event's
hash, so `ev_verify` can tell whether the chain was altered. `ev_by_type` pages
with `after` (a sequence number) and `limit`.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from typing import Callable

import msgpack

from inmem.errors import InvalidValue, RunNotFound
from inmem.types import ChainCheck, Event
from inmem.values import ZERO_HASH, canonical, check_key

from .effects import EV_APPEND, EV_HASH, EV_PAYLOAD, EV_PREV_HASH, EV_SEQ, EV_TS, EV_TYPE
from .runs import RunData
from .traces import check_limit

_sha256 = hashlib.sha256
_unpackb = msgpack.unpackb
_packb = msgpack.Packer(use_bin_type=True).pack  # writes are serialised: one packer is safe
_EV_PREFIX = b"\x95"  # msgpack fixarray of 5: [sequence, type, payload, ts, prev_hash]


def _packb_shared(value) -> bytes:
    # Reads run without the write lock, so they may not use the writers' packer.
    return msgpack.packb(value, use_bin_type=True)


def hash_input(pack: Callable, sequence: int, event_type: str, payload: bytes, ts: int,
               prev_hash: bytes) -> bytes:
    """msgpack([sequence, type, payload, ts, prev_hash]) with the payload already canonical bytes.

    An event's hash is sha256 of this array. It is assembled from parts so the
    stored payload bytes are not decoded and packed again.
    """
    return b"".join((_EV_PREFIX, pack(sequence), pack(event_type), payload, pack(ts),
                     pack(prev_hash)))


def as_event(e: tuple) -> Event:
    """The API's Event for an EV_APPEND effect."""
    return Event(e[EV_SEQ], e[EV_TYPE], _unpackb(e[EV_PAYLOAD], raw=False), e[EV_TS],
                 e[EV_PREV_HASH], e[EV_HASH])


class EventOps:
    """The event operations of the engine."""

    clock: Callable[[], int]

    def ev_append(self, run: str, event_type: str, payload) -> Event:
        r = self._writable(run)
        check_key(event_type, "event type")
        data = self._encode(canonical(payload) if type(payload) in (dict, list) else payload)
        seq = len(r.events)
        prev = r.events[-1][EV_HASH] if seq else ZERO_HASH
        ts = self.clock()
        h = _sha256(hash_input(_packb, seq, event_type, data, ts, prev)).digest()
        self._commit(r, (EV_APPEND, seq, event_type, data, ts, prev, h))
        # The caller's own payload object: the stored copy is the packed bytes,
        # so nothing the caller does to it later can reach the log.
        return Event(seq, event_type, payload, ts, prev, h)

    def ev_read(self, run: str, sequence: int) -> Event | None:
        r = self._run(run)
        if type(sequence) is not int:
            raise InvalidValue("sequence must be an int")
        if 0 <= sequence < len(r.events):
            return as_event(r.events[sequence])
        return None

    def ev_range(self, run: str, start: int, end: int) -> list[Event]:
        r = self._run(run)
        if type(start) is not int or type(end) is not int:
            raise InvalidValue("start and end must be ints")
        start = max(start, 0)
        return [as_event(e) for e in r.events[start:max(end, start)]]

    def ev_head(self, run: str) -> Event | None:
        r = self._run(run)
        return as_event(r.events[-1]) if r.events else None

    def ev_count(self, run: str) -> int:
        return len(self._run(run).events)

    def ev_by_type(self, run: str, event_type: str, after: int | None = None,
                   limit: int | None = None) -> list[Event]:
        """The run's events of `event_type` in sequence order; a page when `after` (a
        sequence: start after it) or `limit` (at most so many) is given.

        The run keeps each type's sequences in order: a page bisects them and
        slices, so it costs about what it returns.
        """
        r = self._run(run)
        check_key(event_type, "event type")
        check_limit(limit)
        seqs = r.events_by_type.get(event_type, ())
        start = 0
        if after is not None:
            if type(after) is not int:
                raise InvalidValue("after must be a sequence number (int), the last of the "
                                   f"previous page, or None, got {type(after).__name__}")
            start = bisect_right(seqs, after) if seqs else 0
        events = r.events
        if start == 0 and limit is None:  # the whole list, as before pages: no copy of it
            return [as_event(events[s]) for s in seqs]
        return [as_event(events[s]) for s in seqs[start:start + limit if limit else None]]

    def ev_verify(self, run: str) -> ChainCheck:
        job = ChainVerification(run, self._run(run))
        job.step(self, job.n)
        return job.result()


class ChainVerification:
    """A run's hash chain checked from its first event, in slices if need be (a shard
    worker checks a long chain between its turns: shard.deferred_reads). The events
    counted are those the run had when it began; RunNotFound when the run is deleted
    (or replaced) before it is done."""

    __slots__ = ("run", "data", "n", "pos", "prev", "failed")

    def __init__(self, run: str, data: RunData):
        self.run = run
        self.data = data
        self.n = len(data.events)
        self.pos = 0
        self.prev = ZERO_HASH
        self.failed: ChainCheck | None = None

    @property
    def done(self) -> bool:
        return self.failed is not None or self.pos >= self.n

    def step(self, engine, budget: int) -> int:
        """Check up to `budget` more events; how many were checked."""
        if engine.runs.get(self.run) is not self.data:
            raise RunNotFound(f"run {self.run!r} was deleted while its chain was checked")
        events, n, prev = self.data.events, self.n, self.prev
        start = i = self.pos
        stop = min(start + budget, n)
        while i < stop:
            e = events[i]
            if e[EV_SEQ] != i:
                self.failed = ChainCheck(False, n, i, f"event {i} has sequence {e[EV_SEQ]}")
                break
            if e[EV_PREV_HASH] != prev:
                self.failed = ChainCheck(False, n, i, f"event {i}: prev_hash does not match")
                break
            body = hash_input(_packb_shared, e[EV_SEQ], e[EV_TYPE], e[EV_PAYLOAD], e[EV_TS],
                              e[EV_PREV_HASH])
            if _sha256(body).digest() != e[EV_HASH]:
                self.failed = ChainCheck(False, n, i, f"event {i}: hash does not match")
                break
            prev = e[EV_HASH]
            i += 1
        self.pos, self.prev = i, prev
        return i - start + (self.failed is not None)

    def result(self) -> ChainCheck:
        return self.failed or ChainCheck(True, self.n, None, None)
