"""Transactions on one run: versioned reads, and commits that apply every write or none.

`TxOps` is one of the parts the `Engine` is assembled from. A client reads
through `tx_read` (each read returns the slot's version), buffers its writes,
and sends them with the versions it saw to `tx_commit`. The commit checks
those versions, then runs the writes through the ordinary operations with an
undo log switched on (`Engine._commit` fills it instead of the WAL queue); if
a write is refused, the undo log takes back what the earlier ones applied. The
whole transaction then goes to the WAL as one group.
"""

from __future__ import annotations

from typing import Callable

import msgpack

from inmem.display import short_value
from inmem.errors import InmemError, InvalidKey, InvalidValue, TransactionConflict
from inmem.ops import TX_WRITE_OPS
from inmem.values import check_key

from .effects import (CODE, EV_APPEND, JS_DEL, JS_PUT, KEY, KV_DEL, KV_PUT, RUN_STATUS, ST_DEL,
                      ST_PUT, TR_ADD, check_group_size, restore_entry, unapply_event, unapply_trace)
from .entries import entry_value, entry_version, live_value
from .key_order import forget
from .runs import RunData

_unpackb = msgpack.unpackb

_TX_NAMESPACES = frozenset(("kv", "st", "js", "ev"))
#: how a conflict names what changed, by namespace
_NAMES = {"kv": "key", "st": "state cell", "js": "document", "ev": "the event log"}


class TxOps:
    """The transaction operations of the engine."""

    runs: dict[str, RunData]
    clock: Callable[[], int]
    log: list | None
    _undo: list | None

    def tx_read(self, run: str, ns: str, key: str) -> list:
        """[found, value, slot version] of a kv key, state cell, JSON doc or the event count.

        The slot version counts deletes too (a delete is a write), so a read of
        an absent key validates only while nothing touched that slot.
        """
        try:
            r = self.runs[run]
        except (KeyError, TypeError):
            r = self._run(run)
        if ns == "kv":
            table = r.kv
        elif ns == "st":
            table = r.state
        elif ns == "js":
            table = r.json
        elif ns == "ev":
            return [True, len(r.events), len(r.events)]
        else:
            raise InvalidValue(f"unknown namespace {short_value(ns)}")
        if type(key) is not str:
            check_key(key)
        e = table.get(key)
        if e is None:
            check_key(key)
            return [False, None, 0]
        data = live_value(e, self.clock()) if ns == "kv" else entry_value(e)
        if data is None:
            return [False, None, entry_version(e)]
        return [True, _unpackb(data, raw=False), entry_version(e)]

    def tx_commit(self, run: str, reads: list, writes: list) -> list:
        """Validate the read set, then apply every write or none.

        `reads` is a list of [namespace, key, version seen]; `writes` a list of
        [op, args] whose first argument is the run. Returns each write's result.
        """
        # Only writes need a run that takes them: reads validate on any run.
        r = self._writable(run) if writes else self._run(run)
        _check_read_set(reads)
        _check_write_set(run, writes)
        for ns, key, seen in reads:
            current = _slot_version(r, ns, key)
            if current != seen:
                what = "the event log" if ns == "ev" else f"{_NAMES[ns]} {key!r}"
                raise TransactionConflict(
                    f"{what} in run {run!r} changed (read version {seen}, now {current})")
        undo: list = []
        journal_len = len(r.journal)
        self._undo = undo
        results = []
        try:
            for op, args in writes:
                results.append(self.execute(op, args))
        except BaseException:
            _rollback(r, undo, journal_len)
            raise
        finally:
            self._undo = None
        if undo:
            try:
                effs = r.journal.effects(journal_len, len(r.journal))
                if self.log is not None:
                    self._log(r.run_id, effs, r.journal)
                else:
                    check_group_size(effs)
            except InmemError:
                _rollback(r, undo, journal_len)
                raise
            # Its writes journaled with the trim held off (an undo could not follow it):
            # an in-memory history= limit applies now, as after any other write.
            if len(r.journal.items) > r.journal.trim_at:
                self._trim_history(r)
        return results


def undo_entry(r: RunData, eff: tuple) -> tuple:
    """What taking `eff` back needs, recorded before it is applied: (table, key, previous entry).

    For an event or a trace, whose tables only grow, it is (None, code, effect).
    """
    code = eff[CODE]
    if code in (KV_PUT, KV_DEL):
        return (r.kv, eff[KEY], r.kv.get(eff[KEY]))
    if code in (ST_PUT, ST_DEL):
        return (r.state, eff[KEY], r.state.get(eff[KEY]))
    if code in (JS_PUT, JS_DEL):
        return (r.json, eff[KEY], r.json.get(eff[KEY]))
    return (None, code, eff)


def _rollback(r: RunData, undo: list, journal_len: int) -> None:
    """Take back a failed transaction's effects, newest first, and cut them from the journal."""
    for table, key, prev in reversed(undo):
        if table is not None:
            restore_entry(table, key, prev)
            if prev is None and table is r.kv:
                forget(r, key)
        elif key == EV_APPEND:
            unapply_event(r, prev)
        elif key == TR_ADD:
            unapply_trace(r, prev)
        elif key == RUN_STATUS:  # pragma: no cover - refused by TX_WRITE_OPS
            raise RuntimeError("run status changes are not transactional")
    r.journal.truncate(journal_len)


def _slot_version(r: RunData, ns: str, key: str) -> int:
    if ns == "ev":
        return len(r.events)
    e = (r.kv if ns == "kv" else r.state if ns == "st" else r.json).get(key)
    return 0 if e is None else entry_version(e)


def _check_read_set(reads) -> None:
    """InvalidValue unless `reads` is a list of [namespace, key, version seen]."""
    if type(reads) not in (list, tuple):
        raise InvalidValue(f"a transaction's reads must be a list, got {type(reads).__name__}")
    for item in reads:
        if type(item) not in (list, tuple) or len(item) != 3:
            raise InvalidValue(f"a transaction read is [namespace, key, version], got {short_value(item)}")
        ns, key, seen = item
        if type(ns) is not str or ns not in _TX_NAMESPACES:
            raise InvalidValue(f"unknown namespace {ns!r:.40} in a transaction read "
                               f"(one of {sorted(_TX_NAMESPACES)})")
        if type(key) is not str:
            raise InvalidKey(f"a transaction read's key must be a str, got {type(key).__name__}")
        if type(seen) is not int:
            raise InvalidValue(f"a transaction read's version must be an int, got {seen!r:.40}")


def _check_write_set(run: str, writes) -> None:
    """InvalidValue unless `writes` is a list of [op, args] writes to `run`."""
    if type(writes) not in (list, tuple):
        raise InvalidValue(f"a transaction's writes must be a list, got {type(writes).__name__}")
    for item in writes:
        if type(item) not in (list, tuple) or len(item) != 2:
            raise InvalidValue(f"a transaction write is [op, args], got {short_value(item)}")
        op, args = item
        if type(op) is not str or op not in TX_WRITE_OPS:
            raise InvalidValue(f"{op!r:.60} cannot be used inside a transaction")
        if type(args) not in (list, tuple) or not args or args[0] != run:
            raise InvalidValue(f"every write of a transaction is [op, [run, ...]] naming its "
                               f"run; {op} does not")
