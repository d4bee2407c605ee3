"""Tier memory: resident memory per key, ours against Redis and plain Python dicts.

Each of our cases runs in a fresh interpreter (`python -m inmem.bench.tiers.memory
CASE N`) so that what one case allocated, or fragmented, never shows in
another: the child imports everything, opens the store, collects garbage,
reads its RSS (psutil), stores N keys (16-byte str keys, distinct 100-byte
values made inside the loop), collects again and reads RSS again. The delta
divided by N is the row's value; the keys and values the store keeps are in
it, because they are what the store costs. The second reading is taken one
second (SETTLE_S) after the last write, in every case: a buffered store holds
the writes of its last flush interval (100 ms) in memory until they are on
disk, and that buffer is not a cost per key.

Cases: `inmem` (an embedded buffered store in a temporary directory, one
run, each key written once), `inmem_history5` (the same, each key written
five times: the run's history keeps every write, on disk behind an index, so
this shows what history costs the heap), `inmem_memory` (an in-memory store,
whose history stays on the heap), `dict` (str -> bytes, the floor a plain
dict sets) and `dict_tuple` (str -> (value, version, timestamp)). The
durable cases also report the store's own `info()` figures (RSS, keys,
bytes per key, history held) in `extra`. Redis is measured in its own server process: `used_memory` and
the server's RSS before and after loading the same keys.

`cluster.memory.bytes_per_key` (buffered, 2 shards): a real cluster, loaded
with the same keys through pipelines of 1000 puts, spread evenly over runs
that each shard owns; the RSS of each shard process (psutil, by the pids the
cluster reports) is read before and after, and the row's value is the
largest shard's delta over the keys it holds. `extra.shards` has each
shard's figures and its own `info()` bytes per key.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time

from ..context import Context, error_row, fmt_count, make_row, peer_value, skipped_row
from ..machine import REPO_ROOT

TIER = "memory"
MODE = "inmemory"
CHILD_TIMEOUT_S = 1800
PEERS = ("redis", "redis.rss", "python.dict", "python.dict.tuple")
#: seconds between the last write and reading the RSS (ten default flush intervals)
SETTLE_S = 1.0


def key_of(i: int) -> str:
    return f"k{i:015d}"


def value_of(i: int) -> bytes:
    return (i.to_bytes(8, "little") * 13)[:100]


# -- the child side ----------------------------------------------------------------

def _rss() -> int:
    import psutil
    return psutil.Process().memory_info().rss


def child(case: str, n: int) -> dict:
    writes = 5 if case == "inmem_history5" else 1
    db = None
    if case in ("inmem", "inmem_history5", "inmem_memory"):
        import tempfile

        import inmem
        tmp = None if case == "inmem_memory" else tempfile.mkdtemp(prefix="inmem-memory-")
        db = inmem.open(tmp, snapshot_on_close=False)
        run = db.begin_run(name="memory")
        put = db.kv.put

        def store(k, v):
            put(run, k, v)
    elif case == "dict":
        d: dict = {}

        def store(k, v):
            d[k] = v
    elif case == "dict_tuple":
        d2: dict = {}

        def store(k, v):
            old = d2.get(k)
            d2[k] = (v, 1 if old is None else old[1] + 1, 1_700_000_000_000_000)
    else:
        raise SystemExit(f"unknown memory case {case!r}")
    gc.collect()
    before = _rss()
    for w in range(writes):
        for i in range(n):
            store(key_of(i), value_of(i + w))
    # What a store holds for its keys, not its write buffer: a buffered store
    # keeps the last flush interval's writes (100 ms by default) in memory until
    # they are on disk, and its upkeep gives freed pages back a moment later.
    # Every case, ours and the dicts alike, is read after the same pause.
    time.sleep(SETTLE_S)
    gc.collect()
    after = _rss()
    out = {"case": case, "n": n, "writes_per_key": writes, "rss_before": before,
           "rss_after": after, "bytes_per_key": (after - before) / n}
    if db is not None:
        info = db.info()["shards"][0]
        out["store_info"] = {k: info.get(k) for k in ("keys", "memory_bytes", "bytes_per_key",
                                                      "history")}
        db.close()
        if tmp is not None:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def run_child(case: str, n: int) -> dict:
    proc = subprocess.run([sys.executable, "-m", "inmem.bench.tiers.memory", case, str(n)],
                          cwd=str(REPO_ROOT), capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S, env={**os.environ, "PYTHONHASHSEED": "0"})
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory child {case} {n} failed (exit {proc.returncode}): {tail}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"memory child {case} {n} printed no result")
    return json.loads(lines[-1])


# -- the tier ----------------------------------------------------------------------

def run(ctx: Context) -> None:
    sizes = ctx.sizes["memory_keys"]
    largest = max(sizes)
    for n in sorted(sizes):
        name = "memory.bytes_per_key" if n == largest else f"memory.bytes_per_key.{fmt_count(n)}"
        with ctx.case(f"memory: {name} ({n:,} keys)"):
            try:
                _row(ctx, name, n)
            except Exception as exc:  # one broken case must not cost the others
                ctx.add(error_row(name, TIER, MODE, "B/key", exc, peers=PEERS))
    # At the headline row's size, so that the two compare: a per-key figure
    # at a tenth of the keys carries the same few MB of buffers and allocator
    # pools over a tenth of the keys.
    name = "memory.bytes_per_key.history5"
    ctx.log(f"memory: {name} ({largest:,} keys)")
    try:
        r = run_child("inmem_history5", largest)
        ctx.add(make_row(name, TIER, "buffered", "B/key", value=r["bytes_per_key"], n=largest,
                         extra={"child": r, "note": "each key written 5 times; the run's "
                                "history keeps every write, on disk behind an index"}))
    except Exception as exc:
        ctx.add(error_row(name, TIER, "buffered", "B/key", exc))
    n = min(sizes)
    name = "cluster.memory.bytes_per_key"
    ctx.log(f"memory: {name} ({n:,} keys)")
    try:
        _cluster_row(ctx, name, n)
    except Exception as exc:
        ctx.add(error_row(name, TIER, "buffered", "B/key", exc))
    name = "memory.bytes_per_key.inmemory"
    ctx.log(f"memory: {name} ({n:,} keys)")
    try:
        r = run_child("inmem_memory", n)
        ctx.add(make_row(name, TIER, MODE, "B/key", value=r["bytes_per_key"], n=n,
                         extra={"child": r, "note": "an in-memory store: the history of each "
                                "write stays on the heap, sharing the key's entry"}))
    except Exception as exc:
        ctx.add(error_row(name, TIER, MODE, "B/key", exc))


def _row(ctx, name, n):
    ours = run_child("inmem", n)
    details: dict = {}
    redis = _redis_memory(ctx, n)
    peers = {
        "redis": peer_value(lambda: redis("used"), details, "redis"),
        "redis.rss": peer_value(lambda: redis("rss"), details, "redis.rss"),
        "python.dict": peer_value(lambda: _dict_case("dict", n), details, "python.dict"),
        "python.dict.tuple": peer_value(lambda: _dict_case("dict_tuple", n), details,
                                        "python.dict.tuple"),
    }
    ctx.add(make_row(name, TIER, "buffered", "B/key", value=ours["bytes_per_key"], n=n, peers=peers,
                     extra={"child": ours, "peer_detail": details,
                            "peer_config": {
                                "redis": "INFO used_memory delta / keys",
                                "redis.rss": "redis-server RSS delta / keys",
                                "python.dict": "dict str -> bytes, fresh interpreter",
                                "python.dict.tuple": "dict str -> (bytes, version, ts)"}}))


def _cluster_row(ctx, name, n, shards: int = 2, runs_per_shard: int = 8):
    import time

    import psutil

    from .cluster import BATCH, ClusterUnavailable, RunningCluster, _even_run_ids
    data_dir = os.path.join(ctx.scratch("cluster-memory"), "data")
    try:
        with RunningCluster(ctx, shards=shards, durability="buffered",
                            data_dir=data_dir) as (cluster, db):
            procs = [psutil.Process(pid) for pid in cluster.pids()["shards"]]
            runs = [db.begin_run(name=f"m{i}", run_id=rid) for i, rid in
                    enumerate(_even_run_ids(db, runs_per_shard * shards, "memory"))]
            time.sleep(0.5)  # the shards settle (index slices, first upkeep)
            before = [p.memory_info().rss for p in procs]
            for lo in range(0, n, BATCH):
                with db.pipeline() as pipe:
                    for i in range(lo, min(n, lo + BATCH)):
                        pipe.kv.put(runs[i % len(runs)], key_of(i), value_of(i))
                    pipe.execute()
            time.sleep(SETTLE_S)  # the same pause after the last write as every other case
            after = [p.memory_info().rss for p in procs]
            info = db.info()["shards"]
    except ClusterUnavailable as exc:
        ctx.add(skipped_row(name, TIER, "buffered", "B/key", str(exc)))
        return
    per_shard = []
    for i, (b, a, s) in enumerate(zip(before, after, info)):
        keys = s.get("keys") or 0
        per_shard.append({"shard": i, "pid": procs[i].pid, "keys": keys, "rss_before": b,
                          "rss_after": a, "bytes_per_key": (a - b) / keys if keys else None,
                          "info_bytes_per_key": s.get("bytes_per_key"),
                          "history": s.get("history")})
    values = [p["bytes_per_key"] for p in per_shard if p["bytes_per_key"] is not None]
    if sum(p["keys"] for p in per_shard) != n or not values:
        raise RuntimeError(f"the cluster holds {[p['keys'] for p in per_shard]} keys, "
                           f"expected {n} in all")
    ctx.add(make_row(name, TIER, "buffered", "B/key", value=max(values), n=n,
                     extra={"shards": per_shard, "note": "RSS delta of each shard process "
                            "(psutil) over the keys it holds, the largest; keys loaded "
                            "through pipelines of 1000 puts, 16 runs spread over the shards"}))


def _dict_case(case, n):
    r = run_child(case, n)
    return r["bytes_per_key"], r


def _redis_memory(ctx, n):
    """Load n keys into a fresh redis-server once; answer both of its peer entries."""
    state: dict = {}

    def get(which):
        if "error" in state:
            raise state["error"]
        if "result" not in state:
            try:
                state["result"] = _measure_redis(ctx, n)
            except Exception as exc:
                state["error"] = exc
                raise
        r = state["result"]
        return (r["used_per_key"], r) if which == "used" else (r["rss_per_key"], r)

    return get


def _measure_redis(ctx, n, batch: int = 1000) -> dict:
    import psutil
    server = ctx.peers.redis("inmemory")
    try:
        client = server.client
        proc = psutil.Process(server.pid)
        before = client.info("memory")
        rss0 = proc.memory_info().rss
        for lo in range(0, n, batch):
            pipe = client.pipeline(transaction=False)
            for i in range(lo, min(n, lo + batch)):
                pipe.set(key_of(i), value_of(i))
            pipe.execute()
        time.sleep(SETTLE_S)  # the same pause as our cases
        after = client.info("memory")
        rss1 = proc.memory_info().rss
        keys = client.dbsize()
        if keys != n:
            raise RuntimeError(f"redis holds {keys} keys, expected {n}")
        return {"used_per_key": (after["used_memory"] - before["used_memory"]) / n,
                "rss_per_key": (rss1 - rss0) / n, "used_memory_before": before["used_memory"],
                "used_memory_after": after["used_memory"], "rss_before": rss0, "rss_after": rss1,
                "allocator": after.get("mem_allocator")}
    finally:
        ctx.peers.release(server)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m inmem.bench.tiers.memory CASE N")
    print(json.dumps(child(sys.argv[1], int(sys.argv[2]))))
