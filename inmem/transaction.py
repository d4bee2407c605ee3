"""Optimistic transactions on one run.

Reads go to the shard as they happen and record the slot version they saw
(a delete is a write, so an absent key that was deleted has a version too);
writes are buffered here and shown to later reads of the same transaction.
`commit` sends the read set and the write set in one `tx.commit` operation:
the shard checks every version and applies all writes or none.
"""

from __future__ import annotations


from inmem.shard import jsonpath

from .sections import as_tags
from .errors import InvalidValue
from .values import check_key, check_value, copy_value

_DELETED = object()


class _TxSection:
    __slots__ = ("_tx",)

    def __init__(self, tx):
        self._tx = tx


class TxKV(_TxSection):
    __slots__ = ()

    def get(self, key, default=None):
        value = self._tx._read("kv", key)
        return default if value is _DELETED else value

    def exists(self, key) -> bool:
        return self._tx._read("kv", key) is not _DELETED

    def put(self, key, value, ttl=None):
        check_value(value)
        self._tx._write("kv.put", (key, value, ttl), ("kv", key, copy_value(value)))

    def delete(self, key):
        self._tx._write("kv.delete", (key,), ("kv", key, _DELETED))

    def cas(self, key, expected_version, value):
        self._tx._write("kv.cas", (key, expected_version, value), ("kv", key, value))


class TxEvents(_TxSection):
    __slots__ = ()

    def append(self, event_type, payload=None):
        self._tx._write("ev.append", (event_type, payload), None)
        self._tx._pending_events += 1

    def count(self) -> int:
        tx = self._tx
        return tx._read("ev", "") + tx._pending_events

    def read(self, sequence):
        self._tx._read("ev", "")
        return self._tx._call("ev.read", (self._tx.run, sequence))

    def head(self):
        self._tx._read("ev", "")
        return self._tx._call("ev.head", (self._tx.run,))

    def range(self, start, end):
        self._tx._read("ev", "")
        return self._tx._call("ev.range", (self._tx.run, start, end))


class TxState(_TxSection):
    __slots__ = ()

    def read(self, name):
        value = self._tx._read("st", name)
        if value is _DELETED:
            return None
        from .types import State
        return State(value, self._tx._reads.get(("st", name), 0), 0)

    def init(self, name, value):
        self._tx._write("st.init", (name, value), ("st", name, value))

    def set(self, name, value):
        self._tx._write("st.set", (name, value), ("st", name, value))

    def cas(self, name, expected_version, value):
        self._tx._write("st.cas", (name, expected_version, value), ("st", name, value))

    def delete(self, name):
        self._tx._write("st.delete", (name,), ("st", name, _DELETED))


class TxTraces(_TxSection):
    __slots__ = ()

    def record(self, trace_type, data, parent_id=None, tags=(), metadata=None):
        self._tx._write("tr.record", (trace_type, data, parent_id, as_tags(tags), metadata),
                        None)

    def get(self, trace_id):
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
    __slots__ = ()

    def get(self, key, path="$"):
        return json_at(self._tx._read_doc(key), path)

    def put(self, key, doc):
        check_value(doc)
        self._tx._write("js.put", (key, doc), ("js", key, copy_value(doc)))

    def set(self, key, path, value):
        steps = jsonpath.parse(path)
        check_value(value)
        doc = json_set(self._tx._read_doc(key), steps, path, value)
        self._tx._write("js.set", (key, path, value), ("js", key, doc))

    def delete(self, key, path="$"):
        steps = jsonpath.parse(path)
        doc = json_delete(self._tx._read_doc(key), steps, path)
        self._tx._write("js.delete", (key, path), ("js", key, doc))

    def array_push(self, key, path, value):
        steps = jsonpath.parse(path)
        check_value(value)
        doc = json_push(self._tx._read_doc(key), steps, path, value)
        self._tx._write("js.push", (key, path, value), ("js", key, doc))

    def array_pop(self, key, path):
        steps = jsonpath.parse(path)
        doc = json_pop(self._tx._read_doc(key), steps, path)
        self._tx._write("js.pop", (key, path), ("js", key, doc))


class Transaction:
    """Buffered writes plus a read set, committed atomically by the shard."""

    def __init__(self, call, run):
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
        return TxKV(self)

    @property
    def events(self) -> TxEvents:
        return TxEvents(self)

    @property
    def state(self) -> TxState:
        return TxState(self)

    @property
    def traces(self) -> TxTraces:
        return TxTraces(self)

    @property
    def json(self) -> TxJSON:
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
        self.results = self._call("tx.commit", self._commit_args())
        return self.results

    def _commit_args(self) -> tuple:
        if self._done:
            raise InvalidValue("this transaction has already been committed or aborted")
        self._done = True
        reads = [[ns, key, version] for (ns, key), version in self._reads.items()]
        return (self.run, reads, self._writes)

    def abort(self) -> None:
        self._done = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
            return False
        if not self._done:
            self.commit()
        return False

