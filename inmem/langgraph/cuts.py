"""Deleting checkpoints: `delete_thread`, `delete_for_runs` and `prune`.

`delete_thread` deletes the thread's run, and takes the thread out of the
index entries of the LangGraph runs it held checkpoints of (`_unlist`), which
would otherwise name a thread that is gone for as long as the index lives.
`delete_for_runs` and `prune` ("keep_latest") cut a thread instead: they
read its records, choose the doomed ones, and delete them with their pending
writes and the channel values no surviving checkpoint points at (`_cut`), as
transactions on the heads of the namespaces they touch (`apply_cuts`), so a
put that lands meanwhile is never undone: the thread is read and cut again
(`cut_threads`); each checkpoint deleted is noted gone for an hour, and the
writes that land for it are deleted too (`late_writes.py`). `delete_for_runs`
finds a run's threads in its index entry (see `indexed.py`) and deletes the
entry as it read it, in a transaction: a thread a put listed meanwhile is cut
too. `prune` ("keep_latest") then takes each thread out of the entries of the
runs it no longer holds a checkpoint of (`_unlist_pruned`); with "delete" it
deletes the threads as `delete_thread` does.

A mixin of `InmemSaver`: it uses the saver's `prefix`, `_index` and
`_indexed`.
"""

from __future__ import annotations

from langgraph.checkpoint.base.id import uuid6

from inmem.errors import InvalidValue, RunNotFound, TransactionConflict

from .driver import raise_first
from .keys import (GONE_TTL_S, checkpoint_key, gone_key, head_key, json_name, read_record,
                   thread_gone_key, thread_run, write_prefix, writes_key)
from .late_writes import sweep_after_cut
from .reads import read_in_pieces

#: times prune and delete_for_runs read a thread again that puts keep changing
_CUT_TRIES = 8
#: deletes per transaction of a prune or delete_for_runs (a message and a WAL record each)
_CUT_CHUNK = 1024


class CutPlans:
    """The plans of delete_thread, delete_for_runs and prune."""

    def _delete_threads(self, thread_ids):
        thread_ids = list(thread_ids)
        for t in thread_ids:
            thread_run(self.prefix, t)  # InvalidValue for one that is no id, before a dict
        thread_ids = list(dict.fromkeys(thread_ids))
        runs = [thread_run(self.prefix, t) for t in thread_ids]
        if not runs:
            return None
        # The LangGraph runs whose index entries list these threads, and those entries
        # as they are before the threads go (see `_unlist`).
        listed = yield from read_in_pieces([("kv.items", (run, "checkpoint/")) for run in runs])
        of_run: dict = {}  # LangGraph run id -> the thread ids it lists that go
        for thread_id, items in zip(thread_ids, listed):
            if isinstance(items, RunNotFound):
                continue
            raise_first([items])
            for run_id in {read_record(v).run_id for _, v in items} - {None}:
                of_run.setdefault(run_id, []).append(str(thread_id))
        # With them, a note of each delete, for the writes still coming for the
        # threads' checkpoints (see late_writes.py): its time, as a uuid6 to compare
        # checkpoint ids with.
        now = str(uuid6())
        notes = [("kv.put", (self._index, thread_gone_key(t), now, GONE_TTL_S))
                 for t in thread_ids]
        read = yield from self._send([("tx.read", (self._index, "js", r)) for r in of_run]
                                     + notes, {})
        raise_first(read[len(of_run):])
        entries = read[:len(of_run)]
        results = yield [("run.delete", (run,)) for run in runs]
        raise_first(results)
        gone = set(runs)
        self._indexed.forget_threads(gone)
        yield from self._unlist(of_run, entries)
        return None

    def _unlist(self, of_run: dict, entries: list):
        """Plan step, once threads are deleted or pruned: take them out of the index
        entries of LangGraph runs they hold no checkpoint of (`of_run`: run id ->
        thread ids; `entries`: each entry's `tx.read` from before the threads were
        read), deleting an entry left empty. Each entry is changed only as it was
        read: one a put of its run changed since (another thread listed, or the
        thread listed again) is read again, and then the threads, and only those
        still holding nothing of the run are taken out. What keeps changing for
        _CUT_TRIES rounds stays listed, a listing too many, which delete_for_runs
        of the run reads past."""
        pending = list(zip(of_run.items(), entries))
        for _ in range(_CUT_TRIES):
            commits, tried = [], []
            for (run_id, threads), got in pending:
                if isinstance(got, RunNotFound):
                    return  # no index at all
                raise_first([got])
                exists, doc, version = got
                if not exists or not isinstance(doc, dict):
                    continue
                mine = [t for t in threads if t in doc]
                if not mine:
                    continue
                if len(mine) == len(doc):
                    deletes = [["js.delete", [self._index, run_id, "$"]]]
                else:
                    deletes = [["js.delete", [self._index, run_id, json_name(t)]]
                               for t in mine]
                commits.append(("tx.commit", (self._index, [["js", run_id, version]],
                                              deletes)))
                tried.append((run_id, mine))
            if not commits:
                return
            results = yield commits
            raise_first(results, allow=(TransactionConflict, RunNotFound))
            changed = [place for place, r in zip(tried, results)
                       if type(r) is TransactionConflict]
            if not changed:
                return
            entries = yield [("tx.read", (self._index, "js", run_id)) for run_id, _ in changed]
            threads = sorted({t for _, ts in changed for t in ts})
            listed = yield from read_in_pieces([
                ("kv.items", (thread_run(self.prefix, t), "checkpoint/")) for t in threads])
            held = {}
            for t, items in zip(threads, listed):
                if isinstance(items, RunNotFound):
                    held[t] = set()
                    continue
                raise_first([items])
                held[t] = {read_record(v).run_id for _, v in items}
            pending = [((run_id, [t for t in ts if run_id not in held[t]]), got)
                       for (run_id, ts), got in zip(changed, entries)]

    def _delete_for_runs(self, run_ids):
        _refuse_a_bare_str(run_ids, "run_ids", "delete_for_runs")
        run_ids = [r for r in dict.fromkeys(run_ids) if type(r) is str and r]
        if not run_ids:
            return None
        doomed_runs = set(run_ids)

        def doomed_of(records):
            return [r for r in records if r.run_id in doomed_runs]

        pending = run_ids
        for _ in range(_CUT_TRIES):
            found = yield [("tx.read", (self._index, "js", r)) for r in pending]
            threads: dict = {}
            seen = []
            for run_id, got in zip(pending, found):
                if isinstance(got, RunNotFound):
                    return None  # nothing was ever indexed
                raise_first([got])
                exists, doc, version = got
                if exists:
                    seen.append((run_id, version))
                    for thread_id in doc or ():
                        threads[thread_id] = thread_run(self.prefix, thread_id)
            if threads:
                yield from cut_threads(list(threads.values()), doomed_of)
            # An index entry is deleted as it was read, or not at all: a put of the
            # run meanwhile may have listed another thread in it, which is read and
            # cut first (deleting the entry would leave that thread's checkpoints
            # where no later delete_for_runs finds them).
            commits = [("tx.commit", (self._index, [["js", run_id, version]],
                                      [["js.delete", [self._index, run_id, "$"]]]))
                       for run_id, version in seen]
            results = (yield commits) if commits else []
            raise_first(results, allow=(TransactionConflict, RunNotFound))
            pending = [run_id for (run_id, _), result in zip(seen, results)
                       if type(result) is TransactionConflict]
            if not pending:
                self._indexed.forget(lambda place: place[0] in doomed_runs)
                return None
        raise TransactionConflict(f"runs {pending!r:.200} kept being indexed on more threads "
                                  f"while their checkpoints were being deleted; try again")

    def _prune(self, thread_ids, strategy):
        _refuse_a_bare_str(thread_ids, "thread_ids", "prune")
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

        pruned = yield from cut_threads(runs, older)
        thread_of: dict = {}
        for t in thread_ids:
            thread_of.setdefault(thread_run(self.prefix, t), t)
        yield from self._unlist_pruned(thread_of, pruned)
        return None

    def _unlist_pruned(self, thread_of: dict, pruned: dict):
        """Plan step after a prune: take each thread out of the index entries of the
        LangGraph runs it no longer holds a checkpoint of (`pruned`: thread run -> the
        run ids of the checkpoints pruned; `thread_of`: thread run -> thread id).

        The entries are read first, then the threads again: a put of such a run to
        the thread that lands after that read lists the thread again after it, so
        the entry is not as read and is left as it is (`_unlist`). A put that trusts
        its memory lists nothing, but it follows a put of the same run to the same
        namespace with nothing written there since: that checkpoint is its
        namespace's newest, which prune keeps, so the run is not one of these."""
        runs = [run for run in pruned if pruned[run]]
        candidates = sorted({r for run in runs for r in pruned[run]})
        if not candidates:
            return
        entries = yield [("tx.read", (self._index, "js", r)) for r in candidates]
        listed = yield from read_in_pieces([("kv.items", (run, "checkpoint/")) for run in runs])
        of_run: dict = {r: [] for r in candidates}
        for run, items in zip(runs, listed):
            if isinstance(items, RunNotFound):
                continue  # deleted meanwhile: delete_thread took it out
            raise_first([items])
            held = {read_record(v).run_id for _, v in items}
            for r in pruned[run] - held:
                of_run[r].append(str(thread_of[run]))
        yield from self._unlist(of_run, entries)


def cut_threads(runs: list, doomed_of):
    """Plan step: delete from each thread (run id) the checkpoints `doomed_of(records)`
    chooses among its records, with what only they use; a thread that a put changed
    meanwhile is read and cut again. Then the writes that landed for the deleted
    checkpoints while the cut worked are deleted too (see late_writes.py). Returns
    thread run -> the LangGraph run ids of the checkpoints it deleted there."""
    done: dict = {}  # thread run -> [(ns, id)] of the checkpoints its cuts deleted
    again: dict = {}  # likewise, of rounds whose later transactions were refused
    run_ids: dict = {}  # thread run -> the run ids of the checkpoints deleted there
    for _ in range(_CUT_TRIES):
        reads = [op for run in runs for op in _thread_reads(run)]
        results = yield from read_in_pieces(reads)
        cuts, doomed_now = [], {}
        for i, run in enumerate(runs):
            items, blob_keys, write_keys = results[3 * i:3 * i + 3]
            if isinstance(items, RunNotFound):
                continue
            raise_first([items, blob_keys, write_keys])
            records = [read_record(v) for _, v in items]
            doomed = doomed_of(records)
            cut = _cut(run, records, doomed, blob_keys, write_keys)
            if cut is not None:
                cuts.append(cut)
                doomed_now[run] = [(r.ns, r.checkpoint_id) for r in doomed]
                run_ids.setdefault(run, set()).update(r.run_id for r in doomed if r.run_id)
        redo = yield from apply_cuts(cuts)
        for run, places in doomed_now.items():
            done.setdefault(run, []).extend(places)
            if run in redo:
                again.setdefault(run, []).extend(places)
        if not redo:
            yield from sweep_after_cut(done, again)
            return run_ids
        runs = [run for run in runs if run in redo]
    raise TransactionConflict(f"threads {runs!r:.200} kept changing while their "
                              f"checkpoints were being deleted; try again")


def apply_cuts(cuts: list):
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
    # Each record's delete follows the note that it is gone (see late_writes.py).
    deletes = [op for r in doomed for op in (
        ("kv.put", (run, gone_key(r.ns, r.checkpoint_id), None, GONE_TTL_S)),
        ("kv.delete", (run, checkpoint_key(r.ns, r.checkpoint_id))))]
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


def _refuse_a_bare_str(ids, name: str, method: str) -> None:
    """InvalidValue for a str (or bytes) where a list of ids belongs: iterated, it names one
    id per letter, so prune("12", strategy="delete") would delete threads "1" and "2"."""
    if isinstance(ids, (str, bytes)):
        raise InvalidValue(f"{method} takes a list of {name.replace('_ids', '')} ids, not one "
                           f"{type(ids).__name__}: {method}([{ids!r:.60}])")
