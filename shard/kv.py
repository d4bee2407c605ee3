"""Key-value operations of a run: versioned, optionally expiring entries.

`KVOps` is one of the parts the `Engine` is assembled from. A KV entry is the
packed form of the last write to its key (`shard.entries`: value, version,
time and expiry in one `bytes`); a delete leaves an entry with no value, so
the key's version keeps counting. Expired entries are skipped by reads. A
dead entry (deleted, or expired) is reclaimed once it has been dead for the
engine's `dead_key_retention_s` (`shard.dead_keys`): it leaves the table, and
the run's version floor (`kv_floors`) rises to its version; a key that is not
in the table takes `floor + 1` on its first write (1 in a run that never
reclaimed anything), on every write path here. The writes that make a dead
entry (a delete, a put with a TTL) note when it dies. Listings (`kv.keys`, `kv.items`) read the run's sorted
key order (`shard.key_order`) from where they start.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from itertools import compress
from operator import itemgetter
from typing import Callable

import msgpack

from inmem.display import short_value
from inmem.errors import InmemError, InvalidKey, InvalidValue, VersionMismatch
from inmem.types import Versioned
from inmem.values import KEY_BYTES_MAX, check_key

from .dead_keys import DeadKeys, noted_before
from .effects import (GROUP_BYTES_MAX, KV_DEL, KV_PUT, apply_kv_entries, array_header,
                      check_group_size, put_kv_item)
from .entries import (DELETED, PLAIN_AT, entry_expires, entry_ts, entry_value, entry_version,
                      live_value, pack_entry)
from .key_order import order_of
from .lifecycle import WRITABLE
from .runs import RunData

_unpackb = msgpack.unpackb
#: no value yet (None is one)
_NOTHING = object()
_NIL = b"\xc0"
_PAIR = b"\x92"  # a msgpack array of two
_HEAD_1 = struct.Struct("<QB").pack
_HEAD_2 = struct.Struct("<QH").pack  # a plain entry whose version takes 2 bytes (flags 1)
_TS_MAX = 1 << 56
_FLAGS = itemgetter(0)  # an entry's flags byte
_MAYBE = 2
#: flags -> whether a listing shows the key: 1 (a plain live entry), 0 (deleted), or
#: _MAYBE (it expires: live until its time)
_LISTED = tuple(1 if PLAIN_AT[f] else 0 if f & DELETED else _MAYBE for f in range(32))
#: keys a listing takes from the order at first without a limit, and at most at once
_SLICE_FIRST = 64
_SLICE_MAX = 1024
#: a put series is split into WAL groups of about this many bytes (far below a record's limit)
_SERIES_GROUP_BYTES = 4 << 20


class KVOps:
    """The KV operations of the engine."""

    runs: dict[str, RunData]
    clock: Callable[[], int]
    log: list | None
    _undo: list | None
    #: run id -> its version floor (shard.dead_keys): only runs that reclaimed a key
    kv_floors: dict
    dead: DeadKeys

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
        if type(value) is bytes:
            # Binary data, the usual value here, packs whatever it holds: only its size
            # is checked (by _encode, which refuses it, when it is over the limit).
            data = self._pack(value)
            if len(data) > self.max_value_bytes:
                self._encode(value)
        else:
            data = self._encode(value)
        now = self.clock()
        old = r.kv.get(key)
        if old is None:
            floors = self.kv_floors
            version = floors.get(run, 0) + 1 if floors else 1
        else:
            # The version of a plain entry is its byte 8, or bytes 8-9 (shard.entries).
            width = old[0] & 3
            version = (old[8] if not width else old[8] | old[9] << 8 if width == 1
                       else entry_version(old)) + 1
        exp = None if ttl is None else now + self._ttl_us(ttl)
        if self._undo is None:
            # _commit and apply_kv, unrolled: no undo entry to keep outside a
            # transaction. The write is logged in its entry form, the very
            # item the history keeps (shard.effects).
            if exp is None and version < 256 and 0 <= now < _TS_MAX:
                e = _HEAD_1(now << 8, version) + data
            elif exp is None and version < 0x10000 and 0 <= now < _TS_MAX:
                # A run's floor carries new keys past 255 in a long life of reclaiming.
                e = _HEAD_2(now << 8 | 1, version) + data
            else:
                e = pack_entry(data, version, now, exp)
            item = (KV_PUT, key, e)
            journal = r.journal
            log = self.log
            if log is not None:
                # Engine._log of one effect, inline: a key and an entry always pack,
                # and only an entry too large for a record is refused (by _log).
                packed = self._pack(item)
                if len(packed) > GROUP_BYTES_MAX:
                    self._log(r.run_id, (item,), journal)
                log.append((r.run_id, 1, packed, journal))
                self.log_writes += 1
            put_kv_item(r, key, e, item)
            if len(journal.items) > journal.trim_at:
                self._trim_history(r)
        else:
            self._commit(r, (KV_PUT, key, data, version, now, exp))
        if exp is None:
            return version
        self._note_expiring(r, key, old, exp, now)
        return version

    def _note_expiring(self, r: RunData, key: str, old, exp: int, now: int) -> None:
        """A put with a TTL wrote `key` over `old`: note when it dies (shard.dead_keys), and
        reclaim a few due entries if any are."""
        dead = self.dead
        if not noted_before(old, exp):
            dead.note(r.run_id, key, exp)
        if now >= dead.due_at:
            self._reclaim_inline(now, 1)

    def kv_put_series(self, run: str, calls: list) -> list:
        """Consecutive `kv.put` calls to one run, as a pipeline of puts sends them.

        `calls` holds each call's arguments ([run, key, value] or [run, key,
        value, ttl]); the answer holds each call's result in order, its version
        or the InmemError that refused it. Every call is checked exactly as
        `kv_put` checks it, and one that is not a plain put (a ttl, an unusual
        key, a run that does not accept writes) is run by `kv_put` itself. The
        accepted ones share one reading of the clock and are logged as few WAL
        groups: a crash keeps all or none of a group, and what survives is
        still a prefix of the writes in their order.
        """
        out: list = []
        r = self.runs.get(run) if type(run) is str else None
        if r is None or r.status not in WRITABLE or self._undo is not None:
            return [self._put_call(a) for a in calls]
        kv = r.kv
        encode, pack = self._encode, self._pack
        # bytes this short pack within the value limit (a header of at most 5 bytes)
        limit = self.max_value_bytes - 8
        now = self.clock()
        head, ts8, plain_ts = _HEAD_1, now << 8, 0 <= now < _TS_MAX
        floor = self.kv_floors.get(run, 0)
        effs: list = []  # the puts in their entry form
        places: list = []   # out index of each effect in `effs`
        pending: dict = {}  # key -> the version `effs` gives it
        size = 0
        for args in calls:
            n = len(args)
            key = args[1] if n > 1 else None
            if (not 3 <= n <= 4 or (n == 4 and args[3] is not None) or type(key) is not str
                    or not key.isascii() or not 0 < len(key) <= KEY_BYTES_MAX):
                if effs:
                    self._put_group(r, effs, places, out)
                    effs, places, pending, size = [], [], {}, 0
                out.append(self._put_call(args))
                # A put with a ttl reclaims due dead entries as it goes (shard.dead_keys),
                # which may raise the run's floor: the keys after it start above it.
                floor = self.kv_floors.get(run, 0)
                continue
            value = args[2]
            if type(value) is bytes and len(value) < limit:
                data = pack(value)  # as in kv_put: binary data only has its size to check
            else:
                try:
                    data = encode(value)
                except InmemError as exc:
                    out.append(exc.with_traceback(None))
                    continue
            if size + len(data) > _SERIES_GROUP_BYTES and effs:
                self._put_group(r, effs, places, out)
                effs, places, pending, size = [], [], {}, 0
            version = pending.get(key)
            if version is None:
                old = kv.get(key)
                if old is None:
                    version = floor
                else:
                    width = old[0] & 3  # as in kv_put
                    version = (old[8] if not width else old[8] | old[9] << 8 if width == 1
                               else entry_version(old))
            version += 1
            pending[key] = version
            if plain_ts and version < 256:
                e = head(ts8, version) + data
            elif plain_ts and version < 0x10000:  # a key written 256 times or more
                e = _HEAD_2(ts8 | 1, version) + data
            else:
                e = pack_entry(data, version, now)
            effs.append((KV_PUT, key, e))
            places.append(len(out))
            out.append(version)
            size += len(data) + len(key) + 32
        if effs:
            self._put_group(r, effs, places, out)
        return out

    def _put_call(self, args):
        """One kv.put by the general path: its version, or the InmemError that refused it."""
        try:
            return self.execute("kv.put", args)
        except InmemError as exc:
            return exc.with_traceback(None)

    def _put_group(self, r: RunData, effs: list, places: list, out: list) -> None:
        """Log a series' plain puts as one group, then apply them; on refusal, none is applied."""
        if self.log is not None:
            try:
                self._log(r.run_id, effs, r.journal)
            except InmemError as exc:
                exc = exc.with_traceback(None)
                for i in places:
                    out[i] = exc
                return
        apply_kv_entries(r, effs)
        journal = r.journal
        if len(journal.items) > journal.trim_at:
            self._trim_history(r)

    def kv_put_many(self, run: str, items: list, ttl: float | None = None) -> list[int]:
        """Store several [key, value] pairs of one run together: one group, all or none.

        Every pair is checked before any is applied, and the writes are one
        group in the WAL, so a crash keeps them all or none. A key named twice
        takes both writes in order (its version counts both). Returns each
        write's version, in order.
        """
        # Hot for the checkpointer (blobs, a checkpoint and its head in one
        # call): the common case takes no method call it can avoid.
        r = self.runs.get(run) if type(run) is str else None
        if r is None or r.status not in WRITABLE:
            r = self._writable(run)
        if type(items) not in (list, tuple):
            raise InvalidValue(f"items must be a list of [key, value] pairs, got "
                               f"{type(items).__name__}")
        now = self.clock()
        exp = None if ttl is None else now + self._ttl_us(ttl)
        plain = exp is None and 0 <= now < _TS_MAX
        ts8 = now << 8
        kv = r.kv
        encode, pack = self._encode, self._pack
        limit = self.max_value_bytes - 8  # bytes this short pack within the value limit
        floor = self.kv_floors.get(r.run_id, 0)
        effs = []  # the writes in their entry form
        versions = []
        seen: dict = {}  # key -> the version this call gives it
        fresh = []  # with a TTL: the keys whose entries need a note (shard.dead_keys)
        # One value stored under two keys in a row (a record and the head that
        # repeats it) is encoded once.
        last = data = _NOTHING
        for item in items:
            if type(item) not in (list, tuple) or len(item) != 2:
                raise InvalidValue("items must be a list of [key, value] pairs")
            key, value = item
            if type(key) is not str or not key.isascii() or not 0 < len(key) <= KEY_BYTES_MAX:
                check_key(key)
            if value is not last:
                # Binary data only has its size to check (as in kv_put).
                data = (pack(value) if type(value) is bytes and len(value) < limit
                        else encode(value))
                last = value
            version = seen.get(key)
            if version is None:
                old = kv.get(key)
                if old is None:
                    version = floor
                else:
                    # The version of a plain entry is its byte 8, or bytes 8-9 (a key
                    # written 256 times or more: a thread's head) (shard.entries).
                    width = old[0] & 3
                    version = (old[8] if not width else old[8] | old[9] << 8 if width == 1
                               else entry_version(old))
                if exp is not None and not noted_before(old, exp):
                    fresh.append(key)
            version += 1
            seen[key] = version
            versions.append(version)
            if plain and version < 256:
                e = _HEAD_1(ts8, version) + data
            elif plain and version < 0x10000:
                e = _HEAD_2(ts8 | 1, version) + data
            else:
                e = pack_entry(data, version, now, exp)
            effs.append((KV_PUT, key, e))
        if not effs:
            return []
        if self.log is not None:
            self._log(r.run_id, effs, r.journal)
        elif len(effs) > 1:
            check_group_size(effs)
        apply_kv_entries(r, effs)
        journal = r.journal
        if len(journal.items) > journal.trim_at:
            self._trim_history(r)
        if exp is not None:
            note, run_id = self.dead.note, r.run_id
            for key in fresh:
                note(run_id, key, exp)
            if now >= self.dead.due_at:
                self._reclaim_inline(now, len(effs))
        return versions

    def kv_get_linked(self, run: str, key: str, field) -> tuple | None:
        """The live value at `key` and the values its `field` names, in one read.

        `value[field]` (a dict's key, or a list's index) is a list of
        references, each a KV key (a str, or ["kv", key]) or ["json", key]:
        the answer is (value, [each referenced KV value or whole JSON
        document, None when absent]). A value with no such field references
        nothing: (value, []). None when `key` holds no live value.
        """
        found = self._linked(run, key, field)
        if found is None:
            return None
        value, _data, parts = found
        return value, [None if p is None else _unpackb(p, raw=False) for p in parts]

    def kv_get_linked_packed(self, run: str, key: str, field) -> bytes:
        """`kv_get_linked`'s answer already packed (msgpack), for a reply.

        The values are sent as they are stored, packed: none is decoded and
        packed again, which for a checkpoint and its channel values is most
        of what the read costs.
        """
        found = self._linked(run, key, field)
        if found is None:
            return _NIL
        _value, data, parts = found
        return b"".join((_PAIR, data, array_header(len(parts)),
                         *[_NIL if p is None else p for p in parts]))

    def _linked(self, run: str, key: str, field):
        """(value, its packed bytes, [the packed bytes of each reference or None]), or None."""
        # The checkpointer's every get_tuple comes here: the usual case (a
        # known run, an ASCII key, plain entries) takes no call it can avoid.
        r = self.runs.get(run) if type(run) is str else None
        if r is None:
            r = self._run(run)
        if type(key) is not str or not key.isascii() or not 0 < len(key) <= KEY_BYTES_MAX:
            key = check_key(key)
        if type(field) is not str and type(field) is not int:
            # Refused whatever the value holds: a field that could never name anything
            # (a list, None, a float) is a mistake, not a value without references.
            raise InvalidValue(f"field must be a dict key (str) or a list index (int), "
                               f"got {short_value(field)}")
        e = r.kv.get(key)
        if e is None:
            return None
        at = PLAIN_AT[e[0]]
        data = e[at:] if at else live_value(e, self.clock())
        if data is None:
            return None
        value = _unpackb(data, raw=False)
        t = type(value)
        if t is dict and type(field) is str:
            refs = value.get(field)
        elif t is list and type(field) is int and -len(value) <= field < len(value):
            refs = value[field]
        else:
            refs = None
        if refs is None:
            return value, data, []
        if type(refs) is not list:
            raise InvalidValue(f"the field {field!r} of {key!r} is not a list of references")
        kv, docs = r.kv, r.json
        parts = []
        append = parts.append
        for ref in refs:
            if type(ref) is str:
                name, table = ref, kv
            elif type(ref) is list and len(ref) == 2 and ref[0] in ("kv", "json"):
                name, table = ref[1], (kv if ref[0] == "kv" else docs)
            else:
                raise InvalidValue(f"a reference in {key!r} is neither a key nor [\"kv\" or "
                                   f"\"json\", key]: {ref!r:.100}")
            if type(name) is not str or not name.isascii() or not 0 < len(name) <= KEY_BYTES_MAX:
                check_key(name)
            e = table.get(name)
            if e is None:
                append(None)
                continue
            # A plain entry (no expiry, not deleted) holds its value at a fixed place.
            at = PLAIN_AT[e[0]]
            if at:
                append(e[at:])
                continue
            append(live_value(e, self.clock()) if table is kv else entry_value(e))
        return value, data, parts

    def _kv_live(self, r: RunData, key: str) -> bytes | None:
        """The entry at `key` when it holds a live (not deleted, not expired) value."""
        e = r.kv.get(key)
        if e is None or live_value(e, 0 if PLAIN_AT[e[0]] else self.clock()) is None:
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
        if e is None:
            check_key(key)
            return default
        at = PLAIN_AT[e[0]]
        if at:
            return _unpackb(e[at:], raw=False)
        if e[0] & DELETED:
            check_key(key)
            return default
        data = live_value(e, self.clock())
        return default if data is None else _unpackb(data, raw=False)

    def kv_get_versioned(self, run: str, key: str) -> Versioned | None:
        r = self._run(run)
        e = r.kv.get(check_key(key))
        data = None if e is None else live_value(e, self.clock())
        return None if data is None else Versioned(_unpackb(data, raw=False), entry_version(e),
                                                   entry_ts(e))

    def kv_exists(self, run: str, key: str) -> bool:
        return self._kv_live(self._run(run), check_key(key)) is not None

    def kv_delete(self, run: str, key: str) -> bool:
        r = self._writable(run)
        check_key(key)
        old = r.kv.get(key)
        if old is None or old[0] & DELETED:
            return False
        exp = entry_expires(old)
        live = exp is None or exp > self.clock()
        now = self.clock()  # the delete's time, and when its tombstone died
        self._commit(r, (KV_DEL, key, None, entry_version(old) + 1, now, None))
        dead = self.dead
        dead.note(r.run_id, key, now)
        if now >= dead.due_at:
            self._reclaim_inline(now, 1)
        return live

    def kv_cas(self, run: str, key: str, expected_version: int, value) -> int:
        r = self._writable(run)
        check_key(key)
        if type(expected_version) is not int:
            raise InvalidValue(f"expected_version must be an int, got {type(expected_version).__name__}")
        e = self._kv_live(r, key)
        actual = 0 if e is None else entry_version(e)
        if actual != expected_version:
            raise VersionMismatch(expected_version, actual)
        data = self._encode(value)
        old = r.kv.get(key)
        version = self.kv_floors.get(r.run_id, 0) + 1 if old is None else entry_version(old) + 1
        self._commit(r, (KV_PUT, key, data, version, self.clock(), None))
        return version

    def kv_get_many(self, run: str, keys: list[str]) -> list:
        r = self._run(run)
        if type(keys) not in (list, tuple):
            raise InvalidValue("keys must be a list of str")
        out = []
        now = self.clock()
        kv = r.kv
        for key in keys:
            e = kv.get(check_key(key))
            data = None if e is None else live_value(e, now)
            out.append(None if data is None else _unpackb(data, raw=False))
        return out

    def kv_keys(self, run: str, prefix: str = "", after: str | None = None,
                limit: int | None = None) -> list[str]:
        return _listed(self._run(run), prefix, after, limit, self.clock())

    def kv_items(self, run: str, prefix: str = "", after: str | None = None,
                 limit: int | None = None) -> list[tuple]:
        r = self._run(run)
        now = self.clock()
        kv = r.kv
        return [(k, _unpackb(live_value(kv[k], now), raw=False))
                for k in _listed(r, prefix, after, limit, now)]


def _listed(r: RunData, prefix, after, limit, now: int) -> list[str]:
    """The live keys of run `r` starting with `prefix`, sorted, in a page when `after` (start
    after it) or `limit` (at most so many) is given; InvalidKey or InvalidValue for a prefix
    or a page that cannot be one.

    The keys are read from the run's sorted key order (shard.key_order) from where
    the page starts, so a page costs about what it returns, not a pass over the run.
    """
    if type(prefix) is not str:
        raise InvalidKey("prefix must be a str")
    if after is not None and type(after) is not str:
        raise InvalidValue(f"after must be a key (str) or None, got {type(after).__name__}")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise InvalidValue(f"limit must be an int of at least 1 or None, got {short_value(limit)}")
    kv = r.kv
    if not kv:
        return []
    # The keys with the prefix are one stretch of the order, from `prefix` on.
    if after is None or after < prefix:
        start, inclusive = prefix, True
    else:
        start, inclusive = after, False
    order = order_of(r)
    place = order.find(start, inclusive)
    out: list = []
    room = limit
    want = _SLICE_FIRST if limit is None else min(limit, _SLICE_MAX)
    # Slices of the order go through C-level loops (lookup, flags, filter): a long
    # listing or a stretch of deleted keys costs a fraction of a key-by-key loop.
    while True:
        keys, place = order.take(place, want)
        if not keys:
            break
        last = not keys[-1].startswith(prefix)
        if last:  # the prefix's stretch ends in this slice
            keys = keys[:bisect_left(keys, True, key=lambda k: not k.startswith(prefix))]
        entries = list(map(kv.__getitem__, keys))
        listed = list(map(_LISTED.__getitem__, map(_FLAGS, entries)))
        if _MAYBE in listed:  # expiring entries: live until their time
            listed = [f if f != _MAYBE else live_value(e, now) is not None
                      for f, e in zip(listed, entries)]
        live = list(compress(keys, listed))
        if room is None:
            want = min(2 * want, _SLICE_MAX)
        elif len(live) >= room:
            out += live[:room]
            break
        else:
            room -= len(live)
            # As many keys as the page still needs at the share of live keys seen so far.
            want = min(room * len(keys) // len(live) + 1 if live else 2 * want, _SLICE_MAX)
        out += live
        if last:
            break
    return out
