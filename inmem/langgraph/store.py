"""`InmemStore`: LangGraph's long-term memory store (`BaseStore`) over an inmem database.

The store is one inmem run (`langgraph:store` unless told otherwise), created
paused on the first write. An item is one KV entry of that run:

    key    <label>/<label>/.../:<key>      (each part escaped as in keys.py)
    value  [value as msgpack bytes, index text or None, created_at µs, updated_at µs,
            ttl in minutes or None]

so a namespace prefix is a key prefix, and the only text in the entry is
the index text: inmem's BM25 index reads the strings of a KV value and
skips bytes, so `search(query=...)` ranks exactly the fields chosen for
indexing — every string of the value by default, the `index_fields` given
to the store, the `index=[...]` paths given to one `put`, or nothing for
`index=False`. A TTL (minutes, as LangGraph counts) becomes the entry's
expiry; reads that refresh it write the entry again with a fresh one, as it
is then and only if nothing wrote it since (a transaction on its version),
so a refresh never undoes another client's put nor revives a deleted item.

A batch takes at most three round trips whatever its size: the reads of
every operation, then each text search (`db.search` over the store's run)
and the records it found, then every write; two more when it refreshes
TTLs (the items as they are now, then one transaction each), and more only
when what it reads does not fit in one reply of a cluster (see `reads.py`). Reads in a
batch see the store as it was before the batch's writes, as LangGraph's
in-memory store does.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Iterable

import msgpack
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
)
from langgraph.store.base.embed import get_text_at_path, tokenize_path

from inmem.errors import (InvalidKey, InvalidOption, InvalidValue, RunNotFound,
                          TransactionConflict)
from inmem.values import DEPTH_MAX, KEY_BYTES_MAX

from .driver import may_block, raise_first, run_async, run_sync
from .keys import DEFAULT_PREFIX, esc, unesc
from .reads import read_in_pieces
from .sending import send_creating

#: search hits fetched per round while a text search fills its page
_SEARCH_BATCH = 50

_VALUE, _TEXT, _CREATED, _UPDATED, _TTL = range(5)


def _validate(op) -> None:
    # A str where a tuple of labels belongs (("users") is one) would be taken letter by
    # letter, each a label: refused before LangGraph's own checks, which let it through.
    if isinstance(op, SearchOp):
        namespaces = [op.namespace_prefix]
    elif isinstance(op, ListNamespacesOp):
        namespaces = [cond.path for cond in op.match_conditions or ()]
    else:
        namespaces = [op.namespace]
    for namespace in namespaces:
        if isinstance(namespace, (str, bytes)):
            raise InvalidNamespaceError(
                f"a namespace is a tuple of str labels, not a {type(namespace).__name__}: "
                f"write ({namespace!r:.60},) for one label")
    # langgraph.store.base.validate_op_namespace, where the installed LangGraph has it
    try:
        from langgraph.store.base import validate_op_namespace
    except ImportError:  # pragma: no cover - older LangGraph
        return
    validate_op_namespace(op)


def item_key(namespace: tuple, key: str) -> str:
    return "".join(esc(label) + "/" for label in namespace) + ":" + esc(key)


def namespace_prefix(namespace: tuple) -> str:
    return "".join(esc(label) + "/" for label in namespace)


def parse_key(stored: str) -> tuple[tuple, str]:
    parts = stored.split("/")
    return tuple(unesc(p) for p in parts[:-1]), unesc(parts[-1][1:])


def _not_an_item(run: str, key: str) -> InvalidValue:
    return InvalidValue(f"run {run!r} holds KV key {key!r:.80}, which is not an InmemStore "
                        "item: the store's run must hold its items alone; give the store a "
                        "run of its own (InmemStore(db, run=...))")


def _checked_key(run: str, key: str) -> str:
    """`key` if it is one `item_key` makes, else InvalidValue naming it."""
    last = key.rpartition("/")[2]
    if not last.startswith(":") or "" in key.split("/")[:-1]:
        raise _not_an_item(run, key)
    return key


def _checked_record(run: str, key: str, record):
    """`record` if it is one a put stores ([value, text, created, updated, ttl]), else
    InvalidValue naming the key."""
    if (type(record) is not list or len(record) != 5 or type(record[_VALUE]) is not bytes
            or type(record[_CREATED]) is not int or type(record[_UPDATED]) is not int):
        raise _not_an_item(run, key)
    _checked_key(run, key)
    return record


class InmemStore(BaseStore):
    """A LangGraph store whose items live in an inmem database, with BM25 text search.

        store = InmemStore(inmem.open("./memory"))
        store.put(("users", "u1"), "prefs", {"text": "likes green tea"}, ttl=60)
        store.search(("users",), query="tea", filter={"lang": "en"})

    `db`: any inmem database. `run`: the run holding the items.
    `index_fields`: the value paths whose text is indexed by default
    (LangGraph's path syntax: "a.b", "list[*].text"); None indexes every
    string of the value. `ttl`: LangGraph's TTLConfig (default_ttl and
    refresh_on_read; minutes). `offload`: as for InmemSaver.
    """

    supports_ttl = True

    def __init__(self, db, *, run: str = DEFAULT_PREFIX + "store",
                 index_fields: list[str] | None = None, ttl: TTLConfig | None = None,
                 offload: bool | None = None) -> None:
        if type(run) is not str or not run:
            raise InvalidOption("run must be a non-empty str")
        _check_ttl_config(ttl)
        self.db = db
        self.run = run
        self.index_fields = None if index_fields is None else [
            tokenize_path(p) for p in _paths(index_fields, "index_fields", InvalidOption)]
        self.ttl_config = ttl
        self.offload = may_block(db) if offload is None else bool(offload)

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run LangGraph store operations (get, put, delete, search, list_namespaces)."""
        return run_sync(self.db, self._batch(list(ops)))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """`batch`, awaited: the event loop is never held (see `offload`)."""
        return await run_async(self.db, self._batch(list(ops)), self.offload)

    # -- the plan ------------------------------------------------------------------

    def _batch(self, ops: list):
        for op in ops:
            if not isinstance(op, (GetOp, PutOp, SearchOp, ListNamespacesOp)):
                raise ValueError(f"unknown store operation {type(op).__name__}")
            _validate(op)
            if isinstance(op, PutOp):
                _check_item_key(op.namespace, op.key)
                if op.index not in (None, False):
                    _paths(op.index, "a put's index", InvalidValue)
                if op.value is not None and op.ttl is not None:
                    _check_ttl(op.ttl)
            elif isinstance(op, (SearchOp, ListNamespacesOp)):
                _check_page(op.limit, op.offset)
                if isinstance(op, SearchOp) and op.filter is not None:
                    _check_filter(op.filter)
        run = self.run
        now = int(time.time() * 1_000_000)
        results: list = [None] * len(ops)
        # 1. every read, and the current entry under every put (to keep its created_at)
        reads, where = [], {}
        puts: dict = {}
        for i, op in enumerate(ops):
            if isinstance(op, GetOp):
                where[i] = len(reads)
                reads.append(("kv.get", (run, item_key(op.namespace, op.key), None)))
            elif isinstance(op, SearchOp) and not op.query:
                where[i] = len(reads)
                reads.append(("kv.items", (run, namespace_prefix(op.namespace_prefix))))
            elif isinstance(op, ListNamespacesOp):
                where[i] = len(reads)
                reads.append(("kv.keys", (run, _literal_prefix(op))))
            elif isinstance(op, PutOp):
                puts[(tuple(op.namespace), op.key)] = op  # the last put of a key wins
        put_keys = [item_key(ns, key) for ns, key in puts]
        if put_keys:
            reads.append(("kv.get_many", (run, put_keys)))
        got = (yield from read_in_pieces(reads)) if reads else []
        missing_run = any(isinstance(r, RunNotFound) for r in got)
        if not missing_run:
            raise_first(got)
            self._check_reads(ops, where, got, put_keys)
        refresh: dict = {}
        for i, op in enumerate(ops):
            if i not in where:
                continue
            answer = None if missing_run else got[where[i]]
            if isinstance(op, GetOp):
                results[i] = None if answer is None else _item(op.namespace, op.key, answer)
                if answer is not None and self._refresh(op.refresh_ttl) and answer[_TTL]:
                    refresh[item_key(op.namespace, op.key)] = answer
            elif isinstance(op, SearchOp):
                results[i] = self._page(op, answer or [], refresh)
            else:
                results[i] = _namespaces(op, answer or [])
        # 2. text searches, each answered by inmem's BM25 over the store's run
        for i, op in enumerate(ops):
            if isinstance(op, SearchOp) and op.query:
                results[i] = yield from self._text_search(op, refresh)
        # 3. writes and TTL refreshes
        writes = []
        old = {} if missing_run or not put_keys else dict(zip(put_keys, got[-1]))
        for (namespace, key), op in puts.items():
            k = item_key(namespace, key)
            refresh.pop(k, None)
            if op.value is None:
                writes.append(("kv.delete", (run, k)))
                continue
            prior = old.get(k)
            created = prior[_CREATED] if prior else now
            record = [_pack(op.value), self._text(op), created, now, op.ttl]
            writes.append(("kv.put", (run, k, record, _seconds(op.ttl))))
        if writes:
            # The run is made on the first write, and again if it is deleted meanwhile.
            done = yield from send_creating(writes, self._creates)
            raise_first(done)  # (a delete of an absent key is not an error)
        if refresh:
            yield from self._refresh_ttls(list(refresh))
        return results

    def _check_reads(self, ops: list, where: dict, got: list, put_keys: list) -> None:
        """InvalidValue before anything is answered or written when the run holds a key
        or a value that is no item of this store (a run shared with other data)."""
        run = self.run
        for i, at in where.items():
            answer, op = got[at], ops[i]
            if answer is None:
                continue
            if isinstance(op, GetOp):
                _checked_record(run, item_key(op.namespace, op.key), answer)
            elif isinstance(op, SearchOp):
                for key, record in answer:
                    _checked_record(run, key, record)
            else:
                for key in answer:
                    _checked_key(run, key)
        if put_keys:
            for key, record in zip(put_keys, got[-1]):
                if record is not None:
                    _checked_record(run, key, record)

    def _creates(self, runs: list) -> list:
        """The operations that create the store's run, paused."""
        return [("run.begin", (None, self.run, None, ["langgraph:store"], None)),
                ("run.set_status", (self.run, "paused", None))]

    def _refresh_ttls(self, keys: list):
        """Plan step: give the items at `keys` a fresh TTL, each as it is now.

        An item is written back only if nothing wrote it since it was read
        here (a transaction on its version): writing back what this batch
        read would undo a put another client made meanwhile, and an item
        that expired or was deleted meanwhile stays gone.
        """
        run = self.run
        current = yield [("kv.get_versioned", (run, k)) for k in keys]
        commits = []
        for k, found in zip(keys, current):
            if found is None or isinstance(found, RunNotFound):
                continue
            raise_first([found])
            record = found.value
            if not record[_TTL]:
                continue  # written since without a TTL
            commits.append(("tx.commit", (run, [["kv", k, found.version]],
                                          [["kv.put", [run, k, record,
                                                       _seconds(record[_TTL])]]])))
        if commits:
            # A conflict is a write since the read: it set the item's TTL itself.
            raise_first((yield commits), allow=(TransactionConflict, RunNotFound))

    def _refresh(self, refresh_ttl) -> bool:
        if refresh_ttl is not None:
            return bool(refresh_ttl)
        if self.ttl_config is not None:
            return bool(self.ttl_config.get("refresh_on_read", True))
        return True

    def _page(self, op: SearchOp, items: list, refresh: dict) -> list:
        matches = [(k, rec) for k, rec in items
                   if not op.filter or _matches(_unpack(rec[_VALUE]), op.filter)]
        # newest first, as LangGraph's database stores answer a search without a query
        matches.sort(key=lambda kr: (kr[1][_UPDATED], kr[0]), reverse=True)
        page = matches[op.offset:op.offset + op.limit]
        if self._refresh(op.refresh_ttl):
            refresh.update((k, rec) for k, rec in page if rec[_TTL])
        return [_search_item(k, rec, None) for k, rec in page]

    def _text_search(self, op: SearchOp, refresh: dict):
        prefix = namespace_prefix(op.namespace_prefix)
        want = op.offset + op.limit
        fetch = max(want * 2, _SEARCH_BATCH)
        while True:
            (response,) = yield [("search", (op.query, self.run, ["kv"], fetch, 0))]
            if isinstance(response, RunNotFound):
                return []
            raise_first([response])
            if not response.index_complete:
                # The index is still being rebuilt after a restart (a search helps it for a
                # few ms, then answers from what it holds): that answer is not every item.
                yield from self._index_rebuilt(op.query)
                continue
            hits = [h for h in response.results if h.ref.startswith(prefix)]
            records = []
            if hits:
                (records,) = yield from read_in_pieces(
                    [("kv.get_many", (self.run, [h.ref for h in hits]))])
                raise_first([records])
            for h, rec in zip(hits, records):
                if rec is not None:
                    _checked_record(self.run, h.ref, rec)
            found = [(h, rec) for h, rec in zip(hits, records) if rec is not None and (
                not op.filter or _matches(_unpack(rec[_VALUE]), op.filter))]
            exhausted = len(response.results) < fetch or fetch >= response.total_matches
            if len(found) >= want or exhausted:
                break
            fetch *= 4
        page = found[op.offset:want]
        if self._refresh(op.refresh_ttl):
            refresh.update((h.ref, rec) for h, rec in page if rec[_TTL])
        return [_search_item(h.ref, rec, h.score) for h, rec in page]

    def _index_rebuilt(self, query: str):
        """Search (for no hits) until the index holds every write: each search helps its
        rebuild along for a few ms, and asking for no hits leaves out their scoring."""
        while True:
            (response,) = yield [("search", (query, self.run, ["kv"], 0, 0))]
            if isinstance(response, RunNotFound):
                return
            raise_first([response])
            if response.index_complete:
                return

    def _text(self, op: PutOp) -> str | None:
        if op.index is False:
            return None
        paths = self.index_fields if op.index is None else [tokenize_path(p) for p in op.index]
        if paths is None:
            texts = _strings(op.value, [])
        else:
            texts = [t for path in paths for t in get_text_at_path(op.value, path)]
        return "\n".join(texts) or None


def _check_item_key(namespace: tuple, key: str) -> None:
    """InvalidKey naming the item when its namespace and key make a KV key over
    KEY_BYTES_MAX UTF-8 bytes (rather than the bare key error of the engine)."""
    if type(key) is not str:
        raise InvalidKey(f"a store key must be a str, got {type(key).__name__}")
    stored = item_key(namespace, key)
    if len(stored) <= KEY_BYTES_MAX // 4:
        return
    size = len(stored.encode("utf-8", "surrogatepass"))
    if size > KEY_BYTES_MAX:
        raise InvalidKey(f"namespace {tuple(namespace)!r:.80} and key {key!r:.40} are too long: "
                         f"escaped and joined they make a key of {size} UTF-8 bytes, over "
                         f"{KEY_BYTES_MAX}")


#: the longest TTL an entry takes (a century), in LangGraph's unit: minutes
_TTL_MAX_MINUTES = 100 * 365 * 24 * 60


def _check_ttl(ttl) -> None:
    """InvalidValue, in minutes as LangGraph counts a TTL, unless `ttl` is one the
    entry's expiry takes (the engine would name the seconds it was turned into)."""
    if type(ttl) not in (int, float) or not 0 < ttl <= _TTL_MAX_MINUTES:
        raise InvalidValue(f"a store item's ttl is a number of minutes above 0 and at most "
                           f"{_TTL_MAX_MINUTES} (a century), got {ttl!r:.40}")


def _paths(paths, what: str, error) -> list:
    """`paths` if it is a list or tuple of str (value paths), else `error` saying so: a str
    alone would be taken letter by letter, each a path no value has."""
    if not isinstance(paths, (list, tuple)) or not all(type(p) is str for p in paths):
        shown = type(paths).__name__ if not isinstance(paths, (list, tuple)) else next(
            type(p).__name__ for p in paths if type(p) is not str)
        raise error(f"{what} must be a list of value paths (str), such as [\"text\"] or "
                    f"[\"notes[*].body\"], got {shown}")
    return list(paths)


def _check_ttl_config(ttl) -> None:
    """InvalidOption unless `ttl` is None or a TTLConfig this store can apply."""
    if ttl is None:
        return
    if not isinstance(ttl, dict):
        raise InvalidOption(f"ttl must be None or LangGraph's TTLConfig (a dict), got "
                            f"{type(ttl).__name__}")
    default = ttl.get("default_ttl")
    if default is not None:
        try:
            _check_ttl(default)
        except InvalidValue as exc:
            raise InvalidOption(f"ttl's default_ttl: {exc}") from None
    refresh = ttl.get("refresh_on_read")
    if refresh is not None and type(refresh) is not bool:
        raise InvalidOption(f"ttl's refresh_on_read must be a bool, got "
                            f"{type(refresh).__name__}")


def _check_page(limit, offset) -> None:
    for name, n in (("limit", limit), ("offset", offset)):
        if type(n) is not int or n < 0:
            raise InvalidValue(f"{name} must be an int of 0 or more, got {n!r:.40}")


def _literal_prefix(op: ListNamespacesOp) -> str:
    """The key prefix every match of the first prefix condition shares (up to a wildcard)."""
    for cond in op.match_conditions or ():
        if cond.match_type == "prefix":
            labels = []
            for label in cond.path:
                if label == "*":
                    break
                labels.append(label)
            return namespace_prefix(tuple(labels))
    return ""


def _namespaces(op: ListNamespacesOp, keys: list) -> list:
    seen = set()
    for k in keys:
        namespace, _ = parse_key(k)
        if all(_does_match(c, namespace) for c in op.match_conditions or ()):
            seen.add(namespace if op.max_depth is None else namespace[:op.max_depth])
    return sorted(seen)[op.offset:op.offset + op.limit]


def _does_match(cond, namespace: tuple) -> bool:
    path = tuple(cond.path)
    if len(namespace) < len(path):
        return False
    if cond.match_type == "prefix":
        pairs = zip(namespace, path)
    elif cond.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path))
    else:
        raise ValueError(f"unknown match type {cond.match_type!r}")
    return all(p == "*" or n == p for n, p in pairs)


def _matches(value: dict, filter: dict) -> bool:
    return all(_compare(value.get(k), v) for k, v in filter.items())


def _compare(have, want) -> bool:
    """LangGraph's filter semantics: equality, nested dicts, and $eq/$ne/$gt/$gte/$lt/$lte."""
    if isinstance(want, dict):
        if any(k.startswith("$") for k in want):
            return all(_operator(have, op, arg) for op, arg in want.items())
        return isinstance(have, dict) and all(_compare(have.get(k), v) for k, v in want.items())
    if isinstance(want, (list, tuple)):
        return (isinstance(have, (list, tuple)) and len(have) == len(want)
                and all(_compare(h, w) for h, w in zip(have, want)))
    return have == want


#: the filter operators LangGraph's stores apply
_OPERATORS = frozenset(("$eq", "$ne", "$gt", "$gte", "$lt", "$lte"))


def _check_filter(filter, where: str = "filter") -> None:
    """InvalidValue unless `filter` is one `_matches` can apply: a dict of str keys whose
    values are plain values, nested filters, or dicts of known operators. Checked before
    anything is read, so an empty namespace refuses it as a full one does."""
    if not isinstance(filter, dict):
        raise InvalidValue(f"{where} must be a dict, got {type(filter).__name__}")
    for key, want in filter.items():
        if type(key) is not str:
            raise InvalidValue(f"{where} keys must be str, got {type(key).__name__}")
        if not isinstance(want, dict):
            continue
        if any(type(k) is str and k.startswith("$") for k in want):
            unknown = sorted(repr(k)[:40] for k in want if k not in _OPERATORS)
            if unknown:
                raise InvalidValue(f"{where} {key!r:.40} has operators {', '.join(unknown)} "
                                   f"it cannot apply; it takes {', '.join(sorted(_OPERATORS))}")
        else:
            _check_filter(want, f"{where} {key!r:.40}")


def _operator(have, op: str, arg) -> bool:
    if op == "$eq":
        return have == arg
    if op == "$ne":
        return have != arg
    if op in ("$gt", "$gte", "$lt", "$lte"):
        try:
            a, b = float(have), float(arg)
        except (TypeError, ValueError):
            return False
        return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]
    raise ValueError(f"unsupported filter operator {op!r}")


def _strings(value, out: list) -> list:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _strings(v, out)
    return out


def _pack(value) -> bytes:
    if not isinstance(value, dict):
        raise InvalidValue(f"a store value must be a dict (str keys), got "
                           f"{type(value).__name__}")
    try:
        value = dict(value)
        _check_keys(value)
        return msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidValue(f"a store value must be JSON-like (str-keyed dicts, lists, str, "
                           f"numbers, bool, None, bytes): {exc}") from None


def _check_keys(value: dict) -> None:
    """TypeError for a dict, at any depth, with a key that is not a str.

    msgpack would encode it, and a value that reads back as JSON does (as the
    SQL stores give it back) needs str keys; refused here, before anything is
    stored, rather than found when the value is read. ValueError past
    DEPTH_MAX levels (a value that contains itself, too). Not the value
    model's `check_value`: that refuses a tuple, which a store value may hold
    (it reads back as a list); msgpack refuses what else is not JSON-like.
    """
    stack = [(value, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        v, depth = pop()
        if depth > DEPTH_MAX:
            raise ValueError(f"nested deeper than {DEPTH_MAX} levels")
        if type(v) is dict:
            for k, item in v.items():
                if type(k) is not str:
                    raise TypeError(f"dict key {k!r:.40} is a {type(k).__name__}, not a str")
                if type(item) in _CONTAINERS:
                    push((item, depth + 1))
        else:
            for item in v:
                if type(item) in _CONTAINERS:
                    push((item, depth + 1))


_CONTAINERS = (dict, list, tuple)


def _unpack(data: bytes) -> dict:
    # strict_map_key=False: a value stored before keys were checked still reads back.
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _seconds(ttl_minutes) -> float | None:
    return None if ttl_minutes is None else float(ttl_minutes) * 60.0


def _when(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc)


def _item(namespace, key, record) -> Item:
    return Item(value=_unpack(record[_VALUE]), key=key, namespace=tuple(namespace),
                created_at=_when(record[_CREATED]), updated_at=_when(record[_UPDATED]))


def _search_item(stored_key: str, record, score) -> SearchItem:
    namespace, key = parse_key(stored_key)
    return SearchItem(namespace=namespace, key=key, value=_unpack(record[_VALUE]),
                      created_at=_when(record[_CREATED]), updated_at=_when(record[_UPDATED]),
                      score=None if score is None else float(score))


__all__ = ["InmemStore"]
