"""Helpers the API tests share: an independent event-hash check, an exact
value comparison, and the run-status facts of the contract.

The hash is recomputed here from the documented recipe rather than imported
from the package, so a test fails if the engine and the documentation drift
apart.
"""

from __future__ import annotations

import hashlib
import math
import threading

import msgpack

ZERO_HASH = bytes(32)

STATUSES = ("active", "paused", "completed", "failed", "cancelled", "archived")

#: the documented transition table; every pair not listed is refused
ALLOWED = {
    "active": {"paused", "completed", "failed", "cancelled", "archived"},
    "paused": {"active", "cancelled", "archived"},
    "completed": {"archived"},
    "failed": {"archived"},
    "cancelled": {"archived"},
    "archived": set(),
}


def sort_maps(value):
    """`value` with every map rebuilt in sorted key order, recursively."""
    if isinstance(value, dict):
        return {k: sort_maps(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sort_maps(v) for v in value]
    return value


def expected_hash(sequence, event_type, payload, timestamp, prev_hash) -> bytes:
    body = msgpack.packb([sequence, event_type, sort_maps(payload), timestamp, prev_hash],
                         use_bin_type=True)
    return hashlib.sha256(body).digest()


def check_chain(events) -> None:
    """Assert that `events` is a complete chain from sequence 0, link by link."""
    prev = ZERO_HASH
    for i, ev in enumerate(events):
        assert ev.sequence == i
        assert ev.prev_hash == prev
        assert ev.hash == expected_hash(ev.sequence, ev.event_type, ev.payload,
                                        ev.timestamp, ev.prev_hash)
        prev = ev.hash


def same(a, b) -> bool:
    """Equal and of the same types all the way down (True is not 1, b"x" is not "x")."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def bring_to(db, run: str, status: str) -> None:
    """Move a fresh active run to `status` by the shortest allowed path."""
    if status == "active":
        return
    if status == "paused":
        db.runs.pause(run)
    elif status == "completed":
        db.end_run(run)
    elif status == "failed":
        db.abort_run(run, "boom")
    elif status == "cancelled":
        db.runs.cancel(run)
    elif status == "archived":
        db.runs.archive(run)
    else:
        raise ValueError(status)
    assert db.run_status(run) == status


def run_threads(target, count: int, timeout: float = 60.0) -> None:
    """Run `target(index)` on `count` threads started together; re-raise the first error."""
    barrier = threading.Barrier(count)
    errors = []

    def body(index):
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:  # reported on the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a worker thread did not finish"
    if errors:
        raise errors[0]
