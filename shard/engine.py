"""The shard engine: one shard's data and every operation on it, as a pure library.

No sockets, threads or files here. A caller (the embedded Database, or a
shard worker process) hands the engine operations — a name plus msgpack-able
arguments, `execute(op, args)` — and gets back msgpack-able results or an
`inmem` error. Each accepted write is resolved into an effect
(`shard.effects`), applied through the one apply path, appended to its run's
journal, and, when the caller keeps a WAL, queued in `self.log` as a group
(one group per operation or committed transaction) for the caller to write.

The engine is not thread-safe for writes: callers serialise them (a lock in
the embedded Database, the single-threaded worker loop in a shard process).
Reads take no lock: every mutation is a single assignment or append of an
immutable tuple, which CPython performs atomically.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from operator import itemgetter

import msgpack

from inmem.errors import (InmemError, InvalidKey, InvalidValue, RunExists, RunNotActive,
                          RunNotFound, StateExists, TraceNotFound, TransactionConflict,
                          ValueTooLarge, VersionMismatch)
from inmem.ops import OPS, TX_WRITE_OPS
from inmem.types import ChainCheck, Event, RunInfo, State, Trace, Versioned
from inmem.values import (_SCALARS, DEFAULT_MAX_VALUE_BYTES, KEY_BYTES_MAX, ZERO_HASH,
                          canonical, check_key, check_value)

from . import jsonpath
from .effects import (APPLY, EV_APPEND, GROUP_BYTES_MAX, JS_DEL, JS_PUT, KV_DEL, KV_PUT,
                      RUN_CREATE, RUN_DELETE, RUN_STATUS, ST_DEL, ST_PUT, TR_ADD)
from .lifecycle import STATUSES, WRITABLE, check_transition
from .replay import fold
from .search_index import PRIMITIVES, SearchIndex, _packed_text, snippet

_unpackb = msgpack.unpackb
_sha256 = hashlib.sha256
_packb = msgpack.Packer(use_bin_type=True).pack  # the engine is single-writer: one packer is safe

#: the longest TTL a key may have: a century, in seconds
TTL_MAX_SECONDS = 100 * 365 * 24 * 3600

TRACE_TYPES = frozenset(("tool_call", "decision", "query", "thought", "error", "custom"))
_EV_PREFIX = b"\x95"  # msgpack fixarray of 5: [sequence, type, payload, ts, prev_hash]


def _packb_shared(value) -> bytes:
    # Reads run without the write lock, so they may not use the engine's packer.
    return msgpack.packb(value, use_bin_type=True)


def _hash_input(pack, sequence, event_type, payload: bytes, ts, prev_hash) -> bytes:
    """msgpack([sequence, type, payload, ts, prev_hash]) with the payload already canonical bytes.

    The hashed array is assembled from parts so the stored payload bytes are
    not decoded and packed again (API.md defines the hash over this array).
    """
    return b"".join((_EV_PREFIX, pack(sequence), pack(event_type), payload, pack(ts),
                     pack(prev_hash)))


def _now_us() -> int:
    return time.time_ns() // 1000


def _unpack(data):
    return _unpackb(data, raw=False)


class RunData:
    """Everything one run holds on its shard."""

    __slots__ = ("run_id", "name", "parent", "tags", "metadata", "status", "created_at",
                 "updated_at", "ended_at", "error", "orphaned", "kv", "state", "json",
                 "events", "events_by_type", "traces", "trace_order", "traces_by_type",
                 "traces_by_tag", "trace_roots", "trace_children", "journal")

    def __init__(self, eff):
        _, self.run_id, self.name, self.parent, tags, self.metadata, ts = eff
        self.tags = tuple(tags)
        self.status = "active"
        self.created_at = self.updated_at = ts
        self.ended_at = None
        self.error = None
        self.orphaned = False
        self.kv = {}
        self.state = {}
        self.json = {}
        self.events = []
        self.events_by_type = {}
        self.traces = {}
        self.trace_order = []
        self.traces_by_type = {}
        self.traces_by_tag = {}
        self.trace_roots = []
        self.trace_children = {}
        self.journal = [eff]

    def info(self) -> RunInfo:
        return RunInfo(self.run_id, self.name, self.parent,
                       "orphaned" if self.orphaned else self.status, list(self.tags),
                       None if self.metadata is None else _unpack(self.metadata),
                       self.created_at, self.updated_at, self.ended_at, self.error)


class Engine:
    """One shard's state and the operations on it."""

    def __init__(self, clock=None, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
                 log: bool = False):
        self.clock = clock or _now_us
        self.max_value_bytes = max_value_bytes
        self.runs: dict[str, RunData] = {}
        #: groups committed since the caller last took them, each already encoded
        #: for the WAL: `(run id, effect count, packed effects)` (None: no WAL)
        self.log: list | None = [] if log else None
        self._undo: list | None = None
        self._packer = msgpack.Packer(use_bin_type=True)
        self._pack = self._packer.pack
        self.index = SearchIndex()
        self.ops = self._op_table()

    # -- plumbing ------------------------------------------------------------------

    def execute(self, op: str, args):
        """Apply one operation by name; raises an InmemError subclass on refusal."""
        try:
            fn = self.ops[op]
        except (KeyError, TypeError):
            raise InmemError(f"unknown operation {op!r}") from None
        try:
            return fn(*args)
        except TypeError as exc:
            raise InvalidValue(f"bad arguments for {op}: {exc}") from None

    def execute_batch(self, ops) -> list:
        """Apply operations in order; a refusal is returned in place, the rest go on."""
        out = []
        for op, args in ops:
            try:
                out.append(self.execute(op, args))
            except InmemError as exc:
                # Without its traceback: the frames would tie the engine into a cycle.
                out.append(exc.with_traceback(None))
        return out

    def take_log(self) -> list:
        groups = self.log
        if not groups:
            return []
        self.log = []
        return groups

    def _commit(self, r: RunData, eff) -> None:
        """Queue one resolved effect for the WAL, then apply it to run `r` and journal it."""
        undo = self._undo
        if undo is not None:
            undo.append(self._undo_entry(r, eff))
        elif self.log is not None:
            self._log(r.run_id, (eff,))
        APPLY[eff[0]](r, eff)
        r.journal.append(eff)

    def _log(self, run_id, effs) -> None:
        """Encode a group for the WAL before it is applied: what cannot be logged is refused.

        This is what makes "encode before acknowledge" hold: a value that passed
        validation but cannot be encoded, or a group too large for one WAL
        record, raises here, while the store is still unchanged.
        """
        pack = self._pack
        try:
            data = pack(effs[0]) if len(effs) == 1 else b"".join(map(pack, effs))
        except (TypeError, ValueError, OverflowError) as exc:
            self._packer.reset()
            raise InvalidValue(f"this write cannot be logged: {exc}") from None
        if len(data) > GROUP_BYTES_MAX:
            raise ValueTooLarge(f"this write takes {len(data)} bytes in the log, over the limit "
                                f"of {GROUP_BYTES_MAX} for one operation or transaction; "
                                "split it into smaller ones")
        self.log.append((run_id, len(effs), data))

    def _check_text(self, text: str, what: str) -> str:
        """`text` when it is valid Unicode (no lone surrogates) within the value limit."""
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidValue(f"{what} is not valid Unicode text (it holds a lone surrogate)") \
                from None
        if size > self.max_value_bytes:
            raise ValueTooLarge(f"{what} is {size} bytes, over the limit of {self.max_value_bytes}")
        return text

    def _encode(self, value) -> bytes:
        """Validate and encode a value with the engine's own packer (writes are serialised)."""
        if type(value) not in _SCALARS:
            check_value(value)
        try:
            data = self._pack(value)
        except (TypeError, ValueError, OverflowError) as exc:
            self._packer.reset()
            raise InvalidValue(f"cannot encode value: {exc}") from None
        if len(data) > self.max_value_bytes:
            raise ValueTooLarge(f"encoded value is {len(data)} bytes, over the limit of "
                                f"{self.max_value_bytes}")
        return data

    def _run(self, run) -> RunData:
        try:
            r = self.runs.get(run)
        except TypeError:  # unhashable, so not a run id: refused below by type
            r = None
        if r is None:
            if type(run) is not str:
                raise InvalidKey(f"run id must be a str, got {type(run).__name__}")
            raise RunNotFound(f"run {run!r} does not exist", run_id=run)
        return r

    def _writable(self, run) -> RunData:
        r = self.runs.get(run) if type(run) is str else None
        if r is None:
            return self._run(run)
        if r.status not in WRITABLE:
            raise RunNotActive(f"run {run!r} is {r.status}; only active or paused runs accept writes",
                               run_id=run, status=r.status)
        return r

    def _ttl_us(self, ttl) -> int:
        # The comparisons also refuse nan; the upper bound keeps expiry times in 64 bits.
        if type(ttl) not in (int, float) or not 0 < ttl <= TTL_MAX_SECONDS:
            raise InvalidValue(f"ttl must be a number of seconds above 0 and at most "
                               f"{TTL_MAX_SECONDS} (a century), got {ttl!r}")
        return int(ttl * 1_000_000)

    # -- runs ----------------------------------------------------------------------

    def begin_run(self, name=None, run_id=None, parent=None, tags=(), metadata=None) -> str:
        if run_id is None:
            run_id = uuid.uuid4().hex
        else:
            check_key(run_id, "run id")
        if run_id in self.runs:
            raise RunExists(f"run {run_id!r} already exists", run_id=run_id)
        if name is not None:
            check_key(name, "run name")
        if parent is not None:
            check_key(parent, "parent run id")
        tags = _check_tags(tags)
        meta = None if metadata is None else self._encode(metadata)
        eff = (RUN_CREATE, run_id, name, parent, tags, meta, self.clock())
        self._create_run(eff)
        return run_id

    def _create_run(self, eff) -> RunData:
        if self.log is not None:
            self._log(eff[1], (eff,))
        r = RunData(eff)
        self.runs[r.run_id] = r
        return r

    def set_status(self, run, status, error=None) -> str:
        r = self._run(run)
        if status not in STATUSES:
            raise InvalidValue(f"unknown run status {status!r}")
        check_transition(r.status, status)
        if error is not None:
            error = self._check_text(_as_reason(error), "the reason")
        self._commit(r, (RUN_STATUS, status, self.clock(), error))
        return status

    def end_run(self, run) -> str:
        return self.set_status(run, "completed")

    def abort_run(self, run, reason=None) -> str:
        return self.set_status(run, "failed", "" if reason is None else reason)

    def run_status(self, run) -> str:
        r = self.runs.get(run) if type(run) is str else None
        if r is None:
            return "not_found"
        return "orphaned" if r.orphaned else r.status

    def run_get(self, run):
        r = self.runs.get(run) if type(run) is str else None
        return None if r is None else r.info()

    def run_list(self, status=None, tag=None, parent=None) -> list:
        out = []
        for r in self.runs.values():
            if status is not None and status != ("orphaned" if r.orphaned else r.status):
                continue
            if tag is not None and tag not in r.tags:
                continue
            if parent is not None and r.parent != parent:
                continue
            out.append(r)
        out.sort(key=lambda r: (r.created_at, r.run_id))
        return [r.info() for r in out]

    def run_delete(self, run) -> bool:
        if type(run) is not str or run not in self.runs:
            return False
        if self.log is not None:
            self._log(run, ((RUN_DELETE, run, self.clock()),))
        del self.runs[run]
        self.index.drop_run(run)
        return True

    def orphaned_runs(self) -> list:
        return [r.run_id for r in sorted(self.runs.values(), key=lambda r: (r.created_at, r.run_id))
                if r.orphaned]

    def mark_orphans(self) -> list:
        """After recovery: every run still active has no end; flag it as orphaned."""
        for r in self.runs.values():
            if r.status == "active":
                r.orphaned = True
        return self.orphaned_runs()

    # -- KV ------------------------------------------------------------------------

    def kv_put(self, run, key, value, ttl=None) -> int:
        # The hottest write: the common case is inlined, the rest falls back
        # to the general checks.
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
        kv = r.kv
        old = kv.get(key)
        version = 1 if old is None else old[3] + 1
        exp = None if ttl is None else now + self._ttl_us(ttl)
        eff = (KV_PUT, key, data, version, now, exp)
        if self._undo is None:
            if self.log is not None:
                self._log(r.run_id, (eff,))
            kv[key] = eff
            r.journal.append(eff)
        else:
            self._commit(r, eff)
        return version

    def _kv_live(self, r: RunData, key):
        """The entry at `key` when it holds a live (not deleted, not expired) value."""
        e = r.kv.get(key)
        if e is None or e[2] is None:
            return None
        if e[5] is not None and e[5] <= self.clock():
            return None
        return e

    def kv_get(self, run, key, default=None):
        try:
            e = self.runs[run].kv.get(key)
        except (KeyError, TypeError):
            # A missing or unhashable run, or an unhashable key: these name which.
            self._run(run)
            check_key(key)
            raise
        if e is None or e[2] is None:
            check_key(key)
            return default
        if e[5] is not None and e[5] <= self.clock():
            return default
        return _unpackb(e[2], raw=False)

    def kv_get_versioned(self, run, key):
        e = self._kv_live(self._run(run), check_key(key))
        return None if e is None else Versioned(_unpack(e[2]), e[3], e[4])

    def kv_exists(self, run, key) -> bool:
        return self._kv_live(self._run(run), check_key(key)) is not None

    def kv_delete(self, run, key) -> bool:
        r = self._writable(run)
        check_key(key)
        old = r.kv.get(key)
        if old is None or old[2] is None:
            return False
        live = old[5] is None or old[5] > self.clock()
        self._commit(r, (KV_DEL, key, None, old[3] + 1, self.clock(), None))
        return live

    def kv_cas(self, run, key, expected_version, value) -> int:
        r = self._writable(run)
        check_key(key)
        if type(expected_version) is not int:
            raise InvalidValue(f"expected_version must be an int, got {type(expected_version).__name__}")
        e = self._kv_live(r, key)
        actual = 0 if e is None else e[3]
        if actual != expected_version:
            raise VersionMismatch(expected_version, actual)
        data = self._encode(value)
        old = r.kv.get(key)
        version = 1 if old is None else old[3] + 1
        self._commit(r, (KV_PUT, key, data, version, self.clock(), None))
        return version

    def kv_get_many(self, run, keys) -> list:
        r = self._run(run)
        if type(keys) not in (list, tuple):
            raise InvalidValue("keys must be a list of str")
        out = []
        for key in keys:
            e = self._kv_live(r, check_key(key))
            out.append(None if e is None else _unpack(e[2]))
        return out

    def kv_keys(self, run, prefix="") -> list:
        r = self._run(run)
        if type(prefix) is not str:
            raise InvalidKey("prefix must be a str")
        now = self.clock()
        return sorted(k for k, e in r.kv.items()
                      if e[2] is not None and k.startswith(prefix) and (e[5] is None or e[5] > now))

    def kv_items(self, run, prefix="") -> list:
        r = self._run(run)
        keys = self.kv_keys(run, prefix)
        kv = r.kv
        return [(k, _unpack(kv[k][2])) for k in keys]

    # -- events --------------------------------------------------------------------

    def ev_append(self, run, event_type, payload) -> Event:
        r = self._writable(run)
        check_key(event_type, "event type")
        data = self._encode(canonical(payload) if type(payload) in (dict, list) else payload)
        seq = len(r.events)
        prev = r.events[-1][6] if seq else ZERO_HASH
        ts = self.clock()
        h = _sha256(_hash_input(_packb, seq, event_type, data, ts, prev)).digest()
        eff = (EV_APPEND, seq, event_type, data, ts, prev, h)
        self._commit(r, eff)
        # The caller's own payload object: the stored copy is the packed bytes,
        # so nothing the caller does to it later can reach the log.
        return Event(seq, event_type, payload, ts, prev, h)

    @staticmethod
    def _event(e) -> Event:
        return Event(e[1], e[2], _unpack(e[3]), e[4], e[5], e[6])

    def ev_read(self, run, sequence):
        r = self._run(run)
        if type(sequence) is not int:
            raise InvalidValue("sequence must be an int")
        if 0 <= sequence < len(r.events):
            return self._event(r.events[sequence])
        return None

    def ev_range(self, run, start, end) -> list:
        r = self._run(run)
        if type(start) is not int or type(end) is not int:
            raise InvalidValue("start and end must be ints")
        start = max(start, 0)
        return [self._event(e) for e in r.events[start:max(end, start)]]

    def ev_head(self, run):
        r = self._run(run)
        return self._event(r.events[-1]) if r.events else None

    def ev_count(self, run) -> int:
        return len(self._run(run).events)

    def ev_by_type(self, run, event_type) -> list:
        r = self._run(run)
        check_key(event_type, "event type")
        events = r.events
        return [self._event(events[s]) for s in r.events_by_type.get(event_type, ())]

    def ev_verify(self, run) -> ChainCheck:
        r = self._run(run)
        prev = ZERO_HASH
        for i, e in enumerate(r.events):
            body = _hash_input(_packb_shared, e[1], e[2], e[3], e[4], e[5])
            if e[1] != i:
                return ChainCheck(False, len(r.events), i, f"event {i} has sequence {e[1]}")
            if e[5] != prev:
                return ChainCheck(False, len(r.events), i, f"event {i}: prev_hash does not match")
            if _sha256(body).digest() != e[6]:
                return ChainCheck(False, len(r.events), i, f"event {i}: hash does not match")
            prev = e[6]
        return ChainCheck(True, len(r.events), None, None)

    # -- state cells ---------------------------------------------------------------

    def _st_live(self, r, name):
        e = r.state.get(name)
        return None if e is None or e[2] is None else e

    def st_init(self, run, name, value) -> int:
        r = self._writable(run)
        check_key(name, "state name")
        if self._st_live(r, name) is not None:
            raise StateExists(f"state cell {name!r} already exists in run {run!r}")
        return self._st_put(r, run, name, value)

    def _st_put(self, r, run, name, value) -> int:
        data = self._encode(value)
        old = r.state.get(name)
        version = 1 if old is None else old[3] + 1
        self._commit(r, (ST_PUT, name, data, version, self.clock()))
        return version

    def st_read(self, run, name):
        r = self._run(run)
        e = self._st_live(r, check_key(name, "state name"))
        return None if e is None else State(_unpack(e[2]), e[3], e[4])

    def st_set(self, run, name, value) -> int:
        r = self._writable(run)
        check_key(name, "state name")
        return self._st_put(r, run, name, value)

    def st_cas(self, run, name, expected_version, value) -> int:
        r = self._writable(run)
        check_key(name, "state name")
        if type(expected_version) is not int:
            raise InvalidValue("expected_version must be an int")
        e = self._st_live(r, name)
        actual = 0 if e is None else e[3]
        if actual != expected_version:
            raise VersionMismatch(expected_version, actual)
        return self._st_put(r, run, name, value)

    def st_delete(self, run, name) -> bool:
        r = self._writable(run)
        check_key(name, "state name")
        e = self._st_live(r, name)
        if e is None:
            return False
        self._commit(r, (ST_DEL, name, None, e[3] + 1, self.clock()))
        return True

    # -- traces --------------------------------------------------------------------

    def tr_record(self, run, trace_type, data, parent_id=None, tags=(), metadata=None,
                  trace_id=None) -> str:
        r = self._writable(run)
        if trace_type not in TRACE_TYPES:
            raise InvalidValue(f"trace_type must be one of {sorted(TRACE_TYPES)}, got {trace_type!r}")
        if type(data) is not dict:
            raise InvalidValue(f"trace data must be a dict, got {type(data).__name__}")
        if parent_id is not None and parent_id not in r.traces:
            raise TraceNotFound(f"parent trace {parent_id!r} not found in run {run!r}")
        tags = _check_tags(tags)
        packed = self._encode(data)
        meta = None if metadata is None else self._encode(metadata)
        if trace_id is None:
            trace_id = os.urandom(16).hex()  # uuid4().hex costs 3x more for the same entropy
        else:
            check_key(trace_id, "trace id")
            if trace_id in r.traces:
                raise InvalidValue(f"trace id {trace_id!r} already exists in run {run!r}")
        self._commit(r, (TR_ADD, trace_id, parent_id, trace_type, packed, tags, meta,
                         self.clock()))
        return trace_id

    @staticmethod
    def _trace(e) -> Trace:
        return Trace(e[1], e[2], e[3], _unpack(e[4]), list(e[5]),
                     None if e[6] is None else _unpack(e[6]), e[7])

    def tr_get(self, run, trace_id):
        r = self._run(run)
        e = r.traces.get(check_key(trace_id, "trace id"))
        return None if e is None else self._trace(e)

    def tr_by_type(self, run, trace_type) -> list:
        r = self._run(run)
        if type(trace_type) is not str:
            raise InvalidValue(f"trace_type must be a str, got {type(trace_type).__name__}")
        return [self._trace(r.traces[t]) for t in r.traces_by_type.get(trace_type, ())]

    def tr_by_tag(self, run, tag) -> list:
        r = self._run(run)
        return [self._trace(r.traces[t]) for t in r.traces_by_tag.get(check_key(tag, "tag"), ())]

    def tr_roots(self, run) -> list:
        r = self._run(run)
        return [self._trace(r.traces[t]) for t in r.trace_roots]

    def tr_tree(self, run, trace_id) -> list:
        """The traces of the subtree under `trace_id`: the root first, then breadth-first.

        Flat, not nested: a reasoning chain may be thousands of traces deep,
        beyond both recursion and msgpack's nesting limit. Each trace names its
        parent, so `inmem.database.assemble_tree` rebuilds the TraceTree.
        """
        r = self._run(run)
        if check_key(trace_id, "trace id") not in r.traces:
            raise TraceNotFound(f"trace {trace_id!r} not found in run {run!r}")
        children = r.trace_children
        order = [trace_id]
        for tid in order:  # the list grows while it is walked: a breadth-first queue
            kids = children.get(tid)
            if kids:
                order.extend(kids)
        traces = r.traces
        return [self._trace(traces[t]) for t in order]

    # -- JSON documents ------------------------------------------------------------

    def _js_doc(self, r, key):
        e = r.json.get(key)
        return (None, 0 if e is None else e[3]) if e is None or e[2] is None else (_unpack(e[2]), e[3])

    def _js_write(self, r, run, key, doc, version) -> int:
        data = self._encode(doc)
        self._commit(r, (JS_PUT, key, data, version + 1, self.clock()))
        return version + 1

    def js_put(self, run, key, doc) -> int:
        r = self._writable(run)
        check_key(key)
        e = r.json.get(key)
        return self._js_write(r, run, key, doc, 0 if e is None else e[3])

    def js_get(self, run, key, path="$"):
        r = self._run(run)
        check_key(key)
        steps = jsonpath.parse(path)
        doc, _ = self._js_doc(r, key)
        if doc is None:
            return None
        return jsonpath.get(doc, steps, path)

    def js_set(self, run, key, path, value) -> int:
        r = self._writable(run)
        check_key(key)
        steps = jsonpath.parse(path)
        check_value(value)
        doc, version = self._js_doc(r, key)
        doc = jsonpath.set_(doc, steps, value, path)
        return self._js_write(r, run, key, doc, version)

    def js_delete(self, run, key, path="$") -> bool:
        r = self._writable(run)
        check_key(key)
        steps = jsonpath.parse(path)
        doc, version = self._js_doc(r, key)
        if doc is None:
            return False
        if not steps:
            self._commit(r, (JS_DEL, key, None, version + 1, self.clock()))
            return True
        if not jsonpath.delete(doc, steps, path):
            return False
        self._js_write(r, run, key, doc, version)
        return True

    def js_push(self, run, key, path, value) -> int:
        r = self._writable(run)
        check_key(key)
        steps = jsonpath.parse(path)
        check_value(value)
        doc, version = self._js_doc(r, key)
        doc, arr = jsonpath.array_at(doc, steps, path, create=True)
        arr.append(value)
        self._js_write(r, run, key, doc, version)
        return len(arr)

    def js_pop(self, run, key, path):
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
        self._js_write(r, run, key, doc, version)
        return value

    # -- transactions --------------------------------------------------------------

    def tx_read(self, run, ns, key):
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
            raise InvalidValue(f"unknown namespace {ns!r}")
        if type(key) is not str:
            check_key(key)
        e = table.get(key)
        if e is None:
            check_key(key)
            return [False, None, 0]
        if e[2] is None or (ns == "kv" and e[5] is not None and e[5] <= self.clock()):
            return [False, None, e[3]]
        return [True, _unpackb(e[2], raw=False), e[3]]

    def _slot_version(self, r, ns, key) -> int:
        if ns == "ev":
            return len(r.events)
        e = (r.kv if ns == "kv" else r.state if ns == "st" else r.json).get(key)
        return 0 if e is None else e[3]

    def tx_commit(self, run, reads, writes) -> list:
        """Validate the read set, then apply every write or none.

        `reads` is a list of [namespace, key, version seen]; `writes` a list of
        [op, args] whose first argument is the run. Returns each write's result.
        """
        r = self._writable(run)
        _check_read_set(reads)
        _check_write_set(run, writes)
        for ns, key, seen in reads:
            current = self._slot_version(r, ns, key)
            if current != seen:
                raise TransactionConflict(
                    f"{ns} {key!r} in run {run!r} changed (read version {seen}, now {current})")
        undo: list = []
        journal_len = len(r.journal)
        self._undo = undo
        results = []
        try:
            for op, args in writes:
                results.append(self.execute(op, args))
        except BaseException:
            self._rollback(r, undo, journal_len)
            raise
        finally:
            self._undo = None
        if self.log is not None and undo:
            try:
                self._log(r.run_id, r.journal[journal_len:])
            except InmemError:
                self._rollback(r, undo, journal_len)
                raise
        return results

    def _undo_entry(self, r, eff):
        code = eff[0]
        if code in (KV_PUT, KV_DEL):
            return (r.kv, eff[1], r.kv.get(eff[1]))
        if code in (ST_PUT, ST_DEL):
            return (r.state, eff[1], r.state.get(eff[1]))
        if code in (JS_PUT, JS_DEL):
            return (r.json, eff[1], r.json.get(eff[1]))
        return (None, code, eff)

    def _rollback(self, r, undo, journal_len):
        for table, key, prev in reversed(undo):
            if table is not None:
                if prev is None:
                    table.pop(key, None)
                else:
                    table[key] = prev
            elif key == EV_APPEND:
                e = r.events.pop()
                lst = r.events_by_type[e[2]]
                lst.pop()
                if not lst:
                    del r.events_by_type[e[2]]
            elif key == TR_ADD:
                self._remove_trace(r, prev)
            elif key == RUN_STATUS:  # pragma: no cover - refused by TX_WRITE_OPS
                raise RuntimeError("run status changes are not transactional")
        del r.journal[journal_len:]

    @staticmethod
    def _remove_trace(r, eff):
        tid, parent = eff[1], eff[2]
        del r.traces[tid]
        r.trace_order.pop()
        for index, k in ((r.traces_by_type, eff[3]), *((r.traces_by_tag, t) for t in eff[5])):
            lst = index[k]
            lst.pop()
            if not lst:
                del index[k]
        if parent is None:
            r.trace_roots.pop()
        else:
            lst = r.trace_children[parent]
            lst.pop()
            if not lst:
                del r.trace_children[parent]

    # -- recovery ------------------------------------------------------------------

    def apply_batches(self, batches) -> None:
        """Apply a WAL record's batches, `(run id, [effect, ...])`, in order.

        The same APPLY path as live writes, in bulk: a batch of plain KV writes
        to a live run goes to the journal and the table with C-level calls.
        """
        runs = self.runs
        for run_id, effs in batches:
            r = runs.get(run_id)
            if r is not None:
                if len(effs) == 1:  # one operation: the common record shape
                    eff = effs[0]
                    code = eff[0]
                    if code not in _RUN_CODES:
                        APPLY[code](r, eff)
                        r.journal.append(eff)
                        continue
                codes = set(map(_CODE, effs))
                if codes <= _KV_CODES:
                    r.journal.extend(effs)
                    r.kv.update(zip(map(_KEY, effs), effs))
                    continue
                if not codes & _RUN_CODES:
                    for eff in effs:
                        APPLY[eff[0]](r, eff)
                    r.journal.extend(effs)
                    continue
            self.apply_group((run_id, *effs))

    def apply_group(self, group) -> None:
        """Apply one logged group, `(run id, effect, ...)`, read back from the WAL.

        This is the path live writes take (the same APPLY functions), minus the
        checks: a group in the log was validated when it was first committed.
        """
        run_id = group[0]
        r = self.runs.get(run_id)
        if r is not None and len(group) == 2:  # the common case: one write to a live run
            eff = group[1]
            code = eff[0]
            if code != RUN_CREATE and code != RUN_DELETE:
                APPLY[code](r, eff)
                r.journal.append(eff)
                return
        for eff in group[1:]:
            code = eff[0]
            if code == RUN_CREATE:
                r = self.runs[run_id] = RunData(eff)
                continue
            if code == RUN_DELETE:
                self.runs.pop(run_id, None)
                self.index.drop_run(run_id)
                r = None
                continue
            if r is None:
                raise InmemError(f"the log names run {run_id!r}, which was never created")
            APPLY[code](r, eff)
            r.journal.append(eff)

    # -- replay and search ---------------------------------------------------------

    def run_replay(self, run, at=None) -> list:
        r = self._run(run)
        if at is not None and type(at) is not int:
            raise InvalidValue(f"at must be an int journal position or None, got {at!r}")
        return fold(r.journal, at)

    def search_stats(self, terms, budget_ms=None) -> list:
        """[docs, total length, {term: df}, index complete] of this shard."""
        terms = _check_terms(terms)
        complete = self.index.catch_up(self.runs, self.clock(), _deadline(budget_ms))
        return [*self.index.stats(terms), complete]

    def index_step(self, max_ms: float) -> bool:
        """Background work: bring the search index up to date for at most `max_ms`."""
        return self.index.catch_up(self.runs, self.clock(), time.monotonic() + max_ms / 1000)

    def search_query(self, terms, n_docs, total_len, dfs, run=None, primitives=None, top=10,
                     budget_ms=None) -> list:
        terms = _check_terms(terms)
        if primitives is not None:
            if type(primitives) not in (list, tuple) or not set(primitives) <= set(PRIMITIVES):
                raise InvalidValue(f"primitives must be a subset of {PRIMITIVES}")
        if type(top) is not int or top < 0:
            raise InvalidValue("top must be an int >= 0")
        if type(dfs) is not dict or type(n_docs) is not int or type(total_len) is not int:
            raise InvalidValue("search statistics are malformed")
        deadline = _deadline(budget_ms)
        complete = self.index.catch_up(self.runs, self.clock(), deadline)
        hits, matches, exhausted = self.index.query(terms, n_docs, total_len, dfs, run, primitives,
                                                    top, deadline)
        exhausted = exhausted or not complete
        out = [[prim, run_id, ref, score, snippet(self._doc_texts(prim, run_id, ref), terms)]
               for score, prim, run_id, ref in hits]
        return [out, matches, exhausted]

    def _doc_texts(self, prim, run_id, ref) -> list:
        r = self.runs.get(run_id)
        if r is None:
            return []
        if prim == "runs":
            return [t for t in (r.name, *r.tags) if t]
        if prim == "events":
            e = r.events[ref]
            return [e[2], *_packed_text(e[3])]
        if prim == "traces":
            e = r.traces[ref]
            return [e[3], *_packed_text(e[4])]
        table = {"kv": r.kv, "json": r.json, "state": r.state}[prim]
        e = table.get(ref)
        return [] if e is None else _packed_text(e[2])

    # -- statistics ----------------------------------------------------------------

    def counts(self) -> dict:
        keys = events = traces = state = docs = journal = 0
        for r in self.runs.values():
            keys += len(r.kv)
            events += len(r.events)
            traces += len(r.traces)
            state += len(r.state)
            docs += len(r.json)
            journal += len(r.journal)
        return {"runs": len(self.runs), "keys": keys, "events": events, "traces": traces,
                "state": state, "json": docs, "journal": journal}

    def _op_table(self) -> dict:
        """Operation name -> bound handler, from the one table of operations (inmem.ops)."""
        return {name: getattr(self, op.handler) for name, op in OPS.items()}


_CODE = itemgetter(0)
_KEY = itemgetter(1)
_KV_CODES = frozenset((KV_PUT, KV_DEL))
_RUN_CODES = frozenset((RUN_CREATE, RUN_DELETE))



def _as_reason(reason) -> str:
    """The text kept as a run's error: a str, or the message of an exception or a number."""
    if type(reason) is str:
        return reason
    if isinstance(reason, BaseException) or type(reason) in (int, float, bool):
        return str(reason)
    raise InvalidValue(f"a reason must be a str (or an exception), got {type(reason).__name__}")


def _deadline(budget_ms):
    if budget_ms is None:
        return None
    if type(budget_ms) not in (int, float) or budget_ms < 0:
        raise InvalidValue("budget_ms must be a number >= 0")
    return time.monotonic() + budget_ms / 1000


def _check_terms(terms) -> list:
    if type(terms) not in (list, tuple) or not all(type(t) is str for t in terms):
        raise InvalidValue("search terms must be a list of str")
    return list(terms)


def _check_tags(tags) -> tuple:
    if type(tags) not in (list, tuple):
        raise InvalidValue(f"tags must be a list or tuple of str, got {type(tags).__name__}")
    for t in tags:
        if type(t) is not str:
            raise InvalidValue(f"tags must be a list or tuple of str, one is a {type(t).__name__}")
        check_key(t, "tag")
    return tuple(tags)


_TX_NAMESPACES = frozenset(("kv", "st", "js", "ev"))


def _check_read_set(reads) -> None:
    """InvalidValue unless `reads` is a list of [namespace, key, version seen]."""
    if type(reads) not in (list, tuple):
        raise InvalidValue(f"a transaction's reads must be a list, got {type(reads).__name__}")
    for item in reads:
        if type(item) not in (list, tuple) or len(item) != 3:
            raise InvalidValue(f"a transaction read is [namespace, key, version], got {item!r:.100}")
        ns, key, seen = item
        if type(ns) is not str or ns not in _TX_NAMESPACES:
            raise InvalidValue(f"unknown namespace {ns!r:.40} in a transaction read "
                               f"(one of {sorted(_TX_NAMESPACES)})")
        if type(key) is not str:
            raise InvalidKey(f"a transaction read's key must be a str, got {type(key).__name__}")
        if type(seen) is not int:
            raise InvalidValue(f"a transaction read's version must be an int, got {seen!r:.40}")


def _check_write_set(run, writes) -> None:
    """InvalidValue unless `writes` is a list of [op, args] writes to `run`."""
    if type(writes) not in (list, tuple):
        raise InvalidValue(f"a transaction's writes must be a list, got {type(writes).__name__}")
    for item in writes:
        if type(item) not in (list, tuple) or len(item) != 2:
            raise InvalidValue(f"a transaction write is [op, args], got {item!r:.100}")
        op, args = item
        if type(op) is not str or op not in TX_WRITE_OPS:
            raise InvalidValue(f"{op!r:.60} cannot be used inside a transaction")
        if type(args) not in (list, tuple) or not args or args[0] != run:
            raise InvalidValue(f"every write of a transaction is [op, [run, ...]] naming its "
                               f"run; {op} does not")
