"""The asyncio face of the embedded store: engine calls inline, durable waits off the event loop.

An embedded store's operation has two parts of very different kinds:

1. applying it to the engine, under the store's lock: in-memory work that
   takes microseconds (a put is a few dict updates and, when durable, the
   encoding of its WAL record, which is only appended to a buffer);
2. in strict mode only, waiting until the fsync that covers its record has
   returned: milliseconds on a real disk, and a thread that waits sleeps in
   the kernel for all of that time.

Part 1 runs inline on the event loop. Handing it to an executor thread would
cost a thread hand-off and a wake-up (tens of microseconds) for work that
takes a few, and the GIL would keep the loop waiting for that thread anyway.
The lock it takes is held by the store's own threads (the buffered flusher
handing over its batch, the snapshot scheduler for the fork) for short,
bounded moments only, never across I/O.
Reads, searches and replays are part-1 work too: they cost the CPU they
cost, on whichever thread runs them.

Part 2 never runs on the loop. The caller gets the record's token from the
commit step and awaits a future; one waiter thread per store waits for the
fsync on behalf of every coroutine: it takes every token queued so far,
waits once for the highest (the flush that covers it covers all the lower
ones, since records are fsynced in order), and resolves the whole group in
one hand-back to the loop. While it waits, the next group queues, so 1,000
coroutines writing at once share a few fsyncs — the group commit the
blocking store gets from its threads, without a thread per writer. A pool
executor would cap the group at its worker count and pay a thread switch per
write. Buffered and in-memory stores never wait (the token is None), so
their operations complete without leaving the loop at all.

An operation that waits for nothing completes without suspending its
caller, so a coroutine making such calls one after another would never give
the loop back: every other task of the loop, a timeout and a cancellation
of that coroutine itself would wait until it stopped by itself (a polling
agent never does). So one call in `YIELD_EVERY` first yields to the loop
for one turn (before anything is applied: a cancellation arriving there
cancels a call that did nothing), which costs well under a microsecond a
call spread over the others.

Taking a snapshot (which waits for a forked child) and closing (a final
flush and snapshot) do block, and run in the default executor.
"""

from __future__ import annotations

import asyncio
import threading

from inmem.ops import WRITE_OPS
from inmem.errors import InmemError
from inmem.shard.deferred_reads import OPS as SLICED_READS, REPLAY
from inmem.shard.deferred_search import BUDGET_ARG as SEARCH_BUDGET_ARG

from .embedded import EmbeddedBackend

#: one call in this many yields to the loop first (see the module docstring)
YIELD_EVERY = 32


class _DurableWaiter:
    """One thread that waits for fsyncs and resolves the futures of every write they cover."""

    def __init__(self, store):
        self._store = store
        self._cond = threading.Condition()
        self._queued: list = []  # (loop, token, future)
        self._stopping = False
        self._thread: threading.Thread | None = None

    def wait(self, token) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._cond:
            self._queued.append((loop, token, fut))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="inmem-async-durable",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        return fut

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queued and not self._stopping:
                    self._cond.wait()
                if not self._queued:
                    return
                group, self._queued = self._queued, []
            error = None
            try:
                self._store.wait_durable(max(token for _, token, _ in group))
            except BaseException as exc:  # handed to every writer of the group
                error = exc
            by_loop: dict = {}
            for loop, _, fut in group:
                by_loop.setdefault(loop, []).append(fut)
            for loop, futs in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, futs, error)
                except RuntimeError:
                    pass  # that loop is closed: nobody is waiting any more

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()


def _settle(futs, error) -> None:
    for fut in futs:
        if fut.done():
            continue  # cancelled: the write stands, its acknowledgement is dropped
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


class AsyncEmbeddedBackend:
    """The async backend interface over an `EmbeddedBackend`."""

    def __init__(self, backend: EmbeddedBackend):
        self.sync = backend
        self.store = backend.store
        self._waiter = None if self.store is None else _DurableWaiter(self.store)
        self._inline = 0  # calls since the last yield to the loop

    async def call(self, op, args):
        self._inline += 1
        if self._inline >= YIELD_EVERY:
            self._inline = 0
            await asyncio.sleep(0)
        sync = self.sync
        if op in SLICED_READS:
            waits = sync.long_read(op, args)
            if waits is not None:
                # A long replay or chain check, slice by slice: the loop's other
                # tasks run between them (see EmbeddedBackend.long_read).
                while (results := sync.long_read_step(waits)) is None:
                    await asyncio.sleep(0)
                if isinstance(results[0], InmemError):
                    raise results[0]
                return results[0]
        if self.store is None:
            return sync.call(op, args)
        result, token = sync.apply(sync._execute, (op, args), op in WRITE_OPS)
        if token is not None:
            await self._waiter.wait(token)
        return result

    async def call_batch(self, ops) -> list:
        self._inline += 1
        if self._inline >= YIELD_EVERY:
            self._inline = 0
            await asyncio.sleep(0)
        sync = self.sync
        if ops and all(op == REPLAY for op, _ in ops):  # diff_runs
            waits = sync.long_read(None, ops)
            if waits is not None:
                while (results := sync.long_read_step(waits)) is None:
                    await asyncio.sleep(0)
                return results
        if self.store is None:
            return sync.call_batch(ops)
        result, token = sync.apply(sync.engine.execute_batch, (ops,),
                                   any(op in WRITE_OPS for op, _ in ops))
        if token is not None:
            await self._waiter.wait(token)
        return result

    async def fanout(self, op, args) -> list:
        """One answer per shard; the embedded store is one shard."""
        if op in SEARCH_BUDGET_ARG:
            # A search without a budget behind a large text: slice by slice, the
            # loop's other tasks running between them (see EmbeddedBackend.fanout).
            while self.sync.index_behind(op, args):
                await asyncio.sleep(0)
        return [await self.call(op, args)]

    async def snapshot(self) -> list:
        return await asyncio.to_thread(self.sync.snapshot)

    async def compact_history(self) -> list:
        return await asyncio.to_thread(self.sync.compact_history)

    async def recovery_report(self) -> list:
        return self.sync.recovery_report()

    async def info(self) -> dict:
        return self.sync.info()

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)
        if self._waiter is not None:
            # After the store's final flush: every queued wait is answered by now.
            await asyncio.to_thread(self._waiter.stop)

    def describe(self) -> str:
        return self.sync.describe()


__all__ = ["AsyncEmbeddedBackend"]
