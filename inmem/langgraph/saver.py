"""`InmemSaver`: LangGraph's checkpointer (`BaseCheckpointSaver`) over an inmem database.

Every method is written once as a plan (see `driver.py`) and run by the
sync method on a `Database` and by the async method without holding the
event loop. `put`, the call a graph makes at every step, prepares its one
operation apart from its plan: on a sync database whose thread exists it
is sent as it is, one `kv.put_many` call (on an embedded store, straight
to the engine under its lock), and the plan runs only for what needs more
(a new thread, a LangGraph run id not indexed yet). The key layout is in `keys.py`; in short, a LangGraph thread
is one inmem run, so a thread's checkpoints, namespaces, channel blobs and
pending writes all live on the shard that owns it, and `list` on a thread
reads that one run.

Round trips per call: `put` 1 (the blobs, the checkpoint and the head of
its namespace in one `kv.put_many`, one write-ahead log record; the
thread's run is created on its first write), `get_tuple` 1 (one
`kv.get_linked`: the record, the blobs and the pending writes it names; 2
when a pending write over 4 KiB is kept apart, see keys.py),
`put_writes` 1 for special channels and 2 when a repeated write must keep
the first value, `list` 1 plus 1 per page of 64 results (each channel value
read once per page, however many of its checkpoints name it). A read whose
reply would be over a cluster's message limit is made again in pieces
(`reads.py`): a thread holds whatever state it was given, and every
checkpoint written reads back.

Channel versions are strings with a random tail (as LangGraph's own
savers make them), so a fork never writes a blob over another branch's
blob of the same version number.
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from typing import Any, AsyncIterator, Iterator, Sequence

from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)

from inmem.errors import (InvalidKey, InvalidStatusTransition, ProtocolError, RunExists,
                          RunNotFound, TransactionConflict, ValueTooLarge)
from inmem.values import KEY_BYTES_MAX

from .driver import is_async_database, may_block, raise_first, run_async, run_sync
from .keys import (DEFAULT_PREFIX, REFS, WRITE_INLINE_MAX, blob_prefix, checkpoint_key,
                   checkpoint_prefix, head_key, index_run, json_name, read_record,
                   stored_record, thread_run, thread_tag, unesc, write_key, write_prefix,
                   writes_key)
from .reads import read_in_pieces

#: results fetched per round trip while `list` walks a thread
LIST_PAGE = 64
#: channel values (and pending-write documents) copy_thread reads per round trip
COPY_BLOBS = 64
#: bytes of values sent per round trip where a call may write more than a message holds
SEND_BYTES = 8 << 20
#: times prune and delete_for_runs read a thread again that puts keep changing
_CUT_TRIES = 8
#: deletes per transaction of a prune or delete_for_runs (a message and a WAL record each)
_CUT_CHUNK = 1024
#: (run id, thread) pairs this saver remembers having indexed
_INDEXED_MAX = 4096


class InmemSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer that keeps every thread in an inmem database.

        import inmem
        from inmem.langgraph import InmemSaver
        saver = InmemSaver(inmem.connect("ipc:///tmp/inmem/coordinator.sock"))
        graph = builder.compile(checkpointer=saver)

    `db` is any inmem database: embedded (`inmem.open`) or a cluster
    (`inmem.connect`), or an asynchronous one. `prefix` starts the ids of
    the runs it creates (`<prefix>thread:<thread_id>`, `<prefix>runs`).
    `offload`: run the async methods' calls on a sync database in a worker
    thread; by default only when the database may block (a cluster, or a
    "strict" embedded store). `serde`: LangGraph's serializer (its default).

    Supports every checkpointer capability: put, put_writes, get_tuple,
    list (with `filter` on metadata, `before`, `limit`), delete_thread,
    delete_for_runs, copy_thread and prune ("keep_latest" or "delete").
    """

    def __init__(self, db, *, prefix: str = DEFAULT_PREFIX, offload: bool | None = None,
                 serde=None) -> None:
        super().__init__(serde=serde)
        if type(prefix) is not str:
            raise TypeError("prefix must be a str")
        self.db = db
        self.prefix = prefix
        self.offload = may_block(db) if offload is None else bool(offload)
        #: a sync database's `kv.put_many`, which `put` (and `aput`, when it runs
        #: inline) calls itself when a put is one operation: no plan to drive
        self._put_many = None if is_async_database(db) else db.kv.put_many
        #: likewise its `kv.get_linked`, which `get_tuple` (and `aget_tuple` inline) calls
        self._get_linked = None if is_async_database(db) else db.kv.get_linked
        self._index = index_run(prefix)
        self._tag = thread_tag(prefix)
        self._indexed: OrderedDict = OrderedDict()
        #: guards `_indexed`: one saver serves many threads (and the worker threads
        #: of its async methods), and a dict walked while another thread adds to
        #: it raises RuntimeError
        self._indexed_lock = threading.Lock()

    # -- the sync methods ----------------------------------------------------------

    def get_tuple(self, config) -> CheckpointTuple | None:
        """The checkpoint `config` names (its newest in the namespace without a checkpoint_id)."""
        if self._get_linked is not None:
            return self._get_tuple_now(config)
        return run_sync(self.db, self._get_tuple(config))

    def list(self, config, *, filter: dict[str, Any] | None = None, before=None,
             limit: int | None = None) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first: of `config`'s thread (and namespace, if it names one),
        or of every thread when `config` is None; `filter` matches metadata keys exactly."""
        chosen = run_sync(self.db, self._select(config, filter, before, limit))
        for start in range(0, len(chosen), LIST_PAGE):
            yield from run_sync(self.db, self._tuples(chosen[start:start + LIST_PAGE]))

    def put(self, config, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> dict:
        """Store a checkpoint and the channel values whose versions are new; its config."""
        return self._put_now(self._put_ops(config, checkpoint, metadata, new_versions))

    def put_writes(self, config, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str = "") -> None:
        """Store a task's pending writes against the checkpoint `config` names."""
        return run_sync(self.db, self._put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """Delete the thread: its run and everything in it."""
        return run_sync(self.db, self._delete_threads([thread_id]))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) that these LangGraph runs made."""
        return run_sync(self.db, self._delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, blob and pending write of one thread into another."""
        return run_sync(self.db, self._copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """"keep_latest": keep each namespace's newest checkpoint; "delete": delete the threads."""
        return run_sync(self.db, self._prune(thread_ids, strategy))

    # -- the async methods ---------------------------------------------------------

    async def aget_tuple(self, config) -> CheckpointTuple | None:
        """`get_tuple`, awaited: the checkpoint `config` names, in one round trip."""
        if self._get_linked is not None and not self.offload:
            return self._get_tuple_now(config)
        return await run_async(self.db, self._get_tuple(config), self.offload)

    async def alist(self, config, *, filter: dict[str, Any] | None = None, before=None,
                    limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        """`list`, as an async iterator: checkpoints newest first, fetched a page at a time."""
        chosen = await run_async(self.db, self._select(config, filter, before, limit),
                                 self.offload)
        for start in range(0, len(chosen), LIST_PAGE):
            page = await run_async(self.db, self._tuples(chosen[start:start + LIST_PAGE]),
                                   self.offload)
            for item in page:
                yield item

    async def aput(self, config, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                   new_versions: ChannelVersions) -> dict:
        """`put`, awaited: one round trip; the stored checkpoint's config."""
        if self._put_many is not None and not self.offload:
            return self._put_now(self._put_ops(config, checkpoint, metadata, new_versions))
        return await run_async(self.db, self._put(config, checkpoint, metadata, new_versions),
                               self.offload)

    async def aput_writes(self, config, writes: Sequence[tuple[str, Any]], task_id: str,
                          task_path: str = "") -> None:
        """`put_writes`, awaited: a task's pending writes against a checkpoint."""
        return await run_async(self.db, self._put_writes(config, writes, task_id, task_path),
                               self.offload)

    async def adelete_thread(self, thread_id: str) -> None:
        """`delete_thread`, awaited: the thread's run and everything in it."""
        return await run_async(self.db, self._delete_threads([thread_id]), self.offload)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """`delete_for_runs`, awaited: the checkpoints these LangGraph runs made."""
        return await run_async(self.db, self._delete_for_runs(run_ids), self.offload)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """`copy_thread`, awaited: every checkpoint, blob and write of one thread into another."""
        return await run_async(self.db, self._copy_thread(source_thread_id, target_thread_id),
                               self.offload)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """`prune`, awaited: "keep_latest" or "delete"."""
        return await run_async(self.db, self._prune(thread_ids, strategy), self.offload)

    def get_next_version(self, current: str | None, channel: None = None) -> str:
        """A version greater than `current`, with a random tail so forks never collide."""
        if current is None:
            n = 0
        elif isinstance(current, int):
            n = current
        else:
            n = int(str(current).split(".")[0])
        return f"{n + 1:032}.{random.random():016}"

    # -- plans ---------------------------------------------------------------------

    def _where(self, config) -> tuple:
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        return thread_id, thread_run(self.prefix, thread_id), conf.get("checkpoint_ns") or ""

    def _put(self, config, checkpoint, metadata, new_versions):
        return (yield from self._put_plan(self._put_ops(config, checkpoint, metadata,
                                                         new_versions)))

    def _put_ops(self, config, checkpoint, metadata, new_versions) -> tuple:
        """What a put sends: (thread id, its run, the operations, the (run id, run) pair
        to index or None, the answer)."""
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        run = thread_run(self.prefix, thread_id)
        ns = conf.get("checkpoint_ns") or ""
        dumps = self.serde.dumps_typed
        body = checkpoint.copy()
        values = body.pop("channel_values", None) or {}
        versions = checkpoint["channel_versions"]
        # Every channel's blob key goes in the refs; the new versions' are the keys written.
        refs = [f"{blob_prefix(ns, ch)}{v}" for ch, v in versions.items()]
        items = []
        for channel, version in new_versions.items():
            blob = dumps(values[channel]) if channel in values else ("empty", b"")
            items.append([f"{blob_prefix(ns, channel)}{version}", list(blob)])
        meta = get_checkpoint_metadata(config, metadata)
        run_id = meta.get("run_id")
        run_id = run_id if type(run_id) is str and run_id else None
        cid = checkpoint["id"]
        if len(run) > _SHORT or len(ns) > _SHORT:
            _check_names(thread_id, run, ns, checkpoint_key(ns, cid))
        refs.append(["json", writes_key(ns, cid)])
        record = stored_record(ns, cid, conf.get("checkpoint_id"), dumps(body), dumps(meta),
                               run_id, refs)
        items.append([checkpoint_key(ns, cid), record])
        items.append([head_key(ns), record])
        ops = [("kv.put_many", (run, items, None))]
        pair = None
        if run_id is not None and (run_id, run) not in self._indexed:
            pair = (run_id, run)
            ops.append(("js.set", (self._index, run_id, json_name(str(thread_id)), True)))
        return (thread_id, run, ops, pair,
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                  "checkpoint_id": cid}})

    def _put_now(self, prepared) -> dict:
        """Run a put on a sync database: one blocking `kv.put_many` when that is all it
        takes (the thread exists and its run id is indexed), else its plan."""
        ops = prepared[2]
        put_many = self._put_many
        if put_many is not None and len(ops) == 1:
            try:
                put_many(*ops[0][1])
            except RunNotFound as exc:  # a new thread: its run is made on its first write
                return run_sync(self.db, self._put_plan(prepared, [exc]))
            except ValueTooLarge as exc:
                raise _too_large(prepared, exc) from None
            return prepared[4]
        return run_sync(self.db, self._put_plan(prepared))

    def _put_plan(self, prepared, results=None):
        """The plan of a put `_put_ops` prepared; `results`: its operations' results, when
        they were sent already."""
        thread_id, run, ops, pair, answer = prepared
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
        if pair is not None:
            self._remember(pair)
        return answer

    def _put_writes(self, config, writes, task_id, task_path):
        thread_id, run, ns = self._where(config)
        wkey = writes_key(ns, config["configurable"]["checkpoint_id"])
        if len(run) > _SHORT or len(ns) > _SHORT:
            _check_names(thread_id, run, ns, wkey)
        entries = []
        for idx, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, idx)
            entries.append((f"{task_id}/{idx}", channel, idx, value))
        if any(idx >= 0 for _, _, idx, _ in entries):
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
            yield from self._put_apart(apart, thread_id, task_id)
        ops = [("js.set", (run, wkey, json_name(name), row)) for name, _, _, _, row in rows]
        if not ops:
            return
        results = yield from self._send(ops, {run: thread_id})
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
            yield from self._put_apart(moved, thread_id, task_id)
            again = yield from self._send(stubs, {run: thread_id})
            for i, r in zip(full, again):
                results[i] = r
        raise_first(results)

    def _put_apart(self, apart: list, thread_id, task_id):
        """Write pending writes kept apart: [(channel, kv.put op)]; a value too large for
        any entry is refused naming its channel and task."""
        results = yield from self._send([op for _, op in apart],
                                        {apart[0][1][1][0]: thread_id})
        for (channel, op), r in zip(apart, results):
            if type(r) is ValueTooLarge:
                raise ValueTooLarge(
                    f"the write of task {task_id!r} to channel {channel!r} of thread "
                    f"{thread_id!r} is {len(op[1][2][1])} bytes serialized: {r}") from None
        raise_first(results)

    def _get_key(self, config) -> tuple:
        """(thread id, its run, the key of the record `config` names)."""
        thread_id, run, ns = self._where(config)
        cid = get_checkpoint_id(config)
        return thread_id, run, checkpoint_key(ns, cid) if cid else head_key(ns)

    def _get_tuple(self, config):
        thread_id, run, key = self._get_key(config)
        (found,) = yield [("kv.get_linked", (run, key, REFS))]
        if type(found) is ProtocolError:  # more than one reply holds: read it in pieces
            found = yield from self._linked_in_pieces(run, key)
        if found is None or isinstance(found, RunNotFound):
            return None
        raise_first([found])
        apart = {}
        keys = _apart_keys(found[1][-1] if found[1] else None)
        if keys:
            (values,) = yield from read_in_pieces([("kv.get_many", (run, keys))])
            raise_first([values])
            apart = dict(zip(keys, values))
        return self._found_tuple(thread_id, found, apart)

    def _linked_in_pieces(self, run, key):
        """What `kv.get_linked` of a record answers, read as the record and then, in
        pieces, what it names: for a checkpoint whose values do not fit in one reply."""
        (value,) = yield [("kv.get", (run, key, None))]
        if value is None or isinstance(value, RunNotFound):
            return value
        raise_first([value])
        refs = value[REFS]
        blob_keys, (_, wkey) = refs[:-1], refs[-1]
        reads = [("js.get", (run, wkey, "$"))]
        if blob_keys:
            reads.append(("kv.get_many", (run, blob_keys)))
        got = yield from read_in_pieces(reads)
        raise_first(got)
        return value, (got[1] if blob_keys else []) + [got[0]]

    def _get_tuple_now(self, config) -> CheckpointTuple | None:
        """`get_tuple` on a sync database: its one `kv.get_linked` called as it is."""
        thread_id, run, key = self._get_key(config)
        try:
            found = self._get_linked(run, key, REFS)
        except RunNotFound:  # no such thread
            return None
        except ProtocolError:  # more than one reply holds: read it in pieces
            found = run_sync(self.db, self._linked_in_pieces(run, key))
            if found is None or isinstance(found, RunNotFound):
                return None
        if found is None:
            return None
        apart = {}
        keys = _apart_keys(found[1][-1] if found[1] else None)
        if keys:
            (values,) = run_sync(self.db, read_in_pieces([("kv.get_many", (run, keys))]))
            raise_first([values])
            apart = dict(zip(keys, values))
        return self._found_tuple(thread_id, found, apart)

    def _found_tuple(self, thread_id, found, apart) -> CheckpointTuple:
        value, linked = found
        record = read_record(value)
        checkpoint = self.serde.loads_typed(record.checkpoint)
        return self._tuple(thread_id, record, checkpoint, linked[:-1], linked[-1], None,
                           apart)

    def _select(self, config, filter, before, limit):
        """The records `list` returns, in order: [(thread_id, record, metadata)]."""
        if limit is not None and limit <= 0:
            return []
        if config is None:
            (runs,) = yield [("run.list", (None, self._tag, None))]
            raise_first([runs])
            threads = [(_thread_of(info), info.run_id) for info in runs]
            ns = cid = None
        else:
            thread_id, run, _ = self._where(config)
            threads = [(thread_id, run)]
            ns = config["configurable"].get("checkpoint_ns")
            cid = get_checkpoint_id(config)
        if not threads:
            return []
        results = yield from read_in_pieces([("kv.items", (run, checkpoint_prefix(ns)))
                                             for _, run in threads])
        before_id = get_checkpoint_id(before) if before else None
        loads = self.serde.loads_typed
        chosen = []
        for (thread_id, _), items in zip(threads, results):
            if isinstance(items, RunNotFound):
                continue
            raise_first([items])
            for _, value in items:
                record = read_record(value)
                if cid and record.checkpoint_id != cid:
                    continue
                if before_id and record.checkpoint_id >= before_id:
                    continue
                metadata = loads(record.metadata)
                if filter and not all(metadata.get(k) == v for k, v in filter.items()):
                    continue
                chosen.append((thread_id, record, metadata))
        chosen.sort(key=lambda c: c[1].checkpoint_id, reverse=True)
        return chosen if limit is None else chosen[:limit]

    def _tuples(self, chosen):
        """The CheckpointTuples of records `_select` chose, their blobs and writes fetched
        together: each blob once however many of them point at it (a channel that did not
        change is one blob for a whole history), in pieces if they do not fit in one reply."""
        loads = self.serde.loads_typed
        ops, plans, blob_keys = [], [], {}
        for thread_id, record, metadata in chosen:
            run = thread_run(self.prefix, thread_id)
            checkpoint = loads(record.checkpoint)
            keys = record.refs[:-1]  # its blobs' keys; the last names its writes
            blob_keys.setdefault(run, {}).update(dict.fromkeys(keys))
            plans.append((thread_id, run, record, metadata, checkpoint, keys, len(ops)))
            ops.append(("js.get", (run, writes_key(record.ns, record.checkpoint_id), "$")))
        at_blobs = len(ops)
        runs = [run for run, keys in blob_keys.items() if keys]
        ops += [("kv.get_many", (run, list(blob_keys[run]))) for run in runs]
        results = (yield from read_in_pieces(ops)) if ops else []
        blobs_of = {}
        for i, run in enumerate(runs):
            got = results[at_blobs + i]
            blobs_of[run] = got if isinstance(got, BaseException) else dict(
                zip(blob_keys[run], got))
        apart_keys: dict = {}
        for _, run, _, _, _, _, at in plans:
            keys = _apart_keys(results[at])
            if keys:
                apart_keys.setdefault(run, []).extend(keys)
        apart: dict = {}
        if apart_keys:
            runs = list(apart_keys)
            got = yield from read_in_pieces([("kv.get_many", (run, apart_keys[run]))
                                             for run in runs])
            for run, values in zip(runs, got):
                if not isinstance(values, BaseException):
                    apart[run] = dict(zip(apart_keys[run], values))
        out = []
        for thread_id, run, record, metadata, checkpoint, keys, at in plans:
            writes = results[at]
            if isinstance(writes, RunNotFound):
                continue  # the thread was deleted since it was listed
            blobs = blobs_of.get(run, {})
            raise_first([writes, blobs])
            out.append(self._tuple(thread_id, record, checkpoint, [blobs[k] for k in keys],
                                   writes, metadata, apart.get(run)))
        return out

    def _delete_threads(self, thread_ids):
        runs = [thread_run(self.prefix, t) for t in thread_ids]
        if not runs:
            return None
        results = yield [("run.delete", (run,)) for run in runs]
        raise_first(results)
        gone = set(runs)
        self._forget(lambda pair: pair[1] in gone)
        return None

    def _delete_for_runs(self, run_ids):
        run_ids = [r for r in dict.fromkeys(run_ids) if type(r) is str and r]
        if not run_ids:
            return None
        docs = yield [("js.get", (self._index, r, "$")) for r in run_ids]
        threads: dict = {}
        for doc in docs:
            if isinstance(doc, RunNotFound):
                return None  # nothing was ever indexed
            raise_first([doc])
            for thread_id in doc or ():
                threads[thread_id] = thread_run(self.prefix, thread_id)
        doomed_runs = set(run_ids)
        if threads:
            yield from self._cut_threads(
                list(threads.values()),
                lambda records: [r for r in records if r.run_id in doomed_runs])
        raise_first((yield [("js.delete", (self._index, r, "$")) for r in run_ids]),
                    allow=(RunNotFound,))
        self._forget(lambda pair: pair[0] in doomed_runs)
        return None

    def _copy_thread(self, source, target):
        src, dst = thread_run(self.prefix, source), thread_run(self.prefix, target)
        if len(dst) > _SHORT:
            _check_names(target, dst, "", "")
        # A thread may hold more than one message carries either way: its channel
        # values are read and written a batch at a time, each batch a bounded size.
        checkpoints, src_heads, blob_keys, write_keys, dst_heads = yield from read_in_pieces([
            ("kv.items", (src, "checkpoint/")), ("kv.items", (src, "head/")),
            ("kv.keys", (src, "blob/")), ("kv.keys", (src, "write/")),
            ("kv.items", (dst, "head/"))])
        if isinstance(checkpoints, RunNotFound):
            return None
        raise_first([checkpoints, src_heads, blob_keys, write_keys])
        blob_keys = blob_keys + write_keys  # values, each copied as it is
        heads = {}
        if not isinstance(dst_heads, RunNotFound):
            raise_first([dst_heads])
            heads = {read_record(v).ns: read_record(v) for _, v in dst_heads}
        records = [read_record(v) for _, v in checkpoints]
        # What a checkpoint points at is written before it, and the heads last: a copy
        # cut short leaves no checkpoint without its values.
        for start in range(0, len(blob_keys), COPY_BLOBS):
            keys = blob_keys[start:start + COPY_BLOBS]
            (values,) = yield from read_in_pieces([("kv.get_many", (src, keys))])
            raise_first([values])
            yield from self._send_bounded([("kv.put", (dst, k, v, None))
                                           for k, v in zip(keys, values) if v is not None],
                                          {dst: target})
        for start in range(0, len(records), COPY_BLOBS):
            chunk = records[start:start + COPY_BLOBS]
            docs = yield from read_in_pieces([
                ("js.get", (src, writes_key(r.ns, r.checkpoint_id), "$")) for r in chunk])
            raise_first(docs)
            yield from self._send_bounded(
                [("js.put", (dst, writes_key(r.ns, r.checkpoint_id), doc))
                 for r, doc in zip(chunk, docs) if doc], {dst: target})
        ops = [("kv.put", (dst, k, v, None)) for k, v in checkpoints]
        for _, v in src_heads:
            record = read_record(v)
            mine = heads.get(record.ns)
            if mine is None or mine.checkpoint_id < record.checkpoint_id:
                ops.append(("kv.put", (dst, head_key(record.ns), v, None)))
        for run_id in {r.run_id for r in records if r.run_id}:
            ops.append(("js.set", (self._index, run_id, json_name(str(target)), True)))
        yield from self._send_bounded(ops, {dst: target})
        return None

    def _prune(self, thread_ids, strategy):
        if strategy == "delete":
            return (yield from self._delete_threads(thread_ids))
        if strategy != "keep_latest":
            raise ValueError(f"unknown prune strategy {strategy!r}; use 'keep_latest' or 'delete'")
        runs = list(dict.fromkeys(thread_run(self.prefix, t) for t in thread_ids))
        if not runs:
            return None

        def older(records):
            newest: dict = {}
            for r in records:
                if r.ns not in newest or newest[r.ns].checkpoint_id < r.checkpoint_id:
                    newest[r.ns] = r
            keep = {r.checkpoint_id for r in newest.values()}
            return [r for r in records if r.checkpoint_id not in keep]

        yield from self._cut_threads(runs, older)
        return None

    # -- helpers -------------------------------------------------------------------

    def _cut_threads(self, runs: list, doomed_of):
        """Plan step: delete from each thread (run id) the checkpoints `doomed_of(records)`
        chooses among its records, with what only they use; a thread that a put changed
        meanwhile is read and cut again."""
        for _ in range(_CUT_TRIES):
            reads = [op for run in runs for op in _thread_reads(run)]
            results = yield from read_in_pieces(reads)
            cuts = []
            for i, run in enumerate(runs):
                items, blob_keys, write_keys = results[3 * i:3 * i + 3]
                if isinstance(items, RunNotFound):
                    continue
                raise_first([items, blob_keys, write_keys])
                records = [read_record(v) for _, v in items]
                cut = _cut(run, records, doomed_of(records), blob_keys, write_keys)
                if cut is not None:
                    cuts.append(cut)
            redo = yield from self._apply_cuts(cuts)
            if not redo:
                return
            runs = [run for run in runs if run in redo]
        raise TransactionConflict(f"threads {runs!r:.200} kept changing while their "
                                  f"checkpoints were being deleted; try again")

    def _apply_cuts(self, cuts: list):
        """Plan step: each thread's cut (see `_cut`) as one transaction on the heads of
        the namespaces it touches; the run ids of the threads to read and cut again.

        A put made since the thread was read moved a head: the cut chose from
        records that no longer are all there are, so a blob it deletes may be
        one the new checkpoint points at, and a head it moves back would hide
        the new checkpoint from every get_tuple (a graph would resume from the
        past). Such a thread is cut again from what it holds now.
        """
        heads = [(cut[0], ns) for cut in cuts for ns, _, _ in cut[3]]
        current = iter((yield [("kv.get_versioned", (run, head_key(ns)))
                               for run, ns in heads]) if heads else [])
        redo, pending = set(), []
        for run, deletes, late, moves, known in cuts:
            reads, writes, skip = [], [], False
            for ns, survivor, doomed_ids in moves:
                found = next(current)
                if isinstance(found, RunNotFound):
                    skip = True  # the thread was deleted meanwhile
                    continue
                key = head_key(ns)
                if found is None:
                    head, version = None, 0
                else:
                    raise_first([found])
                    head, version = read_record(found.value).checkpoint_id, found.version
                if head is not None and head not in known:
                    redo.add(run)  # a put since the read
                    skip = True
                    continue
                reads.append(["kv", key, version])
                if head is None or head in doomed_ids:
                    writes.append(["kv.put", [run, key, survivor.stored(), None]] if survivor
                                  else ["kv.delete", [run, key]])
            if not skip:
                # A large cut goes in several transactions, each on the same head
                # versions, the head moves (and what the old heads point at) in the
                # last: what one commits was unreferenced when it committed, and a
                # put in between stops the rest.
                ops = [[op, list(args)] for op, args in deletes]
                chunks = [ops[i:i + _CUT_CHUNK] for i in range(0, len(ops), _CUT_CHUNK)]
                chunks = chunks or [[]]
                chunks[-1] = chunks[-1] + [[op, list(args)] for op, args in late] + writes
                pending.append((run, reads, chunks))
        while pending:
            commits = [("tx.commit", (run, reads, chunks.pop(0)))
                       for run, reads, chunks in pending]
            done = set()
            for (_, (run, _, _)), result in zip(commits, (yield commits)):
                if type(result) is TransactionConflict:
                    redo.add(run)  # a put since the heads were read
                elif isinstance(result, RunNotFound):
                    done.add(run)  # the thread was deleted meanwhile
                else:
                    raise_first([result])
            pending = [p for p in pending if p[2] and p[0] not in redo and p[0] not in done]
        return redo

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

    def _remember(self, pair) -> None:
        with self._indexed_lock:
            self._indexed[pair] = None
            if len(self._indexed) > _INDEXED_MAX:
                self._indexed.popitem(last=False)

    def _forget(self, which) -> None:
        """Forget the indexed (run id, thread run) pairs for which `which(pair)` is true."""
        with self._indexed_lock:
            for pair in [p for p in self._indexed if which(p)]:
                del self._indexed[pair]

    def _tuple(self, thread_id, record, checkpoint, blobs, writes, metadata, apart=None):
        """The CheckpointTuple of a record; `checkpoint` (decoded for this call) is completed
        in place with its channel values; `apart`: the pending writes kept apart, by key."""
        loads = self.serde.loads_typed
        values = {}
        # blobs follow the order of channel_versions
        for channel, blob in zip(checkpoint.get("channel_versions", ()), blobs):
            if blob is not None and blob[0] != "empty":
                values[channel] = loads((blob[0], blob[1]))
        pending = []
        if writes:
            rows = writes.values()
            if len(writes) > 1:
                rows = sorted(rows, key=_write_order)
            pending = []
            for w in rows:
                if w[2] is not None:
                    pending.append((w[0], w[1], loads((w[2], w[3]))))
                    continue
                value = (apart or {}).get(w[3])
                if value is not None:  # (None: deleted with its checkpoint meanwhile)
                    pending.append((w[0], w[1], loads((value[0], value[1]))))
        checkpoint["channel_values"] = values
        ns = record.ns
        parent = None
        if record.parent_id:
            parent = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                       "checkpoint_id": record.parent_id}}
        return CheckpointTuple(
            {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                              "checkpoint_id": record.checkpoint_id}},
            checkpoint,
            loads(record.metadata) if metadata is None else metadata,
            parent,
            pending,
        )


def _size(value) -> int:
    """About how many bytes `value` (operation arguments) takes in a message."""
    if isinstance(value, (bytes, str)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return 8 + sum(_size(v) for v in value)
    if isinstance(value, dict):
        return 8 + sum(_size(k) + _size(v) for k, v in value.items())
    return 8


#: a name of at most this many characters is at most KEY_BYTES_MAX UTF-8 bytes
_SHORT = KEY_BYTES_MAX // 4


def _check_names(thread_id, run: str, ns: str, key: str) -> None:
    """InvalidKey, naming the thread or namespace, when the run id a thread id makes or
    the key a namespace makes is over KEY_BYTES_MAX UTF-8 bytes."""
    for what, name, made in (("thread id", thread_id, run), ("checkpoint_ns", ns, key)):
        size = len(made.encode("utf-8", "surrogatepass"))
        if size > KEY_BYTES_MAX:
            raise InvalidKey(
                f"{what} {str(name)[:40]!r}... ({len(str(name))} characters) is too long: it "
                f"makes the {'run id' if made is run else 'key'} {made[:60]!r}... of {size} "
                f"UTF-8 bytes, over {KEY_BYTES_MAX}")


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


def _apart_keys(doc) -> list:
    """The keys of the pending writes a writes document keeps apart (see keys.py)."""
    if not doc or not isinstance(doc, dict):
        return []
    return [w[3] for w in doc.values() if w[2] is None]


def _cut(run, records, doomed, blob_keys, write_keys):
    """What deleting `doomed` records of a thread takes, or None for none: (run, the
    deletes, the deletes to make last, [(namespace, its newest survivor or None, the
    doomed checkpoint ids of it)] for each namespace touched, the checkpoint ids read).

    The deletes are of the doomed records, their writes (those kept apart among
    `write_keys` too) and the blobs no survivor points at: records first, so a
    reader finds a checkpoint whole or not at all. What a doomed head (the copy
    of its namespace's newest record that get_tuple reads) points at is deleted
    last, with the move of the head.
    """
    if not doomed:
        return None
    gone = {(r.ns, r.checkpoint_id) for r in doomed}
    survivors = [r for r in records if (r.ns, r.checkpoint_id) not in gone]
    heads: dict = {}
    for r in records:
        if r.ns not in heads or heads[r.ns].checkpoint_id < r.checkpoint_id:
            heads[r.ns] = r
    late_ids = {(r.ns, r.checkpoint_id) for r in heads.values()} & gone
    late_refs = {k for r in heads.values() if (r.ns, r.checkpoint_id) in late_ids
                 for k in r.refs[:-1]}
    deletes = [("kv.delete", (run, checkpoint_key(r.ns, r.checkpoint_id))) for r in doomed]
    late = []
    for r in doomed:
        op = ("js.delete", (run, writes_key(r.ns, r.checkpoint_id), "$"))
        (late if (r.ns, r.checkpoint_id) in late_ids else deletes).append(op)
    newest: dict = {}
    for r in survivors:
        if r.ns not in newest or newest[r.ns].checkpoint_id < r.checkpoint_id:
            newest[r.ns] = r
    moves = [(ns, newest.get(ns), {r.checkpoint_id for r in doomed if r.ns == ns})
             for ns in {r.ns for r in doomed}]
    wanted = set()
    for r in survivors:
        wanted.update(r.refs[:-1])
    for k in blob_keys:
        if k not in wanted:
            (late if k in late_refs else deletes).append(("kv.delete", (run, k)))
    apart = tuple(write_prefix(r.ns, r.checkpoint_id) for r in doomed)
    late_apart = tuple(write_prefix(ns, cid) for ns, cid in late_ids)
    for k in write_keys:
        if k.startswith(apart):
            (late if late_apart and k.startswith(late_apart) else deletes).append(
                ("kv.delete", (run, k)))
    return run, deletes, late, moves, {r.checkpoint_id for r in records}


def _thread_reads(run) -> list:
    """What prune and delete_for_runs read of a thread: its records, the keys of its
    blobs and of its pending writes kept apart."""
    return [("kv.items", (run, "checkpoint/")), ("kv.keys", (run, "blob/")),
            ("kv.keys", (run, "write/"))]


def _write_order(w):
    return writes_sort_key(w[4], w[0], w[5])


def _thread_of(info):
    meta = info.metadata
    if isinstance(meta, dict) and "thread_id" in meta:
        return meta["thread_id"]
    return info.run_id.split("thread:", 1)[1]


def _plain(thread_id):
    return thread_id if type(thread_id) in (str, int) else str(thread_id)
