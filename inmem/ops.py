"""Every engine operation in one table: its handler, whether it writes, where its values are, its reply.

Adding an operation is adding one row here and its handler on the engine.
The row says everything the rest of the system needs to know about it:

- `handler`: the `Engine` method that runs it (the shard engine builds its
  dispatch table from these names);
- `writes`: it changes state, so it is logged, and a store whose log failed
  refuses it;
- `in_tx`: it may be one of a transaction's buffered writes;
- `values`: the argument positions that carry user values, which the client
  checks against the value model before sending;
- `reply`: how the cluster client turns the wire result into the API's types
  (`fn(wire result, args)`; None: the wire value is the answer);
- `route`: which shard runs it: "run" (the run in its first argument),
  "begin" (the run id it is given) or "all" (every shard; the coordinator
  merges the answers);
- `fanout_read`: a read that a client may also send to every shard at once.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from .errors import ProtocolError
from .types import (ChainCheck, Event, RecoveryResult, RunInfo, SnapshotInfo, State, Trace,
                    Versioned)


class Op(NamedTuple):
    name: str
    handler: str
    writes: bool
    in_tx: bool
    values: tuple
    reply: Callable | None
    route: str
    fanout_read: bool


def _opt(cls):
    make = cls._make
    return lambda r, a: None if r is None else make(r)


def _many(cls):
    make = cls._make
    return lambda r, a: [make(x) for x in r]


def _one(cls):
    make = cls._make
    return lambda r, a: make(r)


def _pair(r, a):
    return None if r is None else tuple(r)


def _items(r, a):
    return [tuple(x) for x in r]


def _tx_commit(r, a):
    # Each buffered write's own reply, shaped as if it had been sent alone.
    return [shape(w[0], w[1], x) for w, x in zip(a[2], r)]


def _op(name, handler, *, writes=False, in_tx=False, values=(), reply=None, route="run",
        fanout_read=False) -> Op:
    return Op(name, handler, writes, in_tx, values, reply, route, fanout_read)


_TABLE = (
    # runs
    _op("run.begin", "begin_run", writes=True, values=(4,), route="begin"),
    _op("run.end", "end_run", writes=True),
    _op("run.abort", "abort_run", writes=True),
    _op("run.set_status", "set_status", writes=True),
    _op("run.delete", "run_delete", writes=True),
    _op("run.status", "run_status"),
    _op("run.get", "run_get", reply=_opt(RunInfo)),
    _op("run.list", "run_list", reply=_many(RunInfo), route="all", fanout_read=True),
    _op("run.orphaned", "orphaned_runs", route="all", fanout_read=True),
    _op("run.replay", "run_replay"),
    # KV
    _op("kv.put", "kv_put", writes=True, in_tx=True, values=(2,)),
    # several keys of one run in one WAL group: all or none
    _op("kv.put_many", "kv_put_many", writes=True, values=(1,)),
    _op("kv.delete", "kv_delete", writes=True, in_tx=True),
    _op("kv.cas", "kv_cas", writes=True, in_tx=True, values=(3,)),
    _op("kv.get", "kv_get"),
    _op("kv.get_versioned", "kv_get_versioned", reply=_opt(Versioned)),
    _op("kv.exists", "kv_exists"),
    _op("kv.get_many", "kv_get_many"),
    # a value and the KV values / JSON documents its field names, in one read
    _op("kv.get_linked", "kv_get_linked", reply=_pair),
    _op("kv.keys", "kv_keys"),
    _op("kv.items", "kv_items", reply=_items),
    # events
    _op("ev.append", "ev_append", writes=True, in_tx=True, values=(2,), reply=_one(Event)),
    _op("ev.read", "ev_read", reply=_opt(Event)),
    _op("ev.range", "ev_range", reply=_many(Event)),
    _op("ev.head", "ev_head", reply=_opt(Event)),
    _op("ev.count", "ev_count"),
    _op("ev.by_type", "ev_by_type", reply=_many(Event)),
    _op("ev.verify", "ev_verify", reply=_one(ChainCheck)),
    # state cells
    _op("st.init", "st_init", writes=True, in_tx=True, values=(2,)),
    _op("st.set", "st_set", writes=True, in_tx=True, values=(2,)),
    _op("st.cas", "st_cas", writes=True, in_tx=True, values=(3,)),
    _op("st.delete", "st_delete", writes=True, in_tx=True),
    _op("st.read", "st_read", reply=_opt(State)),
    # traces
    _op("tr.record", "tr_record", writes=True, in_tx=True, values=(2, 5)),
    _op("tr.get", "tr_get", reply=_opt(Trace)),
    _op("tr.by_type", "tr_by_type", reply=_many(Trace)),
    _op("tr.by_tag", "tr_by_tag", reply=_many(Trace)),
    _op("tr.roots", "tr_roots", reply=_many(Trace)),
    # the subtree's traces, flat (see Engine.tr_tree); the client assembles the tree
    _op("tr.tree", "tr_tree", reply=_many(Trace)),
    # JSON documents
    _op("js.put", "js_put", writes=True, in_tx=True, values=(2,)),
    _op("js.set", "js_set", writes=True, in_tx=True, values=(3,)),
    _op("js.delete", "js_delete", writes=True, in_tx=True),
    _op("js.push", "js_push", writes=True, in_tx=True, values=(3,)),
    _op("js.pop", "js_pop", writes=True, in_tx=True),
    _op("js.get", "js_get"),
    # transactions
    _op("tx.read", "tx_read"),
    _op("tx.commit", "tx_commit", writes=True, reply=_tx_commit),
    # search and counts
    _op("search.stats", "search_stats", fanout_read=True),
    _op("search.query", "search_query", fanout_read=True),
    _op("engine.counts", "counts", fanout_read=True),
)

#: name -> Op, for every engine operation
OPS: dict[str, Op] = {op.name: op for op in _TABLE}
#: operations that change state
WRITE_OPS = frozenset(op.name for op in _TABLE if op.writes)
#: operations a transaction may buffer
TX_WRITE_OPS = frozenset(op.name for op in _TABLE if op.in_tx)
#: operations that are not about one run: every shard answers, the coordinator merges
FANOUT_OPS = frozenset(op.name for op in _TABLE if op.route == "all")
#: reads a client may send to every shard at once, one answer per shard
FANOUT_READ_OPS = frozenset(op.name for op in _TABLE if op.fanout_read)
#: operation -> the argument positions that carry user values
VALUE_ARGS = {op.name: op.values for op in _TABLE if op.values}
#: operations whose run is their first argument (what `route_run` works out, as a set)
ROUTE_BY_FIRST = frozenset(op.name for op in _TABLE if op.route != "all"
                           and op.name != "run.begin")
#: operation -> how a client sends it: (the index of the argument naming its run, -1 when
#: every shard answers; its value positions; its reply shape or None). `tx.commit` is absent:
#: its body is built by `protocol.op_body`, which checks the values of its writes.
CALL_PLANS = {op.name: (-1 if op.route == "all" else 1 if op.route == "begin" else 0,
                        op.values, op.reply) for op in _TABLE if op.name != "tx.commit"}
#: operation -> the function that shapes its wire result (operations whose result is final
#: as it comes are absent)
REPLY_SHAPES = {op.name: op.reply for op in _TABLE if op.reply is not None}


def route_run(op: str, args):
    """The run that decides where `op` goes, or None when it fans out."""
    spec = OPS.get(op)
    if spec is not None and spec.route == "all":
        return None
    if op == "run.begin":
        return args[1] if len(args) > 1 else None
    return args[0] if args else None


#: cluster requests (answered by the coordinator) whose replies are shaped too
CLUSTER_REPLIES = {"snapshot": _many(SnapshotInfo), "recovery_report": _many(RecoveryResult)}


def shape(op: str, args, result):
    """The API's answer from an operation's wire result (the cluster client's side)."""
    spec = OPS.get(op)
    fn = CLUSTER_REPLIES.get(op) if spec is None else spec.reply
    if fn is None:
        return result
    try:
        return fn(result, args)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed result for {op}: {exc}") from None


__all__ = ["Op", "OPS", "WRITE_OPS", "TX_WRITE_OPS", "FANOUT_OPS", "FANOUT_READ_OPS",
           "VALUE_ARGS", "ROUTE_BY_FIRST", "CALL_PLANS", "REPLY_SHAPES", "CLUSTER_REPLIES",
           "route_run", "shape"]
