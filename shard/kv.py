"""Key-value operations of a run: versioned, optionally expiring entries.

`KVOps` is one of the parts the `Engine` is assembled from. A KV entry is the
last effect written to its key (`shard.effects`: KEY, VALUE, VERSION, TS,
EXPIRES); a delete leaves an entry with no value, so the key's version keeps
counting. Expired entries stay until overwritten and are skipped by reads.
"""

from __future__ import annotations

from typing import Callable

import msgpack

from inmem.errors import InvalidKey, InvalidValue, VersionMismatch
from inmem.types import Versioned
from inmem.values import KEY_BYTES_MAX, check_key

from .effects import EXPIRES, KV_DEL, KV_PUT, TS, VALUE, VERSION, apply_kv
from .lifecycle import WRITABLE
from .runs import RunData

_unpackb = msgpack.unpackb


class KVOps:
    """The KV operations of the engine."""

    runs: dict[str, RunData]
    clock: Callable[[], int]
    log: list | None
    _undo: list | None

    def kv_put(self, run: str, key: str, value, ttl: float | None = None) -> int:
        # The hottest write: the common case takes no method call it can avoid;
        # anything unusual falls back to the general checks.
        try:
            r = self.runs.get(run)
        except TypeError:  # unhashable: not a run id; _writable names the problem
            r = None
        if r is None or r.status not in WRITABLE:
            r = self._writable(run)
        if type(key) is not str or not key.isascii() or not 0 < len(key) <= KEY_BYTES_MAX:
            check_key(key)
        data = self._encode(value)
        now = self.clock()
        old = r.kv.get(key)
        version = 1 if old is None else old[VERSION] + 1
        exp = None if ttl is None else now + self._ttl_us(ttl)
        eff = (KV_PUT, key, data, version, now, exp)
        if self._undo is None:
            # _commit, unrolled: no undo entry to keep outside a transaction.
            if self.log is not None:
                self._log(r.run_id, (eff,))
            apply_kv(r, eff)
            r.journal.append(eff)
        else:
            self._commit(r, eff)
        return version

    def _kv_live(self, r: RunData, key: str) -> tuple | None:
        """The entry at `key` when it holds a live (not deleted, not expired) value."""
        e = r.kv.get(key)
        if e is None or e[VALUE] is None:
            return None
        exp = e[EXPIRES]
        if exp is not None and exp <= self.clock():
            return None
        return e

    def kv_get(self, run: str, key: str, default=None):
        try:
            e = self.runs[run].kv.get(key)
        except (KeyError, TypeError):
            # A missing or unhashable run, or an unhashable key: these name which.
            self._run(run)
            check_key(key)
            raise
        if e is None or e[VALUE] is None:
            check_key(key)
            return default
        if e[EXPIRES] is not None and e[EXPIRES] <= self.clock():
            return default
        return _unpackb(e[VALUE], raw=False)

    def kv_get_versioned(self, run: str, key: str) -> Versioned | None:
        e = self._kv_live(self._run(run), check_key(key))
        return None if e is None else Versioned(_unpackb(e[VALUE], raw=False), e[VERSION], e[TS])

    def kv_exists(self, run: str, key: str) -> bool:
        return self._kv_live(self._run(run), check_key(key)) is not None

    def kv_delete(self, run: str, key: str) -> bool:
        r = self._writable(run)
        check_key(key)
        old = r.kv.get(key)
        if old is None or old[VALUE] is None:
            return False
        live = old[EXPIRES] is None or old[EXPIRES] > self.clock()
        self._commit(r, (KV_DEL, key, None, old[VERSION] + 1, self.clock(), None))
        return live

    def kv_cas(self, run: str, key: str, expected_version: int, value) -> int:
        r = self._writable(run)
        check_key(key)
        if type(expected_version) is not int:
            raise InvalidValue(f"expected_version must be an int, got {type(expected_version).__name__}")
        e = self._kv_live(r, key)
        actual = 0 if e is None else e[VERSION]
        if actual != expected_version:
            raise VersionMismatch(expected_version, actual)
        data = self._encode(value)
        old = r.kv.get(key)
        version = 1 if old is None else old[VERSION] + 1
        self._commit(r, (KV_PUT, key, data, version, self.clock(), None))
        return version

    def kv_get_many(self, run: str, keys: list[str]) -> list:
        r = self._run(run)
        if type(keys) not in (list, tuple):
            raise InvalidValue("keys must be a list of str")
        out = []
        for key in keys:
            e = self._kv_live(r, check_key(key))
            out.append(None if e is None else _unpackb(e[VALUE], raw=False))
        return out

    def kv_keys(self, run: str, prefix: str = "") -> list[str]:
        r = self._run(run)
        if type(prefix) is not str:
            raise InvalidKey("prefix must be a str")
        now = self.clock()
        return sorted(k for k, e in r.kv.items()
                      if e[VALUE] is not None and k.startswith(prefix)
                      and (e[EXPIRES] is None or e[EXPIRES] > now))

    def kv_items(self, run: str, prefix: str = "") -> list[tuple]:
        r = self._run(run)
        keys = self.kv_keys(run, prefix)
        kv = r.kv
        return [(k, _unpackb(kv[k][VALUE], raw=False)) for k in keys]
