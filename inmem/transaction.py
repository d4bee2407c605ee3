"""Optimistic transactions on one run.

Reads go to the shard as they happen and record the slot version they saw
(a delete is a write, so an absent key that was deleted has a version too);
writes are buffered here and shown to later reads of the same transaction.
`commit` sends the read set and the write set in one `tx.commit` operation:
the shard checks every version and applies all writes or none.
"""

from __future__ import annotations

from typing import Any, Callable

from inmem.shard import jsonpath

from .sections import as_tags
from .errors import InvalidValue
from .types import Event, State, Trace
from .values import check_key, check_value, copy_value

_DELETED = object()


class _TxSection:
    __slots__ = ("_tx",)

    def __init__(self, tx):
        self._tx = tx


class TxKV(_TxSection):
    """`tx.kv`: the run's keys, read at their current version, written at commit."""
    __slots__ = ()

    def get(self, key: str, default: Any = None) -> Any:
        """The value this transaction sees at `key` (its own writes included), or `default`."""
        value = self._tx._read("kv", key)
        return default if value is _DELETED else value

    def exists(self, key: str) -> bool:
        """Whether `key` holds a value for this transaction."""
        return self._tx._read("kv", key) is not _DELETED

    def put(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Queue a put (`ttl` in seconds); its version is in `tx.results` after commit."""
        check_value(value)
        self._tx._write("kv.put", (key, value, ttl), ("kv", key, copy_value(value)))

    def delete(self, key: str) -> None:
        """Queue a delete of `key`."""
        self._tx._write("kv.delete", (key,), ("kv", key, _DELETED))

    def cas(self, key: str, expected_version: int, value: Any) -> None:
        """Queue a compare-and-swap; a wrong version fails the commit with VersionMismatch."""
        self._tx._write("kv.cas", (key, expected_version, value), ("kv", key, value))


class TxEvents(_TxSection):
    """`tx.events`: the run's log; reading it makes the commit fail if another append lands."""
    __slots__ = ()

    def append(self, event_type: str, payload: Any = None) -> None:
        """Queue an append; the Event (sequence, hash) is in `tx.results` after commit."""
        self._tx._write("ev.append", (event_type, payload), None)
        self._tx._pending_events += 1

    def count(self) -> int:
        """The log's length as this transaction sees it (its queued appends included)."""
        tx = self._tx
        return tx._read("ev", "") + tx._pending_events

    def read(self, sequence: int) -> Event | None:
        """The committed event at `sequence`, or None."""
        self._tx._read("ev", "")
        return self._tx._call("ev.read", (self._tx.run, sequence))

    def head(self) -> Event | None:
        """The newest committed event, or None."""
        self._tx._read("ev", "")
        return self._tx._call("ev.head", (self._tx.run,))

    def range(self, start: int, end: int) -> list[Event]:
        """Committed events with start <= sequence < end."""
        self._tx._read("ev", "")
        return self._tx._call("ev.range", (self._tx.run, start, end))


class TxState(_TxSection):
    """`tx.state`: the run's state cells."""
    __slots__ = ()

    def read(self, name: str) -> State | None:
        """The cell as this transaction sees it (`updated_at` is 0 here), or None."""
        value = self._tx._read("st", name)
        if value is _DELETED:
            return None
        return State(value, self._tx._reads.get(("st", name), 0), 0)

    def init(self, name: str, value: Any) -> None:
        """Queue creating the cell; StateExists fails the commit if it is there."""
        self._tx._write("st.init", (name, value), ("st", name, value))

    def set(self, name: str, value: Any) -> None:
        """Queue writing the cell."""
        self._tx._write("st.set", (name, value), ("st", name, value))

    def cas(self, name: str, expected_version: int, value: Any) -> None:
        """Queue a compare-and-swap of the cell."""
        self._tx._write("st.cas", (name, expected_version, value), ("st", name, value))

    def delete(self, name: str) -> None:
        """Queue deleting the cell."""
        self._tx._write("st.delete", (name,), ("st", name, _DELETED))


class TxTraces(_TxSection):
    """`tx.traces`: record traces at commit."""
    __slots__ = ()

    def record(self, trace_type: str, data: dict, parent_id: str | None = None,
               tags: list[str] | tuple[str, ...] = (), metadata: Any = None) -> None:
        """Queue recording a trace; its id is in `tx.results` after commit."""
        self._tx._write("tr.record", (trace_type, data, parent_id, as_tags(tags), metadata),
                        None)

    def get(self, trace_id: str) -> Trace | None:
        """The committed trace with this id, or None."""
        return self._tx._call("tr.get", (self._tx.run, trace_id))


# A JSON write in a transaction reads the document, changes a copy and keeps
# it as the transaction's own view; these are the changes, shared with the
# asyncio transaction, which reads the document with an await.

def json_at(doc, path):
    if doc is None:
        return None
    return copy_value(jsonpath.get(doc, jsonpath.parse(path), path))


def json_set(doc, steps, path, value):
    return jsonpath.set_(copy_value(doc), steps, copy_value(value), path)


def json_delete(doc, steps, path):
    doc = copy_value(doc)
    if doc is not None and steps:
        jsonpath.delete(doc, steps, path)
    elif not steps:
        doc = None
    return _DELETED if doc is None else doc


def json_push(doc, steps, path, value):
    doc, arr = jsonpath.array_at(copy_value(doc), steps, path, create=True)
    arr.append(copy_value(value))
    return doc


def json_pop(doc, steps, path):
    doc = copy_value(doc)
    if doc is not None:
        doc, arr = jsonpath.array_at(doc, steps, path, create=False)
        if arr:
            arr.pop()
    return _DELETED if doc is None else doc


class TxJSON(_TxSection):
    """`tx.json`: the run's documents; path edits apply to the document this transaction sees."""
    __slots__ = ()

    def get(self, key: str, path: str = "$") -> Any:
        """The value at `path` as this transaction sees it, or None for a missing key."""
        return json_at(self._tx._read_doc(key), path)

    def put(self, key: str, doc: Any) -> None:
        """Queue storing the whole document."""
        check_value(doc)
        self._tx._write("js.put", (key, doc), ("js", key, copy_value(doc)))

    def set(self, key: str, path: str, value: Any) -> None:
        """Queue setting the value at `path` (InvalidPath now if it does not fit)."""
        steps = jsonpath.parse(path)
        check_value(value)
        doc = json_set(self._tx._read_doc(key), steps, path, value)
        self._tx._write("js.set", (key, path, value), ("js", key, doc))

    def delete(self, key: str, path: str = "$") -> None:
        """Queue deleting the value at `path` (`$`: the whole document)."""
        steps = jsonpath.parse(path)
        doc = json_delete(self._tx._read_doc(key), steps, path)
        self._tx._write("js.delete", (key, path), ("js", key, doc))

    def array_push(self, key: str, path: str, value: Any) -> None:
        """Queue appending to the array at `path` (created if absent)."""
        steps = jsonpath.parse(path)
        check_value(value)
        doc = json_push(self._tx._read_doc(key), steps, path, value)
        self._tx._write("js.push", (key, path, value), ("js", key, doc))

    def array_pop(self, key: str, path: str) -> None:
        """Queue removing the array's last item; the item is in `tx.results` after commit."""
        steps = jsonpath.parse(path)
        doc = json_pop(self._tx._read_doc(key), steps, path)
        self._tx._write("js.pop", (key, path), ("js", key, doc))


class Transaction:
    """Buffered writes plus a read set, committed atomically by the shard.

    Made by `db.transaction(run)`; use it as a context manager, which
    commits when the block ends and aborts on an exception:

        with db.transaction(run) as tx:
            n = tx.kv.get("count", 0)
            tx.kv.put("count", n + 1)
    """

    def __init__(self, call: Callable[[str, tuple], Any], run: str):
        self._call = call
        self.run = run
        self._reads: dict = {}
        self._writes: list = []
        self._local: dict = {}
        self._pending_events = 0
        self._done = False
        self.results: list | None = None

    # The sections are made on each access rather than held: held, each would
    # point back here, a reference cycle that keeps a dropped transaction (and
    # the Database connection it calls) alive until a garbage collection.

    @property
    def kv(self) -> TxKV:
        """The run's keys and values, as this transaction sees them."""
        return TxKV(self)

    @property
    def events(self) -> TxEvents:
        """The run's event log, as this transaction sees them."""
        return TxEvents(self)

    @property
    def state(self) -> TxState:
        """The run's state cells, as this transaction sees them."""
        return TxState(self)

    @property
    def traces(self) -> TxTraces:
        """The run's traces, as this transaction sees them."""
        return TxTraces(self)

    @property
    def json(self) -> TxJSON:
        """The run's JSON documents, as this transaction sees them."""
        return TxJSON(self)

    def _read(self, ns, key):
        """The value this transaction sees at (ns, key), or _DELETED when there is none."""
        slot = self._slot(ns, key)
        if slot in self._local:
            return self._seen_locally(slot)
        return self._record_read(slot, self._call("tx.read", (self.run, ns, key)))

    def _slot(self, ns, key) -> tuple:
        if type(key) is not str:
            check_key(key)  # an unhashable key would fail the lookup below with a TypeError
        return (ns, key)

    def _seen_locally(self, slot):
        value = self._local[slot]
        return copy_value(value) if value is not _DELETED else value

    def _record_read(self, slot, reply):
        found, value, version = reply
        self._reads.setdefault(slot, version)
        return value if found else _DELETED

    def _read_doc(self, key):
        doc = self._read("js", key)
        return None if doc is _DELETED else doc

    def _write(self, op, args, local):
        if self._done:
            raise InvalidValue("this transaction has already been committed or aborted")
        if local is not None and type(local[1]) is not str:
            check_key(local[1])
        self._writes.append((op, (self.run, *(copy_value(a) if type(a) in (dict, list) else a
                                               for a in args))))
        if local is not None:
            ns, key, value = local
            self._local[(ns, key)] = value

    def commit(self) -> list:
        """Apply every queued write, or none; each write's result, in order (also `results`).

        TransactionConflict if anything this transaction read has changed
        since; InvalidValue if it was already committed or aborted.
        """
        self.results = self._call("tx.commit", self._commit_args())
        return self.results

    def _commit_args(self) -> tuple:
        if self._done:
            raise InvalidValue("this transaction has already been committed or aborted")
        self._done = True
        reads = [[ns, key, version] for (ns, key), version in self._reads.items()]
        return (self.run, reads, self._writes)

    def abort(self) -> None:
        """Drop the queued writes; nothing is sent."""
        self._done = True

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
            return False
        if not self._done:
            self.commit()
        return False

