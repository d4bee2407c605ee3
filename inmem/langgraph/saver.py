"""`InmemSaver`: LangGraph's checkpointer (`BaseCheckpointSaver`) over an inmem database.

This module holds the saver's public face: its constructor and the sync and
async methods LangGraph calls, each of which runs a plan written once in the
module of its job:

- `puts.py`: put and put_writes (the writes of a graph's steps);
- `queries.py`: get_tuple and list, and `tuples.py`, the CheckpointTuple a
  stored record reads back as;
- `cuts.py`: delete_thread, delete_for_runs and prune, and `late_writes.py`,
  pending writes that land after a cut deleted their checkpoint;
- `copying.py`: copy_thread;
- `sending.py`: writes that create a thread's run on its first write;
- `indexed.py`: which LangGraph run ids a saver has indexed on which threads.

Every method is written once as a plan (see `driver.py`) and run by the
sync method on a `Database` and by the async method without holding the
event loop; `put` and `get_tuple` call a sync database's one operation
directly when that is all they take, and `aput` and `aget_tuple` await an
asynchronous database's likewise. The key layout is in `keys.py`; in
short, a LangGraph thread is one inmem run, so a thread's checkpoints,
namespaces, channel blobs and pending writes all live on the shard that
owns it, and `list` on a thread reads that one run.

Round trips per call: `put` 1 (the blobs, the checkpoint and the head of
its namespace in one `kv.put_many`, one write-ahead log record; the
thread's run is created on its first write, and a LangGraph run id indexed,
in a second round trip after the checkpoint, when `indexed.py` says so),
`get_tuple` 1 (one
`kv.get_linked`: the record, the blobs and the pending writes it names; 2
when a pending write over 4 KiB is kept apart, see keys.py),
`put_writes` 1 for special channels and on a cluster for a checkpoint's
first writes, else 2 (a repeated write must keep the first value), `list` 1 plus 1 per page of 64 results (each channel value
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
from typing import Any, AsyncIterator, Iterator, Sequence

from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)

from .copying import CopyPlans
from .cuts import CutPlans
from .driver import is_async_database, is_remote, may_block, run_async, run_sync
from .indexed import shared_heads
from .keys import DEFAULT_PREFIX, index_run, thread_run, thread_tag
from .puts import PutPlans
from .queries import LIST_PAGE, QueryPlans
from .sending import SendingPlans


class InmemSaver(PutPlans, QueryPlans, CutPlans, CopyPlans, SendingPlans,
                 BaseCheckpointSaver[str]):
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
        #: an asynchronous database's calls, which `aput` and `aget_tuple` await
        #: themselves when one operation is all they take
        self._acall = db._backend.call if is_async_database(db) else None
        self._index = index_run(prefix)
        self._tag = thread_tag(prefix)
        #: where LangGraph run ids were indexed, and the heads seen there: shared by
        #: every saver over `db` and `prefix` in this process (see indexed.py)
        self._indexed = shared_heads(db, prefix)
        #: namespace -> its keys, which every put and get_tuple makes (see keys.py)
        self._ns_keys: dict = {}
        #: on a cluster, (thread run, writes key) of the writes documents seen to exist:
        #: a checkpoint's first pending writes are one transaction (see puts.py); None
        #: in process, where the round trip it saves costs nothing
        self._writes_seen: dict | None = {} if is_remote(db) else None

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
        """Delete the thread: its run and everything in it, and its listing in the index
        entries of the LangGraph runs it held checkpoints of."""
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
        if self._acall is not None:
            return await self._aget_tuple_now(config)
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
        if self._acall is not None:
            return await self._aput_now(self._put_ops(config, checkpoint, metadata,
                                                      new_versions))
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

    # -- shared by the plans -------------------------------------------------------

    def _where(self, config) -> tuple:
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        return thread_id, thread_run(self.prefix, thread_id), conf.get("checkpoint_ns") or ""
