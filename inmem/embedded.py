"""The embedded backend: one shard engine in the caller's process.

Every operation runs under one lock, so concurrent threads see each
operation (and each committed transaction) whole. Writes of a durable store
go to its WAL before the lock is released, in commit order; in strict mode
the caller then waits outside the lock for the fsync that covers its record,
which lets the writes of many threads share one fsync (group commit).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref

import msgpack

from inmem.ops import WRITE_OPS
from inmem.shard.deferred_reads import OPS as SLICED_READS, REPLAY, ReadWaits, replay_jobs, verify_job
from inmem.shard.deferred_search import BUDGET_ARG as SEARCH_BUDGET_ARG, waits_for_index
from inmem.shard.engine import Engine
from inmem.shard.entries import PLAIN_AT
from inmem.shard.upkeep import shard_info

from .sections import KV, as_pairs
from .errors import InmemError, InvalidValue


#: durable embedded stores of this process, for the fork guard and the exit handler below
_durable_backends: "weakref.WeakSet[EmbeddedBackend]" = weakref.WeakSet()
_FORKED = ("this store was opened before fork(); a child process opens it itself, once the "
           "parent has closed it (two processes must never write one WAL)")


def _after_fork_in_child() -> None:
    # The child shares the parent's WAL files and directory lock: anything it wrote
    # or a close() it ran (a flush, a snapshot, WAL retention) would go into the
    # parent's log behind its back. Its copy of the store only refuses, and its
    # close() touches nothing.
    for backend in list(_durable_backends):
        backend._closed = _FORKED


os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_at_exit() -> None:
    # A buffered store's last interval of writes is in memory only, and its
    # flusher is a daemon thread the exit does not wait for. Exit handlers run
    # once the non-daemon threads have ended, while daemon threads (the
    # flusher among them) still run, so closing joins them as usual.
    for backend in list(_durable_backends):
        backend.close_unattended("at exit")


atexit.register(_close_at_exit)


def _closed_error(backend) -> InmemError:
    return InmemError(_FORKED if backend._closed is _FORKED else "the database is closed")


class EmbeddedBackend:
    def __init__(self, engine: Engine, store=None):
        self.engine = engine
        self.store = store  # shard.durable.DurableStore, or None for inmemory
        self.lock = threading.RLock() if store is None else store.lock
        #: False, True once closed, or _FORKED in a forked child's copy
        self._closed = False
        self._execute = engine.execute
        if store is not None:
            _durable_backends.add(self)
            # The store's threads hold the store, not this object: once nothing
            # holds this, the store is closed rather than left running. The exit
            # handler above covers stores still held at exit.
            self._finalizer = weakref.finalize(self, store.close_unattended, "collected")
            self._finalizer.atexit = False

    # -- the one entry point -------------------------------------------------------

    def call(self, op, args):
        if op in SLICED_READS:
            waits = self.long_read(op, args)
            if waits is not None:
                while (results := self.long_read_step(waits)) is None:
                    time.sleep(0)  # the lock is free here: other threads' calls go in
                if isinstance(results[0], InmemError):
                    raise results[0]
                return results[0]
        if self.store is None:
            with self.lock:
                if self._closed:
                    raise InmemError("the database is closed")
                return self._execute(op, args)
        return self._durable(self._execute, (op, args), op in WRITE_OPS)

    def call_batch(self, ops) -> list:
        if ops and all(op == REPLAY for op, _ in ops):  # diff_runs
            waits = self.long_read(None, ops)
            if waits is not None:
                while (results := self.long_read_step(waits)) is None:
                    time.sleep(0)
                return results
        if self.store is None:
            with self.lock:
                if self._closed:
                    raise InmemError("the database is closed")
                return self.engine.execute_batch(ops)
        return self._durable(self.engine.execute_batch, (ops,),
                             any(op in WRITE_OPS for op, _ in ops))

    def _durable(self, fn, fn_args, writes: bool):
        """Run `fn` under the lock, then the store's one durable commit step."""
        result, token = self.apply(fn, fn_args, writes)
        if token is not None:
            self.store.wait_durable(token)
        return result

    def apply(self, fn, fn_args, writes: bool):
        """Run `fn` under the lock and commit it: (its result, the token to wait durable for).

        The token is None when nothing is to be waited for (buffered mode, or
        nothing written); the caller waits for it outside the lock.
        """
        store = self.store
        if self._closed is _FORKED:
            raise _closed_error(self)  # before the lock, which a parent's thread may hold
        with self.lock:
            if self._closed:
                raise _closed_error(self)
            if store.interrupted is not None or (writes and store.writer.failed):
                self._refuse(fn_args, writes)
            try:
                result = fn(*fn_args)
                token = store.commit_locked()
            except InmemError:
                raise  # the engine's refusals change nothing (encode before applying)
            except BaseException as exc:
                # Anything else may have landed part way through the write: a Ctrl-C,
                # or any exception a signal handler raises (or a defect).
                if writes:
                    store.mark_interrupted(exc)
                raise
        return result, token

    def _refuse(self, fn_args, writes: bool) -> None:
        """A store that may not write (its WAL failed, or a write was interrupted part way)."""
        store = self.store
        if writes:
            store.check_writable()
        # Reads of the current state still answer from memory. A replay (and so
        # a diff) folds the runs' histories, which after an interrupted write may
        # disagree with the WAL: it would show what a reopen will not, or meet a
        # record that does not hold what the history's index says.
        if store.interrupted is not None:
            op = fn_args[0]
            if (op == "run.replay" if type(op) is str
                    else any(o == "run.replay" for o, _ in op)):  # a batch
                store.check_readable_history()

    def fanout(self, op, args) -> list:
        """One answer per shard; the embedded store is one shard."""
        if op in SEARCH_BUDGET_ARG:
            while self.index_behind(op, args):
                time.sleep(0)  # the lock is free here: other threads' calls go in
        return [self.call(op, args)]

    def long_read(self, op, args) -> ReadWaits | None:
        """A replay of a long run or a check of a long event chain (`op`; None: `args` are a
        pipeline's replays) to do a slice at a time, letting go of the lock between slices
        as a shard worker serves other requests between them (shard.deferred_reads); None
        to run it inline."""
        with self.lock:
            if self._closed:
                return None  # the call itself says so
            engine = self.engine
            jobs = (replay_jobs(engine, args) if op is None else
                    replay_jobs(engine, [(op, args)]) if op == REPLAY else verify_job(engine, args))
        if jobs is None:
            return None
        waits = ReadWaits()
        waits.add(None, jobs, op)
        return waits

    def long_read_step(self, waits: ReadWaits) -> list | None:
        """One slice of `long_read`'s work, under the lock; its results once done (an
        InmemError in place of one that failed), else None."""
        with self.lock:
            if self._closed:
                raise _closed_error(self)
            done = waits.step(self.engine)
        return done[0][1] if done else None

    def index_behind(self, op, args) -> bool:
        """For a search without a budget: one slice of bringing the index up to date,
        under the lock; whether it is still behind. A search that would wait seconds
        for a large text to be indexed waits slice by slice, letting go of the lock
        between them, as a shard worker serves other requests meanwhile
        (shard.deferred_search)."""
        if self._closed:
            return False  # the call itself says so
        with self.lock:
            return waits_for_index(self.engine, op, args)

    def kv_section(self) -> KV:
        return _FastKV(self)

    # -- operations ----------------------------------------------------------------

    def snapshot(self) -> list:
        if self.store is None:
            return []
        if self._closed is _FORKED:
            raise _closed_error(self)
        return self.store.snapshot()

    def compact_history(self) -> list:
        if self.store is None:
            return []
        if self._closed is _FORKED:
            raise _closed_error(self)
        return [{"shard": 0, **self.store.compact_history()}]

    def recovery_report(self) -> list:
        return [] if self.store is None else [self.store.recovery_result]

    def info(self) -> dict:
        with self.lock:
            return {"ready": True, "shards": [shard_info(0, self.engine, self.store)]}

    def close(self) -> None:
        if self._closed is _FORKED:
            return  # the parent's store: nothing of it is this process's to close
        with self.lock:
            if self._closed:
                return
            self._closed = True
        # Outside the lock: closing joins background threads that may be
        # waiting for it; the store takes it itself for the final flush.
        if self.store is not None:
            self._finalizer.detach()
            self.store.close()

    def close_unattended(self, why: str) -> None:
        """Close a durable store its owner left open; logs instead of raising."""
        if self._closed:
            return  # closed already, or the parent's copy in a forked child
        with self.lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer.detach()
        self.store.close_unattended(why)

    def describe(self) -> str:
        mode = "inmemory" if self.store is None else f"{self.store.durability} {self.store.path}"
        return f"embedded {mode}"


class _FastKV(KV):
    """KV whose hot calls skip the generic dispatch; writes take the same durable commit step."""

    __slots__ = ("get", "get_linked", "put", "put_many")

    def __init__(self, backend: EmbeddedBackend):
        super().__init__(backend.call)
        lock = backend.lock
        # The lock's own methods rather than `with lock`: a third of the cost
        # of taking it, on a read that costs well under a microsecond in all.
        acquire, release = lock.acquire, lock.release
        engine = backend.engine
        kv_get = engine.kv_get
        kv_get_linked = engine.kv_get_linked
        kv_put = engine.kv_put
        kv_put_many = engine.kv_put_many
        store = backend.store

        runs = engine.runs
        unpackb = msgpack.unpackb

        def get(run, key, default=None):
            acquire()
            try:
                if backend._closed:
                    raise _closed_error(backend)
                # The engine's kv_get inlined for a plain entry (no expiry, not
                # deleted), whose value sits at a fixed place: 15-20% of a read.
                # Anything else (no such run or key, a bad argument, a TTL) goes
                # the engine's way, which also says what is wrong.
                try:
                    e = runs[run].kv.get(key)
                except (KeyError, TypeError):
                    return kv_get(run, key, default)
                if e is not None:
                    at = PLAIN_AT[e[0]]
                    if at:
                        return unpackb(e[at:])
                return kv_get(run, key, default)
            finally:
                release()

        def get_linked(run, key, field):
            # A read: no commit step to take (the checkpointer's get_tuple is one of these).
            acquire()
            try:
                if backend._closed:
                    raise _closed_error(backend)
                try:
                    return kv_get_linked(run, key, field)
                except TypeError as exc:  # as the engine's dispatch says it
                    raise InvalidValue(f"bad arguments for kv.get_linked: {exc}") from None
            finally:
                release()

        if store is None:
            def put(run, key, value, ttl=None):
                acquire()
                try:
                    if backend._closed:
                        raise _closed_error(backend)
                    return kv_put(run, key, value, ttl)
                finally:
                    release()

            def put_many(run, items, ttl=None):
                if type(items) is not list:
                    items = as_pairs(items)
                acquire()
                try:
                    if backend._closed:
                        raise _closed_error(backend)
                    return kv_put_many(run, items, ttl)
                finally:
                    release()
        else:
            writer = store.writer
            commit = store.commit_locked
            wait = store.wait_durable

            def put(run, key, value, ttl=None):
                acquire()
                try:
                    if backend._closed:
                        raise _closed_error(backend)
                    if writer.failed or store.interrupted is not None:
                        store.check_writable()
                    try:
                        version = kv_put(run, key, value, ttl)
                        token = commit()
                    except InmemError:
                        raise
                    except BaseException as exc:  # see EmbeddedBackend.apply
                        store.mark_interrupted(exc)
                        raise
                finally:
                    release()
                if token is not None:
                    wait(token)
                return version

            def put_many(run, items, ttl=None):
                # A list goes in as it is: the engine checks every pair of it.
                if type(items) is not list:
                    items = as_pairs(items)
                acquire()
                try:
                    if backend._closed:
                        raise _closed_error(backend)
                    if writer.failed or store.interrupted is not None:
                        store.check_writable()
                    try:
                        versions = kv_put_many(run, items, ttl)
                        token = commit()
                    except InmemError:
                        raise
                    except BaseException as exc:  # see EmbeddedBackend.apply
                        store.mark_interrupted(exc)
                        raise
                finally:
                    release()
                if token is not None:
                    wait(token)
                return versions

        for name, fn in (("get", get), ("get_linked", get_linked), ("put", put),
                         ("put_many", put_many)):
            # help(db.kv.put) reads as on every other backend
            fn.__doc__ = getattr(KV, name).__doc__
            fn.__qualname__ = f"KV.{name}"
            setattr(self, name, fn)
