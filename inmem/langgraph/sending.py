"""Sending the saver's writes: a thread's run is created on its first write.

A LangGraph thread is one inmem run (see `keys.py`), made paused the first
time anything is written to it, and so are the run that indexes LangGraph
run ids and the store's run. Rather than ask whether a run exists before
each write, a plan sends its writes as they are; an operation refused with
RunNotFound names a run to create, after which the refused operations are
sent again (`send_creating`, which the store's writes use too).
`SendingPlans._send_bounded` also splits writes that may be larger than one
message (a copy of a whole thread) into batches of a bounded size.

A mixin of `InmemSaver`: it uses the saver's `prefix` and `_tag`.
"""

from __future__ import annotations

from inmem.errors import InvalidStatusTransition, RunExists, RunNotFound, TransactionConflict

from .driver import raise_first

#: bytes of values sent per round trip where a call may write more than a message holds
SEND_BYTES = 8 << 20
#: times a write creates its run again that something keeps deleting as it is created
CREATE_TRIES = 64


def send_creating(ops, create, results=None):
    """Plan step: send `ops` (unless their `results` are in already), first write of
    their runs or not; the results. The runs of the operations refused with RunNotFound
    are created (`create(runs)`: the operations that do), and those operations sent
    again, as many times as it takes: a run deleted between its creation and the
    write it was made for (a `delete_thread` racing a put) is made again, as a put
    after a delete starts the thread again. TransactionConflict if it is deleted
    again every time, CREATE_TRIES times.
    """
    if results is None:
        results = yield ops
    for _ in range(CREATE_TRIES):
        again = [i for i, r in enumerate(results) if isinstance(r, RunNotFound)]
        if not again:
            return results
        made = yield create(list(dict.fromkeys(ops[i][1][0] for i in again)))
        # RunNotFound: deleted between its creation and its status; the writes
        # sent again find it missing, and it is made once more.
        raise_first(made, allow=(RunExists, InvalidStatusTransition, RunNotFound))
        retried = yield [ops[i] for i in again]
        results = list(results)
        for i, r in zip(again, retried):
            results[i] = r
    runs = sorted({ops[i][1][0] for i, r in enumerate(results) if isinstance(r, RunNotFound)})
    raise TransactionConflict(f"runs {runs!r:.200} were deleted each time they were created "
                              f"for a write ({CREATE_TRIES} times); try again")


class SendingPlans:
    """Plan steps that send writes, creating the runs they find missing."""

    def _send(self, ops, threads: dict, results=None):
        """Send `ops` (unless their `results` are in already); a run missing on first write
        (a new thread, the index) is created, paused, and the operations it refused are
        sent again."""
        return (yield from send_creating(ops, lambda runs: self._creates(runs, threads),
                                         results))

    def _creates(self, runs: list, threads: dict) -> list:
        """The operations that create `runs`, paused: thread runs (those in `threads`,
        by their thread id) tagged as threads, any other as the index."""
        create = []
        for run in runs:
            if run in threads:
                create.append(("run.begin", (None, run, None, [self._tag],
                                             {"thread_id": _plain(threads[run])}, False)))
            else:
                create.append(("run.begin", (None, run, None, [f"{self.prefix}index"], None,
                                             False)))
            create.append(("run.set_status", (run, "paused", None)))
        return create

    def _send_bounded(self, ops, threads: dict):
        """`_send` `ops` in batches of at most SEND_BYTES of values each (one round trip
        per batch), raising the first failure."""
        batch, size = [], 0
        for op in ops:
            n = _size(op[1])
            if batch and size + n > SEND_BYTES:
                raise_first((yield from self._send(batch, threads)))
                batch, size = [], 0
            batch.append(op)
            size += n
        if batch:
            raise_first((yield from self._send(batch, threads)))


def _size(value) -> int:
    """About how many bytes `value` (operation arguments) takes in a message."""
    if isinstance(value, (bytes, str)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return 8 + sum(_size(v) for v in value)
    if isinstance(value, dict):
        return 8 + sum(_size(k) + _size(v) for k, v in value.items())
    return 8


def _plain(thread_id):
    return thread_id if type(thread_id) in (str, int) else str(thread_id)
