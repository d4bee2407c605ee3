"""Sending the saver's writes: a thread's run is created on its first write.

A LangGraph thread is one inmem run (see `keys.py`), made paused the first
time anything is written to it, and so is the run that indexes LangGraph
run ids. Rather than ask whether a run exists before each write, a plan
sends its writes as they are; an operation refused with RunNotFound names a
run to create, after which the refused operations are sent again.
`SendingPlans._send_bounded` also splits writes that may be larger than one
message (a copy of a whole thread) into batches of a bounded size.

A mixin of `InmemSaver`: it uses the saver's `prefix` and `_tag`.
"""

from __future__ import annotations

from inmem.errors import InvalidStatusTransition, RunExists, RunNotFound

from .driver import raise_first

#: bytes of values sent per round trip where a call may write more than a message holds
SEND_BYTES = 8 << 20


class SendingPlans:
    """Plan steps that send writes, creating the runs they find missing."""

    def _send(self, ops, threads: dict, results=None):
        """Send `ops` (unless their `results` are in already); a run missing on first write
        (a new thread, the index) is created, paused, and the operations it refused are
        sent again."""
        if results is None:
            results = yield ops
        missing = {}
        for (_, args), result in zip(ops, results):
            if isinstance(result, RunNotFound):
                missing[args[0]] = None
        if not missing:
            return results
        create = []
        for run in missing:
            if run in threads:
                create.append(("run.begin", (None, run, None, [self._tag],
                                             {"thread_id": _plain(threads[run])}, False)))
            else:
                create.append(("run.begin", (None, run, None, [f"{self.prefix}index"], None,
                                             False)))
            create.append(("run.set_status", (run, "paused", None)))
        made = yield create
        raise_first(made, allow=(RunExists, InvalidStatusTransition))
        again = [i for i, r in enumerate(results) if isinstance(r, RunNotFound)]
        retried = yield [ops[i] for i in again]
        results = list(results)
        for i, r in zip(again, retried):
            results[i] = r
        return results

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
