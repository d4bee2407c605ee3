"""Pending writes that come after their checkpoint was deleted, and are deleted in turn.

A task still running while `delete_for_runs` or `prune` deletes its
checkpoint (a cancelled run, a prune of the thread) writes afterwards; stored
as they come, its writes document and the entries of writes kept apart (see
`keys.py`) would stay in the thread where no checkpoint names them, no read
shows them, and no later cut finds them (a cut finds writes by the
checkpoints it deletes). Such writes cannot be refused by the absence of
their checkpoint alone: LangGraph's "async" durability may send a step's
writes before its checkpoint's put has landed, and those must stay.

So a cut notes each checkpoint it deletes: `gone/<ns>/<checkpoint_id>`
(`keys.gone_key`), an empty KV entry that expires after `GONE_TTL_S`, put in
the cut's transaction before the record's delete. Every `put_writes` asks,
in the batch of its last writes and after them, whether its checkpoint is
noted gone (`gone_checks`, one `kv.exists`); if it is, and the checkpoint
is not there, its writes are deleted (`drop_writes`): the writes document
and the entries kept apart, in a transaction on the version of the
checkpoint's absent key, so a checkpoint put again meanwhile (a
`copy_thread` brings it back) keeps them. A write landing between a cut's
read of the thread and its delete is caught by the cut itself: its document
goes with the checkpoint's, and the cut lists the thread's entries kept
apart again once it is done (`sweep_after_cut`), deleting those of the
checkpoints it deleted, and the documents of checkpoints whose delete
committed in a round that was then cut again. Writes later than GONE_TTL_S after the delete are kept, as writes
before their checkpoint are.

`delete_thread` takes the whole run, notes and all, and writes finding their
thread missing would make it again around a writes document alone. So it
also leaves a note in the index run, `gone-thread/<hash of the thread id>`
(`keys.thread_gone_key`), for GONE_TTL_S, holding a uuid6 made as it
deleted; writes that find their thread missing (`PutPlans._send_writes`)
and whose checkpoint id (a uuid6, time-ordered) is older than the note are
dropped, nothing made. A checkpoint made after the delete (the thread used
again, its first writes before its put) makes the thread again as before.
"""

from __future__ import annotations

from inmem.errors import RunNotFound, TransactionConflict

from .driver import raise_first
from .keys import checkpoint_key, gone_key, write_prefix, writes_key, writes_of
from .reads import read_in_pieces


def gone_checks(run: str, ns: str, checkpoint_id: str) -> list:
    """The read a put_writes sends after its writes: is its checkpoint noted gone?
    (Whether it is there again is `drop_writes`' to ask, in the rare case.)"""
    return [("kv.exists", (run, gone_key(ns, checkpoint_id)))]


def found_gone(results: list) -> bool:
    """Whether `gone_checks`' results say the checkpoint was deleted by a cut."""
    return results[0] is True


def drop_writes(run: str, places: list, apart: dict | None = None):
    """Plan step: delete the writes of the checkpoints `places` ([(ns, checkpoint id)])
    of thread `run` that are not there: each one's writes document and its entries
    kept apart (`apart`: (ns, id) -> their keys, when listed already; else listed
    here), in a transaction on its checkpoint key's version, so one put again
    meanwhile keeps its writes."""
    if not places:
        return
    reads = [("tx.read", (run, "kv", checkpoint_key(ns, cid))) for ns, cid in places]
    if apart is None:
        reads += [("kv.keys", (run, write_prefix(ns, cid))) for ns, cid in places]
    got = yield from read_in_pieces(reads)
    if any(isinstance(r, RunNotFound) for r in got):
        return  # the thread was deleted meanwhile, and everything in it
    raise_first(got)
    keys = apart if apart is not None else dict(zip(places, got[len(places):]))
    commits = []
    for (ns, cid), (found, _, version) in zip(places, got):
        if found:
            continue  # put again meanwhile
        writes = [["js.delete", [run, writes_key(ns, cid), "$"]]]
        writes += [["kv.delete", [run, k]] for k in keys.get((ns, cid), ())]
        commits.append(("tx.commit", (run, [["kv", checkpoint_key(ns, cid), version]], writes)))
    if commits:
        raise_first((yield commits), allow=(TransactionConflict, RunNotFound))


def sweep_after_cut(done: dict, again: dict):
    """Plan step, once a cut is done: delete the writes the cut left of the checkpoints
    it deleted. `done`: thread run -> [(ns, id)] it deleted; `again`: thread run ->
    [(ns, id)] deleted in a round whose later transactions were refused (their
    documents may be left)."""
    runs = [run for run in done if done[run]]
    if not runs:
        return
    listed = yield from read_in_pieces([("kv.keys", (run, "write/")) for run in runs])
    for run, keys in zip(runs, listed):
        if isinstance(keys, RunNotFound):
            continue
        raise_first([keys])
        apart = writes_of(keys, done[run])
        places = sorted(set(apart) | set(again.get(run, ())))
        yield from drop_writes(run, places, apart)
