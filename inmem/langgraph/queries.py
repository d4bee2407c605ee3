"""The saver's reads: `get_tuple` (one checkpoint) and `list` (a thread's history).

`get_tuple` is one `kv.get_linked`: the record, the blobs and the writes
document it names (see `keys.py`), plus one `kv.get_many` when some pending
writes are kept apart; a record whose values do not fit in one reply is read
in pieces (`reads.py`). `list` chooses its records first (`_select`), then
fetches them a page at a time (`_tuples`), each channel value once per page
however many of its checkpoints name it.

A mixin of `InmemSaver`: it uses the saver's `db`, `prefix`, `serde`, `_tag`,
`_ns_keys`, `_get_linked` and `_acall`.
"""

from __future__ import annotations

from langgraph.checkpoint.base import CheckpointTuple, get_checkpoint_id

from inmem.errors import InvalidValue, ProtocolError, RunNotFound
from inmem.sections import run_cursor_arg

from .driver import raise_first, run_async, run_sync
from .keys import (REFS, checkpoint_prefix, namespace_keys, read_record, thread_run,
                   writes_key)
from .reads import read_in_pieces
from .tuples import apart_keys, checkpoint_tuple

#: results fetched per round trip while `list` walks a thread
LIST_PAGE = 64
#: runs asked for at a time when `list` walks every thread of the saver
RUNS_PAGE = 1000


class QueryPlans:
    """The plans of get_tuple and list."""

    def _get_key(self, config) -> tuple:
        """(thread id, its run, the key of the record `config` names)."""
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        ns = conf.get("checkpoint_ns") or ""
        keys = self._ns_keys.get(ns)
        if keys is None:
            keys = namespace_keys(self._ns_keys, ns)
        cid = conf.get("checkpoint_id")  # get_checkpoint_id
        return (thread_id, thread_run(self.prefix, thread_id),
                f"{keys.checkpoints}{cid}" if cid else keys.head)

    def _get_tuple(self, config):
        thread_id, run, key = self._get_key(config)
        (found,) = yield [("kv.get_linked", (run, key, REFS))]
        if type(found) is ProtocolError:  # more than one reply holds: read it in pieces
            found = yield from self._linked_in_pieces(run, key)
        if found is None or isinstance(found, RunNotFound):
            return None
        raise_first([found])
        apart = {}
        keys = apart_keys(found[1][-1] if found[1] else None)
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
        keys = apart_keys(found[1][-1] if found[1] else None)
        if keys:
            (values,) = run_sync(self.db, read_in_pieces([("kv.get_many", (run, keys))]))
            raise_first([values])
            apart = dict(zip(keys, values))
        return self._found_tuple(thread_id, found, apart)

    async def _aget_tuple_now(self, config) -> CheckpointTuple | None:
        """`_get_tuple_now` on an asynchronous database: its `kv.get_linked` awaited as
        it is, no plan to drive unless it takes more."""
        thread_id, run, key = self._get_key(config)
        try:
            found = await self._acall("kv.get_linked", (run, key, REFS))
        except RunNotFound:  # no such thread
            return None
        except ProtocolError:  # more than one reply holds: read it in pieces
            found = await run_async(self.db, self._linked_in_pieces(run, key))
            if found is None or isinstance(found, RunNotFound):
                return None
        if found is None:
            return None
        apart = {}
        keys = apart_keys(found[1][-1] if found[1] else None)
        if keys:
            (values,) = await run_async(self.db,
                                        read_in_pieces([("kv.get_many", (run, keys))]))
            raise_first([values])
            apart = dict(zip(keys, values))
        return self._found_tuple(thread_id, found, apart)

    def _found_tuple(self, thread_id, found, apart) -> CheckpointTuple:
        value, linked = found
        record = read_record(value)
        loads = self.serde.loads_typed
        checkpoint = loads(record.checkpoint)
        return checkpoint_tuple(loads, thread_id, record, checkpoint, linked[:-1], linked[-1],
                                None, apart)

    def _select(self, config, filter, before, limit):
        """The records `list` returns, in order: [(thread_id, record, metadata)]."""
        _check_list_arguments(filter, before, limit)
        if limit is not None and limit <= 0:
            return []
        if config is None:
            # Every thread of this saver: its runs a page at a time (one reply of all of
            # them fails on a cluster once their infos pass max_message_bytes).
            runs: list = []
            after = None
            while True:
                (page,) = yield [("run.list", (None, self._tag, None, after, RUNS_PAGE))]
                raise_first([page])
                runs += page
                if len(page) < RUNS_PAGE:
                    break
                after = run_cursor_arg(page[-1])
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
        apart_of: dict = {}
        for _, run, _, _, _, _, at in plans:
            keys = apart_keys(results[at])
            if keys:
                apart_of.setdefault(run, []).extend(keys)
        apart: dict = {}
        if apart_of:
            runs = list(apart_of)
            got = yield from read_in_pieces([("kv.get_many", (run, apart_of[run]))
                                             for run in runs])
            for run, values in zip(runs, got):
                if not isinstance(values, BaseException):
                    apart[run] = dict(zip(apart_of[run], values))
        out = []
        for thread_id, run, record, metadata, checkpoint, keys, at in plans:
            writes = results[at]
            if isinstance(writes, RunNotFound):
                continue  # the thread was deleted since it was listed
            blobs = blobs_of.get(run, {})
            raise_first([writes, blobs])
            out.append(checkpoint_tuple(loads, thread_id, record, checkpoint,
                                        [blobs[k] for k in keys], writes, metadata,
                                        apart.get(run)))
        return out


def _check_list_arguments(filter, before, limit) -> None:
    """InvalidValue for a `list` argument it cannot use, before anything is read (a slice
    or a comparison would raise a bare TypeError from deep inside)."""
    if limit is not None and type(limit) is not int:
        raise InvalidValue(f"limit must be an int or None, got {type(limit).__name__}")
    if filter is not None and not isinstance(filter, dict):
        raise InvalidValue(f"filter must be a dict of metadata keys and values or None, got "
                           f"{type(filter).__name__}")
    if before is not None and not isinstance(before, dict):
        raise InvalidValue(f"before must be a config naming a checkpoint (a dict with "
                           f"configurable.checkpoint_id) or None, got {type(before).__name__}")


def _thread_of(info):
    meta = info.metadata
    if isinstance(meta, dict) and "thread_id" in meta:
        return meta["thread_id"]
    return info.run_id.split("thread:", 1)[1]
