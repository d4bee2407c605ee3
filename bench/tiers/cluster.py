"""Tier cluster: the sharded cluster, beside Redis and beside the floor.

Runs only when `inmem.Cluster` can start a cluster; otherwise every row is
reported skipped with the reason. Each cluster lives in a scratch directory
on the output's filesystem and is stopped by its `with` block.

Every comparison is measured in interleaved rounds (`bench.rounds`): all
its sides stay up, and each round runs a short measurement of each side in
turn, so ours and the peer share the same minutes of a machine whose speed
drifts. A row's value is the median of its rounds; `ratio_spread` holds the
spread of the per-round ratio ours / theirs; `extra` each round's figures.

The peers: Redis as its users run it by default (redis-server's defaults
but for the port, the directory and appendonly with appendfsync everysec
for buffered rows / always for strict rows; redis-py's `redis.Redis(host,
port)`), and the floor (`bench.floor`): a bare echo server in a process of
its own, reached over the Unix stream socket our clients use on the same
host and driven by the same loop as our rows, which no store reached over
that transport from Python can beat. Redis is reached over TCP on loopback:
its default configuration opens no Unix socket and redis-py's default
client connects by host and port.

- `cluster.kv.put.single{,.direct}` (buffered, 2 shards): one client in the
  benchmark's process, one put per round trip, through the coordinator
  (`connect(direct=False)`) and with `connect(direct=True)` (straight to the
  owning shard); Redis: one
  SET per round trip; floor: one echo per round trip (`cluster.floor.single`).
- `cluster.kv.put.batched{,.direct}`: pipelines of 1000 puts; redis-py
  pipelines (transaction=False) of 1000 SETs; floor: the BATCH messages such
  a pipeline becomes, all sent, then all echoes read (`cluster.floor.batched`).
- `asyncio.kv.put.concurrent` (buffered, 2 shards): one `inmem.asyncio`
  connection in the benchmark's process with 1,000 puts in flight at once
  (`asyncio.gather` of 1,000 `kv.put`, wave after wave), measured in the
  same interleaved rounds as the single puts; its peer `sync` is the
  blocking client's single puts (`cluster.kv.put.single.direct`, the
  default route). `batch_p50_us` is a wave's latency.
- `cluster.kv.put.single.8clients{,.direct}` (buffered) and
  `cluster.kv.put.strict.8clients{,.direct}` (strict): 8 client processes,
  one put per round trip each, on their own runs (new ones every round, so
  each round draws its own split of the clients over the shards, recorded in
  `extra.clients_per_shard`), against a buffered and a strict cluster up side
  by side; Redis everysec and always with the same 8 processes; floor: the 8
  processes echoing (`cluster.floor.8clients`); for the strict rows the floor
  is durable (`cluster.floor.strict.8clients`): two echo servers, one per
  shard, that each write and fsync a turn's messages before echoing them, the
  clients falling on them as on the shards.
- `cluster.kv.put.scale.shards{1,2}` (buffered): 2 client processes on
  disjoint runs, pipelines of 100, against a 1-shard and a 2-shard cluster up
  side by side; Redis (one server, one thread) and the floor with the same 2.
- `cluster.kv.put.single.curve` and `cluster.kv.put.batched.curve`
  (buffered, 2 shards): the cost of encryption. The coordinator and both
  shards on tcp loopback with the cluster's Curve keys, one client through
  the coordinator (two Curve hops), against the same cluster in the clear
  (`insecure = true`), the peer `plain`; targets: single-op p50 within 1.2x
  of plain, batched throughput within 1.5x (`extra.curve_cost`).
- `cluster.multi_agent.procs{2,4,8}` (buffered): client processes moving one
  shared state cell with `state.transition`, through the client's default
  (direct) path; transitions/s and retry rate.
- `cluster.recovery` (buffered, 2 shards, each holding half the keys): the
  whole cluster is killed with SIGKILL (a crash: no final snapshot), then a
  new one is started on the data it left; the value runs from
  `Cluster.__enter__` to a connected client of a ready cluster (both shards
  recovered, in parallel). Peer: redis-server (appendonly, everysec) with the
  same keys, killed with SIGKILL and restarted: spawn to the first PING
  answered after its load. Both are killed and restarted in alternating
  rounds (`cluster_rounds`) on the data they hold, with the spread of the
  per-round ratios.

Client processes (`bench.clients`) are spawned once per group and keep
their connections across rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections import Counter

import inmem
import inmem.asyncio
from inmem.protocol import slot_of

from ..clients import ClientPool
from ..context import Context, error_row, make_row, peer_value, skipped_row, target
from ..floor import EchoServer, FloorClient
from ..harness import timed_loop
from ..rounds import Side, interleave
from ..workloads import VALUE_BYTES, make_keys, make_value

TIER = "cluster"
BATCH = 1000
CLIENTS = 8
SCALE_CLIENTS = 2
SCALE_BATCH = 100
#: puts in flight at once on the asyncio connection
IN_FLIGHT = 1000

TARGETS = {
    "asyncio.kv.put.concurrent": target(">= 2x the blocking client's single puts",
                                        "asyncio client", min_ratio={"sync": 2.0}),
}


class ClusterUnavailable(Exception):
    """A cluster could not be started or reached: the rows are reported skipped."""


def _cluster_class():
    try:
        return inmem.Cluster
    except Exception as exc:  # the cluster is optional until it lands
        raise ClusterUnavailable(f"inmem.Cluster is not available: {type(exc).__name__}: "
                                 f"{exc}") from None


class RunningCluster:
    """`with RunningCluster(ctx, shards=.., durability=..) as (cluster, db)`: failures to start skip."""

    def __init__(self, ctx, *, shards, durability, data_dir=None):
        self.ctx = ctx
        self.kwargs = {"shards": shards, "durability": durability}
        self.data_dir = data_dir or os.path.join(ctx.scratch("cluster"), "data")
        self.cluster = None
        self.db = None
        self.start_ms = None

    def __enter__(self):
        cls = _cluster_class()
        t0 = time.perf_counter()
        try:
            self.cluster = cls(data_dir=self.data_dir, **self.kwargs)
            self.cluster.__enter__()
        except Exception as exc:
            self.cluster = None
            raise ClusterUnavailable(f"inmem.Cluster({self.kwargs}) did not start: "
                                     f"{type(exc).__name__}: {exc}") from None
        try:
            self.db = self.cluster.connect()
        except Exception as exc:
            self._stop()
            raise ClusterUnavailable(f"cluster.connect() failed: {type(exc).__name__}: "
                                     f"{exc}") from None
        self.start_ms = (time.perf_counter() - t0) * 1000
        return self.cluster, self.db

    def _stop(self):
        if self.db is not None:
            try:
                self.db.close()
            except Exception:  # closing a client of a cluster going down may fail; fine
                pass
            self.db = None
        if self.cluster is not None:
            cluster, self.cluster = self.cluster, None
            cluster.__exit__(None, None, None)

    def __exit__(self, *exc):
        self._stop()
        return False


# -- rows ------------------------------------------------------------------------

FLOOR_MODE = "echo"
#: the strict rows' floor: echo after one write and one fsync per turn (`bench.floor.TurnLog`)
FLOOR_STRICT_MODE = "echo+fsync"

ROWS = (
    ("cluster.kv.put.single", "buffered", ("redis", "floor")),
    ("cluster.kv.put.single.direct", "buffered", ("redis", "floor")),
    ("cluster.floor.single", FLOOR_MODE, ()),
    ("asyncio.kv.put.concurrent", "buffered", ("sync",)),
    ("cluster.kv.put.batched", "buffered", ("redis", "floor")),
    ("cluster.kv.put.batched.direct", "buffered", ("redis", "floor")),
    ("cluster.floor.batched", FLOOR_MODE, ()),
    ("cluster.kv.put.single.8clients", "buffered", ("redis", "floor")),
    ("cluster.kv.put.single.8clients.direct", "buffered", ("redis", "floor")),
    ("cluster.kv.put.strict.8clients", "strict", ("redis", "floor")),
    ("cluster.kv.put.strict.8clients.direct", "strict", ("redis", "floor")),
    ("cluster.floor.8clients", FLOOR_MODE, ()),
    ("cluster.floor.strict.8clients", FLOOR_STRICT_MODE, ()),
    ("cluster.kv.put.scale.shards1", "buffered", ("redis", "floor")),
    ("cluster.kv.put.scale.shards2", "buffered", ("redis", "floor")),
    ("cluster.kv.put.single.curve", "buffered", ("plain",)),
    ("cluster.kv.put.batched.curve", "buffered", ("plain",)),
    ("cluster.multi_agent.procs2", "buffered", ()),
    ("cluster.multi_agent.procs4", "buffered", ()),
    ("cluster.multi_agent.procs8", "buffered", ()),
    ("cluster.recovery", "buffered", ("redis",)),
)

ROUTES = {"routed": "through the coordinator (connect(direct=False))",
          "direct": "straight to the owning shard (connect(direct=True))"}
FLOOR_CONFIG = ("a bare echo server in its own process, listening as a shard does (a pyzmq "
                "ROUTER on ipc:// and the Unix stream socket beside it); it takes every ready "
                "message and echoes it back; the client sends over the stream socket, as ours "
                "does by default, the frames our client sends for the same puts, packed once")


FLOOR_STRICT_CONFIG = ("two floor echo servers, one per shard, each writing every turn's "
                       "messages to a preallocated file on the disk the shards use with one "
                       "write and one fsync before it echoes them (group commit and nothing "
                       "else); each round the 8 clients fall on them as they fall on the "
                       "shards in the direct row")


def run(ctx: Context) -> None:
    s = ctx.sizes
    rounds = s["cluster_rounds"]
    groups = [
        (_names("cluster.kv.put.single", "cluster.floor.single", "cluster.kv.put.batched",
                "cluster.floor.batched") + ("asyncio.kv.put.concurrent",),
         lambda: _one_client(ctx, rounds, s["cluster_single_ops"], s["cluster_batched_ops"])),
        (_names("cluster.kv.put.single.8clients", "cluster.kv.put.strict.8clients",
                "cluster.floor.8clients", "cluster.floor.strict.8clients"),
         lambda: _eight_clients(ctx, rounds, s["cluster_strict_ops_per_client"])),
        (("cluster.kv.put.single.curve", "cluster.kv.put.batched.curve"),
         lambda: _curve(ctx, rounds, s["cluster_single_ops"], s["cluster_batched_ops"])),
        (("cluster.kv.put.scale.shards1", "cluster.kv.put.scale.shards2"),
         lambda: _scale(ctx, rounds, s["cluster_scale_ops_per_client"])),
        (("cluster.multi_agent.procs2", "cluster.multi_agent.procs4",
          "cluster.multi_agent.procs8"),
         lambda: _multi_agent(ctx, max(20, s["scenario_steps"] // 2))),
        (("cluster.recovery",), lambda: _recovery(ctx, s["recovery_keys"])),
    ]
    meta = {name: (mode, peers) for name, mode, peers in ROWS}
    for names, fn in groups:
        with ctx.case(f"cluster: {', '.join(names)}"):
            _guarded(ctx, names, fn, meta)


def _names(*bases) -> tuple:
    """Each put row with its `.direct` twin; floor rows as they are."""
    out = []
    for b in bases:
        out += [b] if b.startswith("cluster.floor.") else [b, f"{b}.direct"]
    return tuple(out)


def _guarded(ctx, names, fn, meta) -> None:
    done = len(ctx.rows)
    try:
        fn()
        return
    except ClusterUnavailable as exc:
        def make(name, exc=exc):
            mode, peers = meta[name]
            return skipped_row(name, TIER, mode, _unit(name), str(exc), peers=peers)
    except Exception as exc:  # one broken group must not cost the others
        def make(name, exc=exc):
            mode, peers = meta[name]
            return error_row(name, TIER, mode, _unit(name), exc, peers=peers)
    have = {r["name"] for r in ctx.rows[done:]}
    for name in names:
        if name not in have:
            ctx.add(make(name))


def _unit(name):
    return "ms" if name == "cluster.recovery" else "ops/s"


# -- the peers, up for a whole group --------------------------------------------

class _Unavailable:
    """A peer that could not be set up: its side raises the reason in every round."""

    def __init__(self, exc: Exception):
        self.exc = exc

    def __call__(self, r):
        raise self.exc


def _redis(ctx, stack, persistence):
    """A redis-server as users run it (released with the stack), or _Unavailable."""
    try:
        server = ctx.peers.redis(persistence, user_defaults=True)
    except Exception as exc:  # the peer is skipped with the reason; our rows still run
        return _Unavailable(exc)
    stack.callback(ctx.peers.release, server)
    return server


def _floor(stack):
    try:
        server = EchoServer().start()
    except Exception as exc:  # as for any peer: skipped with the reason
        return _Unavailable(exc)
    stack.callback(server.stop)
    return server


def _peer_config(redis, what: str) -> dict:
    cfg = redis.describe() if hasattr(redis, "describe") else {}
    return {"redis": {**cfg, "workload": what}, "floor": FLOOR_CONFIG}


# -- one client, in this process ------------------------------------------------------

def _one_client(ctx, rounds, single_ops, batched_ops):
    value = make_value(VALUE_BYTES)
    warm = min(single_ops, 200)
    keys = make_keys(rounds * (single_ops + warm))
    batches = max(2, batched_ops // BATCH)
    batch_keys = make_keys(BATCH * 10, prefix="b")
    with contextlib.ExitStack() as stack:
        cluster, _db = stack.enter_context(RunningCluster(ctx, shards=2, durability="buffered"))
        # Both routes named, whichever one connect() defaults to.
        clients = {route: cluster.connect(direct=route == "direct") for route in ROUTES}
        for c in clients.values():
            stack.callback(c.close)
        redis, floor = _redis(ctx, stack, "buffered"), _floor(stack)
        runs = {route: c.begin_run(name=f"bench-{route}") for route, c in clients.items()}
        rclient = stack.enter_context(contextlib.closing(redis.default_client())) \
            if not isinstance(redis, _Unavailable) else None
        fclient = stack.enter_context(contextlib.closing(FloorClient(
            floor.endpoint, value=value, batch=BATCH))) \
            if not isinstance(floor, _Unavailable) else None

        def single(put):
            return lambda r: timed_loop(put, single_ops, warmup=warm,
                                        start=r * (single_ops + warm), samples=2000)

        def batched(op):
            def side(r):
                out = timed_loop(op, batches, warmup=2, samples=200)
                out["ops_per_s"] *= BATCH
                out["ops"] *= BATCH
                return out
            return side

        aio = stack.enter_context(contextlib.closing(_AsyncPuts(cluster.endpoint, keys, value)))
        waves = max(4, 2 * single_ops // IN_FLIGHT)

        def concurrent(r):
            out = timed_loop(aio.wave, waves, warmup=1, start=r * (waves + 1), samples=waves)
            out["ops_per_s"] *= IN_FLIGHT
            out["ops"] *= IN_FLIGHT
            return out

        sides = [Side(route, single(_put_op(c, runs[route], keys, value)))
                 for route, c in clients.items()]
        sides += [Side("asyncio", concurrent),
                  Side("redis", single(_redis_set_op(rclient, keys, value))
                       if rclient else redis, optional=True),
                  Side("floor", single(fclient.single) if fclient else floor, optional=True)]
        il = interleave(sides, rounds, ctx.log)
        config = _peer_config(redis, "one SET per round trip")
        for route, suffix in (("routed", ""), ("direct", ".direct")):
            _add(ctx, f"cluster.kv.put.single{suffix}", "buffered", il, route,
                 {"redis": "redis", "floor": "floor"},
                 extra={"shards": 2, "route": ROUTES[route], "clients": 1, "peer_config": config})
        _add_floor(ctx, "cluster.floor.single", il, {"clients": 1, "config": FLOOR_CONFIG})
        _add(ctx, "asyncio.kv.put.concurrent", "buffered", il, "asyncio", {"sync": "direct"},
             latency_per="batch", target=TARGETS["asyncio.kv.put.concurrent"],
             extra={"shards": 2, "route": ROUTES["direct"], "in_flight": IN_FLIGHT,
                    "connections": 1, "peer_config": {
                        "sync": "the blocking client's single puts, " + ROUTES["direct"]}})

        sides = [Side(route, batched(_pipeline_op(c, runs[route], batch_keys, value)))
                 for route, c in clients.items()]
        sides += [Side("redis", batched(_redis_pipeline_op(rclient, batch_keys, value))
                       if rclient else redis, optional=True),
                  Side("floor", batched(fclient.batch) if fclient else floor, optional=True)]
        il = interleave(sides, rounds, ctx.log)
        config = _peer_config(redis, "redis-py pipelines (transaction=False) of 1000 SETs")
        for route, suffix in (("routed", ""), ("direct", ".direct")):
            _add(ctx, f"cluster.kv.put.batched{suffix}", "buffered", il, route,
                 {"redis": "redis", "floor": "floor"}, latency_per="batch",
                 extra={"shards": 2, "route": ROUTES[route], "batch": BATCH,
                        "peer_config": config})
        _add_floor(ctx, "cluster.floor.batched", il, {"batch": BATCH, "config": FLOOR_CONFIG},
                   latency_per="batch")


# -- Curve against the clear, both on tcp loopback --------------------------------------

#: how much slower Curve may be than the same cluster in the clear
CURVE_TARGETS = {"single": ("p50", 1.2), "batched": ("ops_per_s", 1.5)}


def _tcp_config(ctx, name: str, keys_dir) -> str:
    """A 2-shard config with the coordinator and both shards on tcp loopback."""
    from ..peers import free_port
    path = os.path.join(ctx.scratch("cluster"), f"{name}.toml")
    security = f'keys = "{keys_dir}"' if keys_dir else "insecure = true"
    shards = "".join(f'[[shard]]\nid = {i}\nendpoint = "tcp://127.0.0.1:{free_port()}"\n'
                     for i in range(2))
    with open(path, "w") as f:
        f.write(f'[cluster]\nshards = 2\nendpoint = "tcp://127.0.0.1:{free_port()}"\n'
                f'{security}\n{shards}')
    return path


def _curve(ctx, rounds, single_ops, batched_ops):
    from inmem import keys as keyfiles
    value = make_value(VALUE_BYTES)
    warm = min(single_ops, 200)
    keys = make_keys(rounds * (single_ops + warm))
    batches = max(2, batched_ops // BATCH)
    batch_keys = make_keys(BATCH * 10, prefix="b")
    keys_dir = os.path.join(ctx.scratch("cluster"), "keys")
    keyfiles.generate(keys_dir, 2)
    with contextlib.ExitStack() as stack:
        clients = {}
        for side, kd in (("curve", keys_dir), ("plain", None)):
            cfg = _tcp_config(ctx, side, kd)
            cluster = stack.enter_context(_started(_cluster_class()(
                config=cfg, data_dir=os.path.join(ctx.scratch("cluster"), f"data-{side}"),
                durability="buffered")))
            clients[side] = cluster.connect(direct=False)
            stack.callback(clients[side].close)
        runs = {side: c.begin_run(name=f"bench-{side}") for side, c in clients.items()}

        def single(put):
            return lambda r: timed_loop(put, single_ops, warmup=warm,
                                        start=r * (single_ops + warm), samples=2000)

        def batched(op):
            def side(r):
                out = timed_loop(op, batches, warmup=2, samples=200)
                out["ops_per_s"] *= BATCH
                out["ops"] *= BATCH
                return out
            return side

        il = interleave([Side(side, single(_put_op(c, runs[side], keys, value)))
                         for side, c in clients.items()], rounds, ctx.log)
        _add(ctx, "cluster.kv.put.single.curve", "buffered", il, "curve", {"plain": "plain"},
             extra={"shards": 2, "route": ROUTES["routed"], "transport": "tcp loopback",
                    "curve_cost": _curve_cost(il, "single")})
        il = interleave([Side(side, batched(_pipeline_op(c, runs[side], batch_keys, value)))
                         for side, c in clients.items()], rounds, ctx.log)
        _add(ctx, "cluster.kv.put.batched.curve", "buffered", il, "curve", {"plain": "plain"},
             latency_per="batch",
             extra={"shards": 2, "route": ROUTES["routed"], "transport": "tcp loopback",
                    "batch": BATCH, "curve_cost": _curve_cost(il, "batched")})


@contextlib.contextmanager
def _started(cluster):
    try:
        cluster.start()
    except Exception as exc:
        raise ClusterUnavailable(f"a tcp cluster did not start: {type(exc).__name__}: "
                                 f"{exc}") from None
    try:
        yield cluster
    finally:
        cluster.stop()


def _curve_cost(il, kind: str) -> dict:
    """Curve / plain for the row's measure, with its target and whether it was met."""
    measure, limit = CURVE_TARGETS[kind]
    if measure == "p50":
        curve, plain = il.latency("curve")["p50_us"], il.latency("plain")["p50_us"]
        ratio = curve / plain if curve and plain else None
    else:
        curve, plain = il.median("curve"), il.median("plain")
        ratio = plain / curve if curve and plain else None  # how many times slower
    return {"measure": measure, "slowdown": ratio, "target_max": limit,
            "met": None if ratio is None else ratio <= limit}


def _put_op(db, run, keys, value):
    put = db.kv.put
    return lambda i: put(run, keys[i], value)


class _AsyncPuts:
    """One `inmem.asyncio` connection on an event loop of its own; `wave(i)`: 1,000 puts at once."""

    def __init__(self, endpoint, keys, value):
        self.loop = asyncio.new_event_loop()
        self.keys, self.value = keys, value
        self.db = self.loop.run_until_complete(inmem.asyncio.connect(endpoint))
        self.run = self.loop.run_until_complete(self.db.begin_run(name="bench-asyncio"))

    async def _wave(self, base):
        put, run, keys, value = self.db.kv.put, self.run, self.keys, self.value
        n = len(keys)
        await asyncio.gather(*[put(run, keys[(base + j) % n], value) for j in range(IN_FLIGHT)])

    def wave(self, i):
        self.loop.run_until_complete(self._wave(i * IN_FLIGHT))

    def close(self):
        try:
            self.loop.run_until_complete(self.db.close())
        finally:
            self.loop.close()


def _redis_set_op(client, keys, value):
    set_ = client.set
    return lambda i: set_(keys[i], value)


def _pipeline_op(db, run, keys, value):
    def op(i):
        base = (i % 10) * BATCH
        with db.pipeline() as p:
            pput = p.kv.put
            for k in keys[base:base + BATCH]:
                pput(run, k, value)
            p.execute()
    return op


def _redis_pipeline_op(client, keys, value):
    def op(i):
        base = (i % 10) * BATCH
        pipe = client.pipeline(transaction=False)
        for k in keys[base:base + BATCH]:
            pipe.set(k, value)
        pipe.execute()
    return op


# -- rows from interleaved rounds ----------------------------------------------------

def _add(ctx, name, mode, il, ours, peers: dict, *, extra: dict, latency_per="op",
         target=None) -> None:
    """A row for side `ours` of `il`, with each peer's median and the per-round ratio spread."""
    lat = il.latency(ours)
    values = {peer: il.median(side) for peer, side in peers.items()}
    spreads = {peer: il.ratio_spread(ours, side) for peer, side in peers.items()}
    n = sum(r["ops"] for r in il.results[ours])
    extra = {**extra, "rounds": il.rounds, "round_order": il.orders,
             "ours": il.side_summary(ours),
             "peer_detail": {peer: il.side_summary(side) for peer, side in peers.items()}}
    p50, p99 = lat["p50_us"], lat["p99_us"]
    if latency_per == "batch":
        extra.update(batch_p50_us=p50, batch_p99_us=p99)
        p50 = p99 = None
    ctx.add(make_row(name, TIER, mode, "ops/s", value=il.median(ours), p50=p50, p99=p99,
                     n=n, peers=values, ratio_spread=spreads, extra=extra, target=target))


def _add_floor(ctx, name, il, extra, *, latency_per="op", side="floor",
               mode=FLOOR_MODE) -> None:
    """The floor's own row: what the echo loop measured, or why it did not run."""
    if side in il.skipped:
        ctx.add(skipped_row(name, TIER, mode, "ops/s",
                            il.skipped[side].removeprefix("skipped: ")))
        return
    _add(ctx, name, mode, il, side, {}, extra=extra, latency_per=latency_per)


# -- client processes -----------------------------------------------------------------

def _eight_clients(ctx, rounds, per_client):
    warm = min(per_client, 20)
    splits: dict = {}
    with contextlib.ExitStack() as stack:
        clusters = {}
        for mode in ("buffered", "strict"):
            cluster, db = stack.enter_context(RunningCluster(ctx, shards=2, durability=mode))
            # Fresh runs every round: the runs' ids decide how the 8 clients fall on
            # the 2 shards (4/4 one time, 2/6 another), and a strict shard's
            # throughput follows the clients it has; each round draws its own split,
            # so the median is over the splits users meet rather than one of them.
            runs = {route: [[db.begin_run(name=f"{route}-r{r}-client-{c}")
                             for c in range(CLIENTS)] for r in range(rounds)]
                    for route in ROUTES}
            clusters[mode] = (cluster.endpoint, runs)
            splits[mode] = {route: [_split(db, rs) for rs in runs[route]] for route in ROUTES}
            if mode == "strict":
                # The durable floor's clients fall on its two servers as the direct
                # row's fall on the shards, round by round.
                owners = [[_owner(db, run) or 0 for run in rs] for rs in runs["direct"]]
        redis = {"buffered": _redis(ctx, stack, "buffered"),
                 "strict": _redis(ctx, stack, "strict")}
        floor = _floor(stack)
        logged = _logged_floors(ctx, stack, 2)
        pool = stack.enter_context(ClientPool(CLIENTS))

        def side(spec_of):
            def fn(r):
                return pool.run([{**spec_of(c, r), "kind": "put", "ops": per_client,
                                  "warmup": warm, "tag": f"r{r}"} for c in range(CLIENTS)])
            return fn

        # Each mode's rows next to their Redis, the floor between the two modes.
        sides = []
        for mode, (endpoint, runs) in clusters.items():
            for route in ROUTES:
                sides.append(Side(f"{mode}.{route}", side(
                    lambda c, r, e=endpoint, rs=runs[route], d=route == "direct":
                    {"target": "inmem", "endpoint": e, "direct": d, "runs": [rs[r][c]]})))
            server = redis[mode]
            sides.append(Side(f"redis.{mode}", server if isinstance(server, _Unavailable)
                              else side(lambda c, r, p=server.port:
                                        {"target": "redis", "port": p}), optional=True))
            if mode == "buffered":
                sides.append(Side("floor", floor if isinstance(floor, _Unavailable) else side(
                    lambda c, r: {"target": "floor", "endpoint": floor.endpoint}), optional=True))
            else:
                sides.append(Side("floor.strict", logged if isinstance(logged, _Unavailable)
                                  else side(lambda c, r: {
                                      "target": "floor",
                                      "endpoint": logged[owners[r][c]].endpoint}),
                                  optional=True))
        il = interleave(sides, rounds, ctx.log)
    names = {"buffered": "cluster.kv.put.single.8clients",
             "strict": "cluster.kv.put.strict.8clients"}
    for mode, base in names.items():
        fsync = "everysec" if mode == "buffered" else "always"
        config = _peer_config(redis[mode], f"appendfsync {fsync}; {CLIENTS} client processes, "
                                           "one SET per round trip")
        if mode == "strict":
            config = {**config, "floor": FLOOR_STRICT_CONFIG}
        for route, suffix in (("routed", ""), ("direct", ".direct")):
            _add(ctx, base + suffix, mode, il, f"{mode}.{route}",
                 {"redis": f"redis.{mode}",
                  "floor": "floor" if mode == "buffered" else "floor.strict"},
                 extra={"clients": CLIENTS, "shards": 2, "route": ROUTES[route],
                        "clients_per_shard": splits[mode][route], "peer_config": config})
    _add_floor(ctx, "cluster.floor.8clients", il, {"clients": CLIENTS, "config": FLOOR_CONFIG})
    _add_floor(ctx, "cluster.floor.strict.8clients", il,
               {"clients": CLIENTS, "servers": 2, "clients_per_server": splits["strict"]["direct"],
                "config": FLOOR_STRICT_CONFIG}, side="floor.strict", mode=FLOOR_STRICT_MODE)


def _owner(db, run):
    """The shard that owns `run` (None when the client has no slot map)."""
    owners = db._backend.owners
    return None if owners is None else owners[slot_of(run)]


def _logged_floors(ctx, stack, n):
    """`n` durable echo servers, each logging on the output's disk, or _Unavailable."""
    servers = []
    try:
        for i in range(n):
            server = EchoServer(log_dir=ctx.scratch(f"floor-log-{i}")).start()
            stack.callback(server.stop)
            servers.append(server)
    except Exception as exc:  # as for any peer: skipped with the reason
        return _Unavailable(exc)
    return servers


def _split(db, runs) -> list:
    """How many of `runs` each shard owns, most first (one round's split of the clients)."""
    if db._backend.owners is None:
        return []
    return sorted(Counter(_owner(db, run) for run in runs).values(), reverse=True)


def _scale(ctx, rounds, per_client):
    batches = max(2, per_client // SCALE_BATCH)
    with contextlib.ExitStack() as stack:
        endpoints, runs = {}, {}
        for shards in (1, 2):
            cluster, db = stack.enter_context(RunningCluster(ctx, shards=shards,
                                                       durability="buffered"))
            endpoints[shards] = cluster.endpoint
            runs[shards] = [[db.begin_run(name=f"c{c}-r{r}") for r in range(16)]
                            for c in range(SCALE_CLIENTS)]
        redis, floor = _redis(ctx, stack, "buffered"), _floor(stack)
        pool = stack.enter_context(ClientPool(SCALE_CLIENTS))

        def side(spec_of):
            def fn(r):
                return pool.run([{**spec_of(c), "kind": "put", "ops": batches,
                                  "batch": SCALE_BATCH, "warmup": 1, "tag": f"r{r}"}
                                 for c in range(SCALE_CLIENTS)])
            return fn

        sides = [Side(f"shards{k}", side(lambda c, k=k: {
            "target": "inmem", "endpoint": endpoints[k], "runs": runs[k][c]})) for k in (1, 2)]
        sides.append(Side("redis", redis if isinstance(redis, _Unavailable) else side(
            lambda c: {"target": "redis", "port": redis.port}), optional=True))
        sides.append(Side("floor", floor if isinstance(floor, _Unavailable) else side(
            lambda c: {"target": "floor", "endpoint": floor.endpoint}), optional=True))
        il = interleave(sides, rounds, ctx.log)
    config = _peer_config(redis, f"one server, the same {SCALE_CLIENTS} client processes, "
                                 f"pipelines of {SCALE_BATCH}")
    speedup = il.ratio_spread("shards2", "shards1") or {}
    for k in (1, 2):
        _add(ctx, f"cluster.kv.put.scale.shards{k}", "buffered", il, f"shards{k}",
             {"redis": "redis", "floor": "floor"}, latency_per="batch",
             extra={"shards": k, "clients": SCALE_CLIENTS, "batch": SCALE_BATCH,
                    "speedup_vs_1_shard": speedup.get("median") if k == 2 else 1.0,
                    "speedup_spread": speedup, "peer_config": config})


def _multi_agent(ctx, per_client):
    # Untimed transitions first: each client process opens its connection to
    # the shard on its first call, which is not what the row measures.
    warm = min(per_client, 20)
    with RunningCluster(ctx, shards=2, durability="buffered") as (cluster, db):
        run = db.begin_run(name="coordination")
        db.state.init(run, "shared", 0)
        for procs in (2, 4, 8):
            start = db.state.read(run, "shared").value
            with ClientPool(procs) as pool:
                r = pool.run([{"target": "inmem", "endpoint": cluster.endpoint,
                               "kind": "transition", "direct": True, "runs": [run],
                               "ops": per_client, "warmup": warm}
                              for _ in range(procs)])
            end = db.state.read(run, "shared").value
            done = procs * per_client
            applied = procs * (per_client + warm)
            ctx.add(make_row(f"cluster.multi_agent.procs{procs}", TIER, "buffered", "ops/s",
                             value=r["ops_per_s"], p50=r["p50_us"], p99=r["p99_us"], n=done,
                             extra={"processes": procs, "transitions": done,
                                    "path": "direct", "fn_calls": r["fn_calls"],
                                    "retry_rate": (r["fn_calls"] - applied) / r["fn_calls"]
                                    if r["fn_calls"] else None,
                                    "lost_updates": applied - (end - start)}))


def _recovery(ctx, keys_total):
    from .recovery import alternate
    keys = make_keys(keys_total)
    value = make_value(VALUE_BYTES)
    data_dir = os.path.join(ctx.scratch("cluster-recovery"), "data")
    first = RunningCluster(ctx, shards=2, durability="buffered", data_dir=data_dir)
    with first as (cluster, db):
        runs = [db.begin_run(name=f"r{r}", run_id=rid)
                for r, rid in enumerate(_even_run_ids(db, 16, "recovery"))]
        for lo in range(0, len(keys), BATCH):
            with db.pipeline() as p:
                for j, k in enumerate(keys[lo:lo + BATCH]):
                    p.kv.put(runs[(lo + j) % 16], k, value)
                p.execute()
        # Buffered: what the last flush interval held is not yet on disk; wait it out,
        # as Redis's everysec peer gets the same second below.
        time.sleep(1.0)
        split = [s.get("keys") for s in db.info()["shards"]]
        db.close()
        first.db = None
        cluster.kill()  # SIGKILL to the coordinator and both shards
    last_probe = (runs[(len(keys) - 1) % 16], keys[-1])

    def ours(_r):
        again = RunningCluster(ctx, shards=2, durability="buffered", data_dir=data_dir)
        with again as (c, db):
            ms = again.start_ms
            probe = db.kv.get(*last_probe)
            try:
                report = [{"shard": r.shard, "seconds": r.seconds,
                           "records_replayed": r.records_replayed,
                           "started_at": r.started_at, "finished_at": r.finished_at,
                           "snapshot_used": bool(r.snapshot_used)}
                          for r in db.recovery_report()]
            except Exception as exc:  # the report is context; the timing stands without it
                report = f"unavailable: {type(exc).__name__}: {exc}"
            db.close()
            again.db = None
            c.kill()  # a crash again: every round restarts from the same kind of state
        if probe != value:
            raise RuntimeError("the restarted cluster lost the last key written")
        return ms, {"recovery_report": report}

    redis = _RedisRestart(ctx, keys, value)
    try:
        alt = alternate(ctx, "cluster recovery", ctx.sizes["cluster_rounds"], ours,
                        lambda _r: redis.restart())
    finally:
        redis.close()
    peer = alt["peer_skipped"] or (statistics.median(alt["peer"]) if alt["peer"] else None)
    ctx.add(make_row("cluster.recovery", TIER, "buffered", "ms",
                     value=statistics.median(alt["ours"]), n=len(keys), peers={"redis": peer},
                     ratio_spread={"redis": alt["ratio_spread"]},
                     extra={"shards": 2, "keys_per_shard": split,
                            "recovery_report": alt["ours_detail"][-1]["recovery_report"],
                            "rounds": {"ours_ms": alt["ours"], "peer_ms": alt["peer"],
                                       "order": alt["order"],
                                       "peer_detail": alt["peer_detail"]},
                            "peer_config": {"redis": "appendonly yes, appendfsync everysec, the "
                                                     "same keys; SIGKILL, then restart: spawn "
                                                     "to the first PING after the load"},
                            "note": "SIGKILL of the whole cluster, then Cluster.__enter__ to a "
                                    "connected client of the ready cluster; each round "
                                    "restarts from a SIGKILL of the one before"}))


class _RedisRestart:
    """redis-server (appendonly, everysec) with the keys, killed and restarted once per round."""

    def __init__(self, ctx, keys, value):
        self.ctx, self.keys = ctx, keys
        self.server = None
        self.error: Exception | None = None
        try:
            self.server = ctx.peers.redis("buffered")
            client = self.server.client
            for lo in range(0, len(keys), BATCH):
                pipe = client.pipeline(transaction=False)
                for k in keys[lo:lo + BATCH]:
                    pipe.set(k, value)
                pipe.execute()
            time.sleep(1.0)  # everysec: the last second reaches the disk
        except Exception as exc:  # reported as the peer's skip reason by the rounds
            self.error = exc

    def restart(self):
        if self.error is not None:
            raise self.error
        timing = self.server.restart(kill=True)
        loaded = self.server.client.dbsize()
        if loaded != len(self.keys):
            raise RuntimeError(f"redis loaded {loaded} keys after the restart, expected "
                               f"{len(self.keys)}")
        return timing["wall_ms"], {**timing, "keys": loaded}

    def close(self) -> None:
        if self.server is not None:
            self.ctx.peers.release(self.server)
            self.server = None


def _even_run_ids(db, count: int, prefix: str) -> list[str]:
    """`count` run ids, alternately owned by shard 0 and shard 1 (by the coordinator's slot map),
    so that each shard holds half the keys; the ids as they come when there is no map."""
    from .replay import slot_owners
    owners = slot_owners(db)
    if owners is None or not {0, 1} <= set(owners):
        return [f"{prefix}-{i}" for i in range(count)]
    by_shard: dict = {0: [], 1: []}
    i = 0
    while min(len(v) for v in by_shard.values()) < count // 2:
        rid = f"{prefix}-{i}"
        i += 1
        shard = owners[slot_of(rid)]
        if shard in by_shard and len(by_shard[shard]) < count // 2:
            by_shard[shard].append(rid)
    return [rid for pair in zip(by_shard[0], by_shard[1]) for rid in pair]


