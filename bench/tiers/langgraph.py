"""Tier langgraph: InmemSaver against LangGraph's own SQLite and in-memory checkpointers.

Rows (async methods, as a LangGraph graph calls them; ops/s):

- `langgraph.checkpoint.put.embedded` / `.cluster`: `aput` of an agent's
  checkpoint, each the child of the previous one on one thread: a messages
  channel (10 messages, about 1.3 KB) and a step counter change every
  step, a plan and a notes channel (200 B) stay as they were;
  `new_versions` names the two that changed, as LangGraph's loop does.
- `langgraph.checkpoint.get_tuple.embedded` / `.cluster`: `aget_tuple` of
  the newest checkpoint of a thread that holds `langgraph_history`
  (100) such checkpoints, with two pending writes on the newest.

Ours: `InmemSaver` over an embedded "buffered" store in the benchmark's
process (`.embedded`), and over a 2-shard "buffered" `inmem.Cluster` through
a default `inmem.asyncio.connect()` (`.cluster`: the asyncio client, as an
async graph uses it, on the shards' Unix stream sockets). Peers, each with its defaults as its
users run it: LangGraph's `AsyncSqliteSaver.from_conn_string(<file>)`
(langgraph-checkpoint-sqlite, on the output's filesystem) as "sqlite" and
LangGraph's `InMemorySaver()` as "inmemory". Every checkpoint and write is
generated before the timed loop, with each saver's own `get_next_version`.

All four sides of a row pair (embedded, cluster, sqlite, inmemory) are
measured in interleaved rounds (`bench.rounds`), `cluster_rounds` of them,
each side timing every operation of its pass; a row's value is the median
of its rounds, the peers' figures theirs, and `ratio_spread` the spread of
the per-round ratio. The peers need `pip install 'inmem[bench]'`; without
LangGraph every row is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import os
import time

from ..context import Context, error_row, make_row, skipped_row, target
from ..rounds import Side, interleave

TIER = "langgraph"
PEERS = ("sqlite", "inmemory")
ROWS = ("langgraph.checkpoint.put.embedded", "langgraph.checkpoint.put.cluster",
        "langgraph.checkpoint.get_tuple.embedded", "langgraph.checkpoint.get_tuple.cluster")
TARGET = target(">= 2x the SQLite saver and within 1.5x of the in-memory saver",
                "goal: LangGraph savers", min_ratio={"sqlite": 2.0, "inmemory": 1 / 1.5})
MESSAGE = "lorem ipsum dolor sit amet " * 4


def run(ctx: Context) -> None:
    try:
        import langgraph.checkpoint.base  # noqa: F401
        from inmem.langgraph import InmemSaver  # noqa: F401
    except ImportError as exc:
        for name in ROWS:
            ctx.add(skipped_row(name, TIER, "buffered", "ops/s",
                                f"LangGraph is not installed ({exc}); pip install "
                                "'inmem[bench]'", peers=PEERS, target=TARGET))
        return
    try:
        _run(ctx)
    except Exception as exc:  # a broken tier reports every row it owed
        for name in ROWS:
            if not any(r["name"] == name for r in ctx.rows):
                ctx.add(error_row(name, TIER, "buffered", "ops/s", exc, peers=PEERS,
                                  target=TARGET))


def _run(ctx: Context) -> None:
    import inmem
    import inmem.asyncio
    from inmem.langgraph import InmemSaver

    ops = ctx.sizes.get("langgraph_ops", 1000)
    history = ctx.sizes.get("langgraph_history", 100)
    rounds = ctx.sizes["cluster_rounds"]
    loop = asyncio.new_event_loop()
    embedded_dir = ctx.scratch("langgraph-embedded")
    sqlite_dir = ctx.scratch("langgraph-sqlite")
    db = inmem.open(embedded_dir, durability="buffered")
    cluster = inmem.Cluster(data_dir=os.path.join(ctx.scratch("langgraph-cluster"), "data"),
                            shards=2, durability="buffered")
    cluster.__enter__()
    try:
        cdb = loop.run_until_complete(inmem.asyncio.connect(cluster.endpoint))
        sides = {"embedded": lambda: InmemSaver(db), "cluster": lambda: InmemSaver(cdb)}
        peer_savers, closers = _peers(loop, sqlite_dir)
        sides.update(peer_savers)
        savers = {name: make() if callable(make) else make for name, make in sides.items()}
        _rows(ctx, loop, savers, "put", ops, history, rounds)
        _rows(ctx, loop, savers, "get_tuple", ops, history, rounds)
        for close in closers:
            loop.run_until_complete(close())
        loop.run_until_complete(cdb.close())
    finally:
        cluster.__exit__(None, None, None)
        db.close()
        loop.close()
        ctx.discard(embedded_dir)
        ctx.discard(sqlite_dir)


def _peers(loop, sqlite_dir):
    """name -> saver (or the reason it cannot run), and what closes them."""
    out, closers = {}, []
    from langgraph.checkpoint.memory import InMemorySaver
    out["inmemory"] = InMemorySaver()
    try:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
        manager = AsyncSqliteSaver.from_conn_string(os.path.join(sqlite_dir, "checkpoints.db"))
        out["sqlite"] = loop.run_until_complete(manager.__aenter__())
        closers.append(lambda: manager.__aexit__(None, None, None))
    except Exception as exc:  # the peer is optional: its rows say why it did not run
        out["sqlite"] = _Unavailable(f"langgraph-checkpoint-sqlite: {type(exc).__name__}: {exc}")
    return out, closers


class _Unavailable:
    def __init__(self, reason: str):
        self.reason = reason


def _rows(ctx, loop, savers, what, ops, history, rounds) -> None:
    prepared = {name: _prepare(loop, s, what, ops, history) for name, s in savers.items()
                if not isinstance(s, _Unavailable)}
    fns = []
    for name, saver in savers.items():
        if isinstance(saver, _Unavailable):
            fns.append(Side(name, _raiser(saver.reason), optional=True))
        else:
            fns.append(Side(name, _side(loop, saver, what, prepared[name], ops),
                            optional=name in PEERS))
    il = interleave(fns, rounds, ctx.log)
    for ours in ("embedded", "cluster"):
        lat = il.latency(ours)
        peers = {p: il.median(p) for p in PEERS}
        spreads = {p: il.ratio_spread(ours, p) for p in PEERS}
        n = sum(r["ops"] for r in il.results[ours])
        extra = {"rounds": il.rounds, "round_order": il.orders, "ops_per_round": ops,
                 "thread_history": history if what == "get_tuple" else None,
                 "ours": il.side_summary(ours),
                 "peer_detail": {p: il.side_summary(p) for p in PEERS},
                 "offload": savers[ours].offload,
                 "database": ("inmem.open(dir, durability='buffered')" if ours == "embedded"
                              else "await inmem.asyncio.connect(url)"),
                 "peer_config": {"sqlite": "AsyncSqliteSaver.from_conn_string(file)",
                                 "inmemory": "InMemorySaver()"}}
        ctx.add(make_row(f"langgraph.checkpoint.{what}.{ours}", TIER, "buffered", "ops/s",
                         value=il.median(ours), p50=lat["p50_us"], p99=lat["p99_us"], n=n,
                         peers=peers, ratio_spread=spreads, target=TARGET, extra=extra))


def _raiser(reason):
    def fn(r):
        raise RuntimeError(reason)
    return fn


def _checkpoints(saver, count, thread):
    """`count` (config, checkpoint, metadata, new_versions) of one thread, each the
    child of the one before; the config's checkpoint_id is filled in as they are put."""
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.base.id import uuid6
    versions: dict = {}
    out = []
    for i in range(count):
        cp = empty_checkpoint()
        cp["id"] = str(uuid6(clock_seq=-1))
        cp["channel_values"] = {
            "messages": [{"role": ("user", "assistant")[j % 2], "content": f"{j} {MESSAGE}"}
                         for j in range(10)],
            "step": i, "plan": ["search", "read", "answer"], "notes": "n" * 200}
        changed = {k: saver.get_next_version(versions.get(k), None) for k in ("messages", "step")}
        if not versions:
            changed.update({k: saver.get_next_version(None, None) for k in ("plan", "notes")})
        versions = {**versions, **changed}
        cp["channel_versions"] = dict(versions)
        out.append((thread, cp, {"source": "loop", "step": i, "parents": {}}, changed))
    return out


def _prepare(loop, saver, what, ops, history):
    """What a side's rounds consume: fresh checkpoints per round, or a filled thread."""
    if what == "put":
        return {"saver": saver}
    thread = f"get-{time.monotonic_ns()}"
    config = loop.run_until_complete(_put_all(saver, _checkpoints(saver, history, thread)))
    loop.run_until_complete(saver.aput_writes(config, [("messages", {"role": "tool"}),
                                                      ("step", history)], "task-1"))
    return {"config": {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}}


async def _put_all(saver, items):
    config = None
    for thread, cp, meta, changed in items:
        cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        if config is not None:
            cfg["configurable"]["checkpoint_id"] = config["configurable"]["checkpoint_id"]
        config = await saver.aput(cfg, cp, meta, changed)
    return config


def _side(loop, saver, what, prepared, ops):
    def fn(r):
        if what == "put":
            items = _checkpoints(saver, ops, f"put-{r}-{time.monotonic_ns()}")
            coro = _timed_puts(saver, items)
        else:
            coro = _timed_gets(saver, prepared["config"], ops)
        lat, seconds = loop.run_until_complete(coro)
        return {"ops_per_s": len(lat) / seconds, "lat": lat, "ops": len(lat)}
    return fn


async def _timed_puts(saver, items):
    lat = []
    config = None
    clock = time.perf_counter_ns
    t0 = clock()
    for thread, cp, meta, changed in items:
        cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        if config is not None:
            cfg["configurable"]["checkpoint_id"] = config["configurable"]["checkpoint_id"]
        a = clock()
        config = await saver.aput(cfg, cp, meta, changed)
        lat.append(clock() - a)
    return lat, (clock() - t0) / 1e9


async def _timed_gets(saver, config, n):
    lat = []
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in range(n):
        a = clock()
        tup = await saver.aget_tuple(config)
        lat.append(clock() - a)
    assert tup is not None and tup.pending_writes
    return lat, (clock() - t0) / 1e9
