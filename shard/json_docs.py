"""JSON document operations of a run: whole documents, and edits at a path.

`JsonOps` is one of the parts the `Engine` is assembled from. A document's
entry is the packed form of the last JS_PUT or JS_DEL on its key
(`shard.entries`: value, version, time); every edit stores the whole document
again, with the next version. Paths are parsed and walked by `shard.jsonpath`.

A delete of the whole document leaves a tombstone, reclaimed once dead for
the engine's `dead_key_retention_s` (`shard.dead_keys`): it leaves the
table, and the run's JSON floor (`json_floors`) rises to its version; a
key that is not in the table takes `floor + 1` on its first write, by any
call (put, set, array_push, a transaction's), so a document written again
continues above every version it had. A reclaimed document reads as the
tombstone did: missing.
"""

from __future__ import annotations

from typing import Callable

import msgpack

from inmem.values import check_key, check_value

from . import jsonpath
from .dead_keys import DeadKeys
from .effects import JS_DEL, JS_PUT
from .entries import entry_value, entry_version
from .runs import RunData

_unpackb = msgpack.unpackb


class JsonOps:
    """The JSON document operations of the engine."""

    clock: Callable[[], int]
    dead_json: DeadKeys
    #: run id -> its document floor (shard.dead_keys): only runs that reclaimed a document
    json_floors: dict

    def _js_doc(self, r: RunData, key: str) -> tuple:
        """(the document decoded or None, the slot's version) of `key`: the version its next
        write continues from (the run's floor for a key not in the table)."""
        e = r.json.get(key)
        if e is None:
            floors = self.json_floors
            return None, (floors.get(r.run_id, 0) if floors else 0)
        data = entry_value(e)
        return (None if data is None else _unpackb(data, raw=False)), entry_version(e)

    def _js_write(self, r: RunData, key: str, doc, version: int) -> int:
        data = self._encode(doc)
        self._commit(r, (JS_PUT, key, data, version + 1, self.clock()))
        return version + 1

    def js_put(self, run: str, key: str, doc) -> int:
        r = self._writable(run)
        check_key(key)
        e = r.json.get(key)
        if e is None:
            floors = self.json_floors
            version = floors.get(r.run_id, 0) if floors else 0
        else:
            version = entry_version(e)
        return self._js_write(r, key, doc, version)

    def js_get(self, run: str, key: str, path: str = "$"):
        r = self._run(run)
        check_key(key)
        steps = jsonpath.parse(path)
        doc, _ = self._js_doc(r, key)
        if doc is None:
            return None
        return jsonpath.get(doc, steps, path)

    def js_set(self, run: str, key: str, path: str, value) -> int:
        r = self._writable(run)
        check_key(key)
        steps = jsonpath.parse(path)
        check_value(value)
        doc, version = self._js_doc(r, key)
        doc = jsonpath.set_(doc, steps, value, path)
        return self._js_write(r, key, doc, version)

    def js_delete(self, run: str, key: str, path: str = "$") -> bool:
        r = self._writable(run)
        check_key(key)
        steps = jsonpath.parse(path)
        doc, version = self._js_doc(r, key)
        if not steps:
            # A document that holds null is there to delete: only a missing one is not.
            e = r.json.get(key)
            if e is None or entry_value(e) is None:
                return False
            now = self.clock()  # the delete's time, and when its tombstone died
            self._commit(r, (JS_DEL, key, None, version + 1, now))
            self._note_tombstone(self.dead_json, r.run_id, key, now)
            return True
        if doc is None:
            return False
        if not jsonpath.delete(doc, steps, path):
            return False
        self._js_write(r, key, doc, version)
        return True

    def js_push(self, run: str, key: str, path: str, value) -> int:
        r = self._writable(run)
        check_key(key)
        steps = jsonpath.parse(path)
        check_value(value)
        doc, version = self._js_doc(r, key)
        doc, arr = jsonpath.array_at(doc, steps, path, create=True)
        arr.append(value)
        self._js_write(r, key, doc, version)
        return len(arr)

    def js_pop(self, run: str, key: str, path: str):
        r = self._writable(run)
        check_key(key)
        steps = jsonpath.parse(path)
        doc, version = self._js_doc(r, key)
        if doc is None:
            return None
        doc, arr = jsonpath.array_at(doc, steps, path, create=False)
        if not arr:
            return None
        value = arr.pop()
        self._js_write(r, key, doc, version)
        return value
