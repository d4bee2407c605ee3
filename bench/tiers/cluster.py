"""Tier cluster: the sharded cluster over ZeroMQ, side by side with Redis.

Runs only when `inmem.Cluster` can start a cluster; otherwise every row is
reported skipped with the reason. Each cluster lives in a scratch directory
on the output's filesystem and is stopped by its `with` block.

- `cluster.kv.put.single` (buffered): one client, one put per round trip;
  Redis with appendfsync everysec, one SET per round trip through redis-py.
- `cluster.kv.put.batched` (buffered): pipelines of 1000 puts; redis-py
  pipelines (transaction=False) of 1000 SETs.
- `cluster.kv.put.strict.8clients` (strict): 8 client processes, one put per
  round trip each, on their own runs; Redis appendfsync always, 8 processes.
- `cluster.kv.put.{single,batched,strict.8clients}.direct`: the same three
  workloads on the same cluster with clients made by `connect(direct=True)`,
  which send run operations straight to the owning shard (the slot map names
  its endpoint) instead of through the coordinator; fresh runs, so the keys
  are new as they were for the routed rows. The Redis figure is the one the
  routed row measured (one measurement, shown on both rows), so the pair of
  rows shows what the coordinator hop costs.
- `cluster.kv.put.scale.shards{1,2}` (buffered): 2 client processes on
  disjoint runs, pipelines of 100, against 1 and then 2 shards; Redis (one
  server, one thread) with the same 2 clients.
- `cluster.multi_agent.procs{2,4,8}` (buffered): client processes moving one
  shared state cell with `state.transition`; transitions/s and retry rate.
- `cluster.recovery` (buffered): restart a cluster on the data it left, from
  `Cluster.__enter__` to a connected client.

Client processes are started with the spawn method (a Database must not
cross a fork), wait on one barrier, and time themselves with perf_counter,
which is system-wide on Linux, so their spans can be merged.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as _queue
import time

import inmem

from ..context import Context, error_row, make_row, peer_value, skipped_row
from ..harness import gc_paused, measure, percentile, timer_overhead_ns
from ..workloads import VALUE_BYTES, make_keys, make_value

TIER = "cluster"
CLIENT_TIMEOUT_S = 600
BATCH = 1000


class ClusterUnavailable(Exception):
    """A cluster could not be started or reached: the rows are reported skipped."""


def _cluster_class():
    try:
        return inmem.Cluster
    except Exception as exc:  # the cluster is optional until it lands
        raise ClusterUnavailable(f"inmem.Cluster is not available: {type(exc).__name__}: "
                                 f"{exc}") from None


class _Running:
    """`with _Running(ctx, shards=.., durability=..) as (cluster, db)`: failures to start skip."""

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

ROWS = (
    ("cluster.kv.put.single", "buffered", ("redis",)),
    ("cluster.kv.put.single.direct", "buffered", ("redis",)),
    ("cluster.kv.put.batched", "buffered", ("redis",)),
    ("cluster.kv.put.batched.direct", "buffered", ("redis",)),
    ("cluster.kv.put.strict.8clients", "strict", ("redis",)),
    ("cluster.kv.put.strict.8clients.direct", "strict", ("redis",)),
    ("cluster.kv.put.scale.shards1", "buffered", ("redis",)),
    ("cluster.kv.put.scale.shards2", "buffered", ("redis",)),
    ("cluster.multi_agent.procs2", "buffered", ()),
    ("cluster.multi_agent.procs4", "buffered", ()),
    ("cluster.multi_agent.procs8", "buffered", ()),
    ("cluster.recovery", "buffered", ()),
)


def run(ctx: Context) -> None:
    s = ctx.sizes
    groups = [
        (("cluster.kv.put.single", "cluster.kv.put.single.direct", "cluster.kv.put.batched",
          "cluster.kv.put.batched.direct"),
         # Round trips cost ~100x an embedded op: three repeats are plenty.
         lambda: _single_and_batched(ctx, s["cluster_single_ops"], s["cluster_batched_ops"],
                                     min(3, s["repeats"]))),
        (("cluster.kv.put.strict.8clients", "cluster.kv.put.strict.8clients.direct"),
         lambda: _strict_8(ctx, s["cluster_strict_ops_per_client"])),
        (("cluster.kv.put.scale.shards1", "cluster.kv.put.scale.shards2"),
         lambda: _scale(ctx, s["cluster_scale_ops_per_client"])),
        (("cluster.multi_agent.procs2", "cluster.multi_agent.procs4",
          "cluster.multi_agent.procs8"),
         lambda: _multi_agent(ctx, max(20, s["scenario_steps"] // 10))),
        (("cluster.recovery",), lambda: _recovery(ctx, s["recovery_keys"])),
    ]
    meta = {name: (mode, peers) for name, mode, peers in ROWS}
    for names, fn in groups:
        with ctx.case(f"cluster: {', '.join(names)}"):
            _guarded(ctx, names, fn, meta)


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


def _stats(m):
    return {"ops_per_s": m.ops_per_s, "p50_us": m.p50_us, "p99_us": m.p99_us}


def _single_and_batched(ctx, single_ops, batched_ops, reps):
    value = make_value(VALUE_BYTES)
    keys = make_keys(max(single_ops, BATCH * 10))
    batches = max(3, batched_ops // BATCH)
    ours = {}
    with _Running(ctx, shards=2, durability="buffered") as (cluster, db):
        ours["routed"] = _put_loops(db, "bench", keys, value, single_ops, batches, reps)
        direct = cluster.connect(direct=True)
        try:
            ours["direct"] = _put_loops(direct, "bench-direct", keys, value, single_ops,
                                        batches, reps)
        finally:
            direct.close()
    details: dict = {}
    redis = _RedisSession(ctx, "buffered")
    try:
        peer_single = peer_value(lambda: redis.single(keys, value, single_ops, reps), details,
                                 "redis")
        details_b: dict = {}
        peer_batched = peer_value(lambda: redis.batched(keys, value, batches, reps), details_b,
                                  "redis")
    finally:
        redis.close()
    routes = (("routed", "", "through the coordinator"),
              ("direct", ".direct", "straight to the owning shard (connect(direct=True))"))
    for route, suffix, how in routes:
        single = ours[route][0]
        ctx.add(make_row(f"cluster.kv.put.single{suffix}", TIER, "buffered", "ops/s",
                         value=single.ops_per_s, p50=single.p50_us, p99=single.p99_us,
                         n=single.n, peers={"redis": peer_single},
                         extra={"shards": 2, "route": how, "ours": _stats(single),
                                "peer_detail": details,
                                "peer_config": {"redis": "appendonly, appendfsync everysec; "
                                                         "one SET per round trip"}}))
    for route, suffix, how in routes:
        batched = ours[route][1]
        ctx.add(make_row(f"cluster.kv.put.batched{suffix}", TIER, "buffered", "ops/s",
                         value=batched.ops_per_s * BATCH, n=batched.n * BATCH,
                         peers={"redis": peer_batched},
                         extra={"shards": 2, "route": how, "batch": BATCH,
                                "batch_p50_us": batched.p50_us,
                                "batch_p99_us": batched.p99_us, "peer_detail": details_b,
                                "peer_config": {"redis": "appendfsync everysec; pipelines of "
                                                         "1000 SETs, transaction=False"}}))


def _put_loops(db, run_name, keys, value, single_ops, batches, reps):
    """(single, batched) measurements of puts into a fresh run of `db`."""
    nk = len(keys)
    run = db.begin_run(name=run_name)
    put = db.kv.put
    single = measure(lambda i: put(run, keys[i % nk], value), single_ops, repeats=reps,
                     warmup=min(single_ops, 200), samples=min(single_ops, 2000))

    def batch(i):
        base = (i % 10) * BATCH
        with db.pipeline() as p:
            pput = p.kv.put
            for k in keys[base:base + BATCH]:
                pput(run, k, value)
            p.execute()

    batched = measure(batch, batches, repeats=reps, warmup=2, samples=min(batches, 200))
    return single, batched


class _RedisSession:
    def __init__(self, ctx, persistence):
        self.ctx = ctx
        self.persistence = persistence
        self.server = None

    def _server(self):
        if self.server is None:
            self.server = self.ctx.peers.redis(self.persistence)
        return self.server

    def single(self, keys, value, n, reps):
        client = self._server().new_client()
        nk = len(keys)
        set_ = client.set
        m = measure(lambda i: set_(keys[i % nk], value), n, repeats=reps,
                    warmup=min(n, 200), samples=min(n, 2000))
        client.close()
        return m.ops_per_s, _stats(m)

    def batched(self, keys, value, batches, reps):
        client = self._server().new_client()

        def batch(i):
            base = (i % 10) * BATCH
            pipe = client.pipeline(transaction=False)
            for k in keys[base:base + BATCH]:
                pipe.set(k, value)
            pipe.execute()

        m = measure(batch, batches, repeats=reps, warmup=2, samples=min(batches, 200))
        client.close()
        return m.ops_per_s * BATCH, {"batch_p50_us": m.p50_us, "batch_p99_us": m.p99_us}

    def close(self):
        if self.server is not None:
            self.ctx.peers.release(self.server)
            self.server = None


# -- client processes ------------------------------------------------------------

def client_main(spec: dict, barrier, results) -> None:
    """One client process: connect, wait for the others, run the loop, report."""
    try:
        results.put(_client_loop(spec, barrier))
    except BaseException as exc:  # reported to the parent, which fails the row
        try:
            barrier.abort()
        except Exception:
            pass
        results.put({"client": spec["client"], "error": f"{type(exc).__name__}: {exc}"})


def _client_loop(spec, barrier):
    value = make_value(spec.get("value_bytes", VALUE_BYTES))
    n, batch, idx = spec["ops"], spec.get("batch", 1), spec["client"]
    keys = make_keys(max(n * batch, 1) if spec["kind"] == "put" else 1, prefix=f"c{idx}-")
    runs = spec.get("runs") or []
    closer = None
    if spec["target"] == "inmem":
        db = inmem.connect(spec["endpoint"], timeout=30, direct=spec.get("direct", False))
        closer = db.close
        if spec["kind"] == "put" and batch == 1:
            put = db.kv.put
            run = runs[0]

            def op(i):
                put(run, keys[i], value)
        elif spec["kind"] == "put":
            nr = len(runs)

            def op(i):
                with db.pipeline() as p:
                    pput = p.kv.put
                    base = i * batch
                    for j in range(base, base + batch):
                        pput(runs[j % nr], keys[j], value)
                    p.execute()
        else:
            transition, run = db.state.transition, runs[0]
            calls = [0]

            def bump(state):
                calls[0] += 1
                return state.value + 1, None

            def op(i):
                transition(run, "shared", bump, retries=100_000)
    else:
        import redis
        client = redis.Redis(host="127.0.0.1", port=spec["port"], socket_timeout=600)
        closer = client.close
        if batch == 1:
            set_ = client.set

            def op(i):
                set_(keys[i], value)
        else:
            def op(i):
                pipe = client.pipeline(transaction=False)
                base = i * batch
                for j in range(base, base + batch):
                    pipe.set(keys[j], value)
                pipe.execute()
    overhead = timer_overhead_ns()
    stride = max(1, n // 500)
    lat = []
    ns = time.perf_counter_ns
    barrier.wait(timeout=CLIENT_TIMEOUT_S)
    with gc_paused():
        t0 = ns()
        for i in range(n):
            if i % stride == 0:
                a = ns()
                op(i)
                lat.append(max(0, ns() - a - overhead))
            else:
                op(i)
        t1 = ns()
    if closer is not None:
        closer()
    out = {"client": idx, "t0": t0, "t1": t1, "ops": n * batch, "lat": lat}
    if spec["kind"] == "transition":
        out["fn_calls"] = calls[0]
    return out


def run_clients(specs: list[dict]) -> dict:
    """Start one spawned process per spec; merge their spans and latency samples."""
    mpc = mp.get_context("spawn")
    barrier = mpc.Barrier(len(specs))
    results = mpc.Queue()
    procs = [mpc.Process(target=client_main, args=(spec, barrier, results), daemon=True)
             for spec in specs]
    for p in procs:
        p.start()
    got = []
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    try:
        while len(got) < len(specs):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"client processes did not finish in {CLIENT_TIMEOUT_S} s")
            try:
                got.append(results.get(timeout=min(left, 5)))
            except _queue.Empty:
                if all(not p.is_alive() for p in procs) and results.empty():
                    codes = [p.exitcode for p in procs]
                    raise RuntimeError(f"client processes exited without a result: {codes}")
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    errors = [r["error"] for r in got if "error" in r]
    if errors:
        raise RuntimeError(f"a client process failed: {errors[0]}")
    span = max(r["t1"] for r in got) - min(r["t0"] for r in got)
    ops = sum(r["ops"] for r in got)
    lat = sorted(x for r in got for x in r["lat"])
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    return {"ops_per_s": ops / (span / 1e9) if span > 0 else float("inf"), "ops": ops,
            "p50_us": None if p50 is None else p50 / 1000, "fn_calls":
            sum(r.get("fn_calls", 0) for r in got),
            "p99_us": None if p99 is None else p99 / 1000, "clients": len(got)}


def _strict_8(ctx, per_client):
    clients = 8
    ours = {}
    with _Running(ctx, shards=2, durability="strict") as (cluster, db):
        for route in ("routed", "direct"):
            # Fresh runs for each route, so both write new keys.
            runs = [db.begin_run(name=f"{route}-client-{c}") for c in range(clients)]
            ours[route] = run_clients([
                {"target": "inmem", "endpoint": cluster.endpoint, "kind": "put",
                 "runs": [runs[c]], "ops": per_client, "client": c,
                 "direct": route == "direct"} for c in range(clients)])
    details: dict = {}

    def redis_side():
        server = ctx.peers.redis("strict")
        try:
            r = run_clients([{"target": "redis", "port": server.port, "kind": "put",
                              "ops": per_client, "client": c} for c in range(clients)])
        finally:
            ctx.peers.release(server)
        return r["ops_per_s"], r

    peer = peer_value(redis_side, details, "redis")
    for route, suffix in (("routed", ""), ("direct", ".direct")):
        r = ours[route]
        ctx.add(make_row(f"cluster.kv.put.strict.8clients{suffix}", TIER, "strict", "ops/s",
                         value=r["ops_per_s"], p50=r["p50_us"], p99=r["p99_us"],
                         n=r["ops"], peers={"redis": peer},
                         extra={"clients": clients, "shards": 2,
                                "route": "straight to the owning shard (connect(direct=True))"
                                if route == "direct" else "through the coordinator",
                                "ours": r, "peer_detail": details,
                                "peer_config": {"redis": "appendonly, appendfsync always; 8 "
                                                         "client processes, one SET per "
                                                         "round trip"}}))


def _scale(ctx, per_client):
    batch = 100
    batches = max(2, per_client // batch)
    results = {}
    for shards in (1, 2):
        with _Running(ctx, shards=shards, durability="buffered") as (cluster, db):
            runs = [[db.begin_run(name=f"c{c}-r{r}") for r in range(16)] for c in range(2)]
            results[shards] = run_clients([
                {"target": "inmem", "endpoint": cluster.endpoint, "kind": "put", "runs": runs[c],
                 "ops": batches, "batch": batch, "client": c} for c in range(2)])
    details: dict = {}

    def redis_side():
        server = ctx.peers.redis("buffered")
        try:
            r = run_clients([{"target": "redis", "port": server.port, "kind": "put",
                              "ops": batches, "batch": batch, "client": c} for c in range(2)])
        finally:
            ctx.peers.release(server)
        return r["ops_per_s"], r

    peer = peer_value(redis_side, details, "redis")
    for shards in (1, 2):
        r = results[shards]
        ctx.add(make_row(f"cluster.kv.put.scale.shards{shards}", TIER, "buffered", "ops/s",
                         value=r["ops_per_s"], n=r["ops"], peers={"redis": peer},
                         extra={"shards": shards, "clients": 2, "batch": batch,
                                "batch_p50_us": r["p50_us"], "batch_p99_us": r["p99_us"],
                                "speedup_vs_1_shard": r["ops_per_s"] / results[1]["ops_per_s"],
                                "peer_detail": details,
                                "peer_config": {"redis": "one server, the same 2 client "
                                                         "processes, pipelines of 100"}}))


def _multi_agent(ctx, per_client):
    with _Running(ctx, shards=2, durability="buffered") as (cluster, db):
        run = db.begin_run(name="coordination")
        db.state.init(run, "shared", 0)
        for procs in (2, 4, 8):
            start = db.state.read(run, "shared").value
            r = run_clients([{"target": "inmem", "endpoint": cluster.endpoint,
                              "kind": "transition", "runs": [run], "ops": per_client,
                              "client": c} for c in range(procs)])
            end = db.state.read(run, "shared").value
            done = procs * per_client
            ctx.add(make_row(f"cluster.multi_agent.procs{procs}", TIER, "buffered", "ops/s",
                             value=r["ops_per_s"], p50=r["p50_us"], p99=r["p99_us"], n=done,
                             extra={"processes": procs, "transitions": done,
                                    "fn_calls": r["fn_calls"],
                                    "retry_rate": (r["fn_calls"] - done) / r["fn_calls"]
                                    if r["fn_calls"] else None,
                                    "lost_updates": done - (end - start)}))


def _recovery(ctx, keys_total):
    keys = make_keys(keys_total)
    value = make_value(VALUE_BYTES)
    data_dir = os.path.join(ctx.scratch("cluster-recovery"), "data")
    with _Running(ctx, shards=2, durability="buffered", data_dir=data_dir) as (_c, db):
        runs = [db.begin_run(name=f"r{r}") for r in range(16)]
        for lo in range(0, len(keys), BATCH):
            with db.pipeline() as p:
                for j, k in enumerate(keys[lo:lo + BATCH]):
                    p.kv.put(runs[(lo + j) % 16], k, value)
                p.execute()
    again = _Running(ctx, shards=2, durability="buffered", data_dir=data_dir)
    with again as (_c, db):
        ms = again.start_ms
        probe = db.kv.get(runs[(len(keys) - 1) % 16], keys[-1])
        try:
            report = [{"shard": r.shard, "seconds": r.seconds,
                       "records_replayed": r.records_replayed,
                       "snapshot_used": bool(r.snapshot_used)} for r in db.recovery_report()]
        except Exception as exc:  # the report is context; the timing stands without it
            report = f"unavailable: {type(exc).__name__}: {exc}"
    if probe != value:
        raise RuntimeError("the restarted cluster lost the last key written")
    ctx.add(make_row("cluster.recovery", TIER, "buffered", "ms", value=ms, n=len(keys),
                     extra={"shards": 2, "recovery_report": report,
                            "note": "Cluster.__enter__ to a connected, ready client, after "
                                    "a clean stop (final snapshot if configured)"}))
