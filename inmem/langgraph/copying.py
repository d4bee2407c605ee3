"""`copy_thread`: every checkpoint, channel value and pending write of one thread into another.

A thread may hold more than one message carries, so its values are read and
written a batch at a time, each batch of a bounded size; what a checkpoint
points at is written before it, and the heads last, so a copy cut short
leaves no checkpoint without its values. A checkpoint one of whose channel
values is gone by the time the copy reads it was deleted from the source
meanwhile (a prune or delete_for_runs: a cut deletes records first) and is
not copied, nor are its pending writes; the newest checkpoint copied heads
its namespace. A head of the target newer than the source's is kept. The target is listed in the index entries of its run ids
(see `indexed.py`) after its checkpoints have landed.

A mixin of `InmemSaver`: it uses the saver's `prefix`, `_index` and `_send_bounded`
(`sending.py`).
"""

from __future__ import annotations

from inmem.errors import RunNotFound

from .driver import raise_first
from .keys import (SHORT, check_names, head_key, json_name, read_record, thread_run,
                   writes_key, writes_of)
from .reads import read_in_pieces

#: channel values (and pending-write documents) copy_thread reads per round trip
COPY_BLOBS = 64


class CopyPlans:
    """The plan of copy_thread."""

    def _copy_thread(self, source, target):
        src, dst = thread_run(self.prefix, source), thread_run(self.prefix, target)
        if len(dst) > SHORT:
            check_names(target, dst, "", "")
        # A thread may hold more than one message carries either way: its channel
        # values are read and written a batch at a time, each batch a bounded size.
        checkpoints, src_heads, blob_keys, write_keys, dst_heads = yield from read_in_pieces([
            ("kv.items", (src, "checkpoint/")), ("kv.items", (src, "head/")),
            ("kv.keys", (src, "blob/")), ("kv.keys", (src, "write/")),
            ("kv.items", (dst, "head/"))])
        if isinstance(checkpoints, RunNotFound):
            return None
        raise_first([checkpoints, src_heads, blob_keys, write_keys])
        heads = {}
        if not isinstance(dst_heads, RunNotFound):
            raise_first([dst_heads])
            heads = {read_record(v).ns: read_record(v) for _, v in dst_heads}
        records = [read_record(v) for _, v in checkpoints]
        # What a checkpoint points at is written before it, and the heads last: a copy
        # cut short leaves no checkpoint without its values.
        missing = set()  # channel values deleted since the records were read (a prune)
        yield from self._copy_values(src, dst, target, blob_keys, missing)
        if missing:
            # A record one of whose channel values is gone was deleted from the source
            # meanwhile (a cut deletes records before their values): it is not copied,
            # nor is a head naming it; the newest record copied heads its namespace.
            whole = [not missing.intersection(r.refs[:-1]) for r in records]
            checkpoints = [c for c, ok in zip(checkpoints, whole) if ok]
            records = [r for r, ok in zip(records, whole) if ok]
            newest: dict = {}
            for (_, v), r in zip(checkpoints, records):
                if r.ns not in newest or newest[r.ns][1].checkpoint_id < r.checkpoint_id:
                    newest[r.ns] = (v, r)
            src_heads = [(k, v) for k, v in src_heads
                         if not missing.intersection(read_record(v).refs[:-1])]
            named = {read_record(v).ns for _, v in src_heads}
            src_heads += [(head_key(ns), v) for ns, (v, _) in newest.items() if ns not in named]
        # The pending writes kept apart, of the records copied only.
        apart = writes_of(write_keys, [(r.ns, r.checkpoint_id) for r in records])
        write_keys = [k for keys in apart.values() for k in keys]
        yield from self._copy_values(src, dst, target, write_keys, set())
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
        yield from self._send_bounded(ops, {dst: target})
        # The target is listed in its run ids' index entries once its checkpoints have
        # landed, never in the same batch: an entry landing first (another shard) and
        # a delete_for_runs of the run in between would leave the copies unindexed.
        index = [("js.set", (self._index, run_id, json_name(str(target)), True))
                 for run_id in sorted({r.run_id for r in records if r.run_id})]
        if index:
            yield from self._send_bounded(index, {})
        return None

    def _copy_values(self, src, dst, target, keys: list, missing: set):
        """Plan step: copy the values at `keys` from thread run `src` to `dst`, a batch
        at a time, each as it is; the keys found without a value go in `missing`."""
        for start in range(0, len(keys), COPY_BLOBS):
            chunk = keys[start:start + COPY_BLOBS]
            (values,) = yield from read_in_pieces([("kv.get_many", (src, chunk))])
            raise_first([values])
            missing.update(k for k, v in zip(chunk, values) if v is None)
            yield from self._send_bounded([("kv.put", (dst, k, v, None))
                                           for k, v in zip(chunk, values) if v is not None],
                                          {dst: target})
