"""The saver's writes: `put` (a checkpoint) and `put_writes` (a task's pending writes).

`put`, the call a graph makes at every step, is prepared apart from its plan
(`_put_ops`): on a sync database whose thread exists it is sent as it is,
one `kv.put_many` call (on an embedded store, straight to the engine under
its lock), the blobs, the checkpoint and the head of its namespace in one
write-ahead log record; the plan (`_put_plan`) runs only for what needs more
(a new thread, a LangGraph run id not indexed yet, or one whose index entry
another saver may have deleted: the head version the put got back says so,
see `indexed.py`).

A run id's index entry is written only once the checkpoint it is for has
landed, in a round trip of its own (the first put of a run id to a
namespace, or one whose entry may be gone): sent together, the two writes
go to different runs (on a cluster, different shards) and the entry could
land first, and a `delete_for_runs` of the run in between would find the
thread, cut nothing of it, delete the entry, and leave the checkpoint that
landed next where no later `delete_for_runs` finds it.
`put_writes` sets each pending write at its own path of the checkpoint's
writes document, a value over `WRITE_INLINE_MAX` kept apart (see `keys.py`);
its last batch asks, after its writes, whether a cut deleted the checkpoint
meanwhile, and if so they are deleted (see `late_writes.py`).

A mixin of `InmemSaver`: it uses the saver's `db`, `prefix`, `serde`,
`_index`, `_indexed`, `_ns_keys`, `_put_many`, `_acall` and `_send`
(`sending.py`). On an asynchronous database `aput` awaits its `kv.put_many`
itself (`_aput_now`) as `put` calls it on a sync one.
"""

from __future__ import annotations

from langgraph.checkpoint.base import WRITES_IDX_MAP, get_checkpoint_metadata

from inmem.errors import RunNotFound, TransactionConflict, ValueTooLarge

from .driver import raise_first, run_async, run_sync
from .indexed import MARK_PREFIX, idle_marks
from .late_writes import drop_writes, found_gone, gone_checks
from .keys import (SHORT, WRITE_INLINE_MAX, check_names, json_name, namespace_keys,
                   stored_record, thread_gone_key, thread_run, unesc, write_key, writes_key)


class PutPlans:
    """The plans of put and put_writes."""

    def _put(self, config, checkpoint, metadata, new_versions):
        return (yield from self._put_plan(self._put_ops(config, checkpoint, metadata,
                                                         new_versions)))

    def _put_ops(self, config, checkpoint, metadata, new_versions) -> tuple:
        """What a put sends: (thread id, its run, the operations, its indexing, the
        answer). Its operations: the one `kv.put_many`. Its indexing: None without a
        LangGraph run id, else ((run id, run, namespace), the cell of the head version
        remembered there or None: not indexed there yet, what the saver remembers of
        the thread), see `indexed.py`."""
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        run = thread_run(self.prefix, thread_id)
        ns = conf.get("checkpoint_ns") or ""
        dumps = self.serde.dumps_typed
        body = checkpoint.copy()
        values = body.pop("channel_values", None) or {}
        # The namespace's keys, their parts escaped once (see keys.py).
        keys = self._ns_keys.get(ns)
        if keys is None:
            keys = namespace_keys(self._ns_keys, ns)
        # Every channel's blob key goes in the refs; the new versions' are the keys written.
        versions = checkpoint["channel_versions"]
        refs = [f"{keys[ch]}{v}" for ch, v in versions.items()]
        items = []
        for channel, version in new_versions.items():
            if channel in values:
                kind, data = dumps(values[channel])
            else:
                kind, data = "empty", b""
            items.append([f"{keys[channel]}{version}", [kind, data]])
        meta = get_checkpoint_metadata(config, metadata)
        run_id = meta.get("run_id")
        run_id = run_id if type(run_id) is str and run_id else None
        cid = checkpoint["id"]
        ckey = f"{keys.checkpoints}{cid}"
        if len(run) > SHORT or len(ns) > SHORT:
            check_names(thread_id, run, ns, ckey)
        refs.append(["json", f"{keys.writes}{cid}"])
        record = stored_record(ns, cid, conf.get("checkpoint_id"), dumps(body), dumps(meta),
                               run_id, refs)
        items.append([ckey, record])
        items.append([keys.head, record])
        indexing = None
        if run_id is not None:
            indexed = self._indexed
            # The mark of this saver's memory in the thread, first: its version is the
            # put's first (see indexed.py).
            items.insert(0, [indexed.mark_key, None])
            thread, cell = indexed.place(run_id, run, ns)
            indexing = ((run_id, run, ns), cell, thread)
        ops = [("kv.put_many", (run, items, None))]
        return (thread_id, run, ops, indexing,
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                  "checkpoint_id": cid}})

    def _put_now(self, prepared) -> dict:
        """Run a put on a sync database: one blocking `kv.put_many`, then its plan only
        when that is not all it takes (a new thread, a run id to index)."""
        put_many = self._put_many
        if put_many is not None:
            try:
                versions = put_many(*prepared[2][0][1])
            except RunNotFound as exc:  # a new thread: its run is made on its first write
                return run_sync(self.db, self._put_plan(prepared, [exc]))
            except ValueTooLarge as exc:
                raise _too_large(prepared, exc) from None
            if _done(prepared, versions):
                return prepared[4]
            return run_sync(self.db, self._put_plan(prepared, [versions]))
        return run_sync(self.db, self._put_plan(prepared))

    async def _aput_now(self, prepared) -> dict:
        """`_put_now` on an asynchronous database: its `kv.put_many` awaited as it is, no
        plan to drive unless it takes more."""
        try:
            versions = await self._acall("kv.put_many", prepared[2][0][1])
        except RunNotFound as exc:  # a new thread: its run is made on its first write
            return await run_async(self.db, self._put_plan(prepared, [exc]))
        except ValueTooLarge as exc:
            raise _too_large(prepared, exc) from None
        if _done(prepared, versions):
            return prepared[4]
        return await run_async(self.db, self._put_plan(prepared, [versions]))

    def _put_plan(self, prepared, results=None):
        """The plan of a put `_put_ops` prepared; `results`: its operations' results, when
        they were sent already."""
        thread_id, run, ops, indexing, answer = prepared
        if results is None:
            results = yield ops
        for r in results:
            if isinstance(r, BaseException):
                # A new thread (its run is made on its first write), or a failure.
                results = yield from self._send(ops, {run: thread_id}, results)
                if type(results[0]) is ValueTooLarge:
                    raise _too_large(prepared, results[0])
                raise_first(results)
                break
        if indexing is not None and not _done(prepared, results[0]):
            # Not indexed here yet, or the head was written since this saver's last
            # put of the run here (perhaps by a delete_for_runs of the run, which took
            # the index entry with it), or the thread was made again (see indexed.py).
            # The entry is written now that the checkpoint has landed, never before
            # (see the module docstring); the thread's marks are read with it, and
            # those idle for long deleted (see indexed.py).
            index_op = self._index_op(indexing[0][0], thread_id)
            written, marks = yield [index_op, ("kv.keys", (run, MARK_PREFIX))]
            if isinstance(written, RunNotFound):  # the index's first write
                written = (yield from self._send([index_op], {}, [written]))[0]
            raise_first([written])
            own = self._indexed.mark_key
            self._indexed.remember(indexing[0], results[0][-1], results[0][0])
            if not isinstance(marks, BaseException) and any(k != own for k in marks):
                # Others' marks: when each was put, against this put's own mark (one
                # clock, the shard's); a failure leaves them for the next such put.
                others = [k for k in marks if k != own]
                found = yield [("kv.get_versioned", (run, k)) for k in others + [own]]
                idle = idle_marks(others, found[:-1], found[-1])
                if idle:
                    yield [("kv.delete", (run, key)) for key in idle]
        return answer

    def _index_op(self, run_id: str, thread_id) -> tuple:
        """The write that lists a thread in a LangGraph run id's index entry."""
        return ("js.set", (self._index, run_id, json_name(str(thread_id)), True))

    def _put_writes(self, config, writes, task_id, task_path):
        try:
            return (yield from self._put_writes_plan(config, writes, task_id, task_path))
        except _GoneWithItsThread:
            return None  # nothing written: see `_send_writes`

    def _send_writes(self, ops, thread_id, run, cid):
        """`_send` a put_writes' writes; a thread run found missing is made again, unless
        `delete_thread` deleted it after the checkpoint was made (its note says so, see
        late_writes.py): then the writes are for a checkpoint gone with its thread, and
        _GoneWithItsThread stops them with nothing made."""
        results = yield ops
        if any(isinstance(r, RunNotFound) for r in results):
            (note,) = yield [("kv.get", (self._index, thread_gone_key(thread_id), None))]
            if type(note) is str and str(cid) < note:
                raise _GoneWithItsThread
        return (yield from self._send(ops, {run: thread_id}, results))

    def _put_writes_plan(self, config, writes, task_id, task_path):
        thread_id, run, ns = self._where(config)
        wkey = writes_key(ns, config["configurable"]["checkpoint_id"])
        if len(run) > SHORT or len(ns) > SHORT:
            check_names(thread_id, run, ns, wkey)
        entries = []
        for idx, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, idx)
            entries.append((f"{task_id}/{idx}", channel, idx, value))
        ordinary_writes = any(idx >= 0 for _, _, idx, _ in entries)
        seen = self._writes_seen
        place = (run, wkey)
        if ordinary_writes and seen is not None and place not in seen:
            # On a cluster, likely the first write to the document (the step's first
            # task to end): one transaction on its absence writes every row, no row
            # to read first. An absent document holds no row, whatever it held
            # before, so nothing kept as first stored is overwritten; if it is there
            # after all (another task, another saver), the transaction is refused and
            # the rows are read.
            done = yield from self._put_writes_first(
                thread_id, run, ns, config["configurable"]["checkpoint_id"], wkey, entries,
                task_id, task_path)
            _remember(seen, place)
            if done:
                return
        if ordinary_writes:
            # A task's ordinary writes are kept as first stored (a retried task
            # must not change what the checkpoint already recorded); the special
            # channels (error, interrupt, resume, scheduled) are replaced.
            # Only this task's rows are read: the whole document, which grows with
            # every task of the step, made a fan-out's writes quadratic.
            ordinary = [e for e in entries if e[2] >= 0]
            found = yield [("js.get", (run, wkey, json_name(e[0]))) for e in ordinary]
            raise_first(found, allow=(RunNotFound,))
            have = {e[0] for e, row in zip(ordinary, found)
                    if row is not None and not isinstance(row, RunNotFound)}
            entries = [e for e in entries if e[2] < 0 or e[0] not in have]
        dumps = self.serde.dumps_typed
        cid = config["configurable"]["checkpoint_id"]
        rows, apart = [], []
        for name, channel, idx, value in entries:
            kind, data = dumps(value)
            if len(data) > WRITE_INLINE_MAX:
                # Kept apart (see keys.py), written before the row that names it.
                key = write_key(ns, cid, task_id, idx)
                apart.append((channel, ("kv.put", (run, key, [kind, data], None))))
                rows.append((name, channel, kind, data, [task_id, channel, None, key,
                                                         task_path, idx]))
            else:
                rows.append((name, channel, kind, data, [task_id, channel, kind, data,
                                                         task_path, idx]))
        if apart:
            yield from self._put_apart(apart, thread_id, task_id, cid)
        ops = [("js.set", (run, wkey, json_name(name), row)) for name, _, _, _, row in rows]
        if seen is not None:
            _remember(seen, place)
        if not ops:
            return
        # After the writes, in their batch: was their checkpoint deleted (see
        # late_writes.py)?
        checks = gone_checks(run, ns, cid)
        results = yield from self._send_writes(ops + checks, thread_id, run, cid)
        results, checked = results[:len(ops)], results[len(ops):]
        full = [i for i, r in enumerate(results)
                if type(r) is ValueTooLarge and rows[i][4][2] is not None]
        if full:
            # The document has no room left for these (a step whose tasks wrote
            # more than a value may hold): kept apart after all.
            moved, stubs = [], []
            for i in full:
                name, channel, kind, data, row = rows[i]
                key = write_key(ns, cid, task_id, row[5])
                moved.append((channel, ("kv.put", (run, key, [kind, data], None))))
                stubs.append(("js.set", (run, wkey, json_name(name),
                                         [task_id, channel, None, key, task_path, row[5]])))
            yield from self._put_apart(moved, thread_id, task_id, cid)
            again = yield from self._send_writes(stubs + checks, thread_id, run, cid)
            for i, r in zip(full, again):
                results[i] = r
            checked = again[len(stubs):]
        raise_first(results)
        if found_gone(checked):
            yield from drop_writes(run, [(ns, cid)])

    def _put_writes_first(self, thread_id, run, ns, cid, wkey, entries, task_id, task_path):
        """Plan step: a task's writes as one transaction on the absence of their writes
        document; True when that wrote them (or they were deleted at once, their
        checkpoint being deleted: see late_writes.py), False when the document was
        there (or the rows would not fit in it, or a value is kept apart): the usual
        way then."""
        dumps = self.serde.dumps_typed
        sets = []
        for name, channel, idx, value in entries:
            kind, data = dumps(value)
            if len(data) > WRITE_INLINE_MAX:
                return False  # kept apart, before its row: the usual way
            sets.append(["js.set", [run, wkey, json_name(name),
                                    [task_id, channel, kind, data, task_path, idx]]])
        result, *checked = yield from self._send_writes(
            [("tx.commit", (run, [["js", wkey, 0]], sets))] + gone_checks(run, ns, cid),
            thread_id, run, cid)
        if isinstance(result, (TransactionConflict, ValueTooLarge)):
            return False
        raise_first([result])
        if found_gone(checked):
            yield from drop_writes(run, [(ns, cid)])
        return True

    def _put_apart(self, apart: list, thread_id, task_id, cid):
        """Write pending writes kept apart: [(channel, kv.put op)]; a value too large for
        any entry is refused naming its channel and task."""
        results = yield from self._send_writes([op for _, op in apart], thread_id,
                                               apart[0][1][1][0], cid)
        for (channel, op), r in zip(apart, results):
            if type(r) is ValueTooLarge:
                raise ValueTooLarge(
                    f"the write of task {task_id!r} to channel {channel!r} of thread "
                    f"{thread_id!r} is {len(op[1][2][1])} bytes serialized: {r}") from None
        raise_first(results)


class _GoneWithItsThread(Exception):
    """A put_writes' checkpoint went with its thread's delete: nothing is written."""


#: writes documents a saver remembers having seen exist (see `_put_writes`)
WRITES_SEEN_MAX = 4096


def _remember(seen: dict, place) -> None:
    """Remember that the writes document at `place` exists: later writes to it read
    their rows first. Forgetting it only costs a refused transaction."""
    seen[place] = True
    if len(seen) > WRITES_SEEN_MAX:
        try:  # the first remembered: a dict keeps the order of insertion
            seen.pop(next(iter(seen)), None)
        except (StopIteration, RuntimeError):  # emptied or changed meanwhile
            pass


def _done(prepared, versions: list) -> bool:
    """Whether a put whose `kv.put_many` gave `versions` is done: it has no LangGraph
    run id, or the index entry of its run id stands (see indexed.py), in which case
    the remembered head and mark versions move on to this put's."""
    indexing = prepared[3]
    if indexing is None:
        return True
    _, cell, thread = indexing
    head = versions[-1]  # the version this put gave its namespace's head
    mark = versions[0]  # and this saver's mark in the thread
    if cell is not None and head == cell[0] + 1 and thread.mark == mark - 1:
        cell[0] = head
        thread.mark = mark
        return True
    return False


def _too_large(prepared, exc: ValueTooLarge) -> ValueTooLarge:
    """`exc`, saying which channel of which thread's checkpoint was too large."""
    thread_id, ops = prepared[0], prepared[2]
    sizes = [(len(value[1]), key) for key, value in ops[0][1][1]
             if key.startswith("blob/") and isinstance(value[1], bytes)]
    if not sizes:
        return exc
    size, key = max(sizes)
    channel = unesc(key.split("/")[2])
    return ValueTooLarge(f"a checkpoint of thread {thread_id!r} was not stored ({exc}); its "
                         f"largest new channel value is {channel!r}, {size} bytes serialized")
