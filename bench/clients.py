"""Client processes for the cluster tier: started once, then one measured loop per command.

`ClientPool(n)` spawns n processes (the spawn method: a Database must not
cross a fork). `pool.run(specs)` hands spec c to client c; every client
builds its op, runs its warm-up, waits on one barrier with the others, and
times its loop (`harness.timed_loop`); the parent merges their spans (from
the first start to the last end: perf_counter is system-wide on Linux) and
their latency samples. Connections are opened on a client's first command
for a target and kept for the pool's life, so rounds after the first time
the same warm connections, and no round pays for process start-up.

A spec: {"target": "inmem" | "redis" | "floor", "kind": "put" | "transition",
"ops": loops to time, "batch": puts per loop (1: one per round trip),
"warmup": untimed loops, "tag": part of every key (fresh keys per round),
and per target "endpoint" + "direct" + "runs" (inmem), "port" (redis) or
"endpoint" (floor)}. Redis is reached through redis-py's `redis.Redis(host,
port)` with nothing else set: its defaults, as its users get them.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as _queue
import time

from .harness import percentile, timed_loop
from .workloads import VALUE_BYTES, make_keys, make_value

CLIENT_TIMEOUT_S = 600
LATENCY_SAMPLES = 500


class ClientPool:
    """`with ClientPool(8) as pool: pool.run([spec, ...])` — one spec per client process."""

    def __init__(self, clients: int):
        if clients < 1:
            raise ValueError("a pool needs at least one client")
        mpc = mp.get_context("spawn")
        self.clients = clients
        self.barrier = mpc.Barrier(clients)
        self.results = mpc.Queue()
        self.commands = [mpc.Queue() for _ in range(clients)]
        self.procs = [mpc.Process(target=client_main,
                                  args=(c, self.commands[c], self.barrier, self.results),
                                  daemon=True, name=f"inmem-bench-client-{c}")
                      for c in range(clients)]
        for p in self.procs:
            p.start()

    @property
    def pids(self) -> list:
        return [p.pid for p in self.procs]

    def run(self, specs: list[dict]) -> dict:
        """Run one loop in every client; the merged result (ops/s over the common span)."""
        if len(specs) != self.clients:
            raise ValueError(f"{len(specs)} specs for {self.clients} clients")
        for c, spec in enumerate(specs):
            self.commands[c].put({**spec, "client": c})
        got = self._collect()
        # A client that fails before the barrier breaks it for the others: report
        # its error, not the BrokenBarrierError they answer with.
        errors = sorted((r["error"] for r in got if "error" in r),
                        key=lambda e: e.startswith("BrokenBarrierError"))
        if errors:
            # Every client has answered, so none is waiting: the barrier can be reused.
            self.barrier.reset()
            raise RuntimeError(f"a client process failed: {errors[0]}")
        return merge(got)

    def _collect(self) -> list:
        got = []
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while len(got) < self.clients:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"client processes did not finish in {CLIENT_TIMEOUT_S} s")
            try:
                got.append(self.results.get(timeout=min(left, 5)))
            except _queue.Empty:
                dead = [p.exitcode for p in self.procs if not p.is_alive()]
                if dead and self.results.empty():
                    raise RuntimeError(f"client processes exited without a result: {dead}")
        return got

    def close(self) -> None:
        for q in self.commands:
            try:
                q.put(None)
            except (OSError, ValueError):
                pass
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)

    def __enter__(self) -> "ClientPool":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def merge(got: list) -> dict:
    """The clients' results as one: ops over the span from first start to last end."""
    span = max(r["t1"] for r in got) - min(r["t0"] for r in got)
    ops = sum(r["ops"] for r in got)
    lat = sorted(x for r in got for x in r["lat"])
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    return {"ops_per_s": ops / (span / 1e9) if span > 0 else float("inf"), "ops": ops,
            "p50_us": None if p50 is None else p50 / 1000,
            "p99_us": None if p99 is None else p99 / 1000,
            "fn_calls": sum(r.get("fn_calls", 0) for r in got), "clients": len(got),
            "lat": lat}


def run_clients(specs: list[dict]) -> dict:
    """One loop in a pool of len(specs) fresh processes, which then exit."""
    with ClientPool(len(specs)) as pool:
        return pool.run(specs)


# -- inside a client process ---------------------------------------------------------

def client_main(idx: int, commands, barrier, results) -> None:
    """A client process: run each command it is given until it is given None."""
    conns: dict = {}
    try:
        while True:
            spec = commands.get()
            if spec is None:
                return
            try:
                results.put(_measured(spec, conns, barrier))
            except BaseException as exc:  # reported to the parent, which fails the side
                try:
                    barrier.abort()
                except Exception:
                    pass
                results.put({"client": idx, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        for handle in conns.values():
            try:
                handle.close()
            except Exception:  # exiting anyway; a peer already gone is fine
                pass


def _measured(spec: dict, conns: dict, barrier) -> dict:
    batch = spec.get("batch", 1)
    n, warmup = spec["ops"], spec.get("warmup", 0)
    op, extra = _make_op(spec, conns, (warmup + n) * batch)
    out = timed_loop(op, n, warmup=warmup, samples=LATENCY_SAMPLES,
                     before=lambda: barrier.wait(timeout=CLIENT_TIMEOUT_S))
    out["ops"] = n * batch
    out["client"] = spec["client"]
    out.update(extra())
    return out


def _connection(conns: dict, key: tuple, opener):
    """The client's connection for `key` (anything with close()), opened on first use."""
    if key not in conns:
        conns[key] = opener()
    return conns[key]


def _make_op(spec: dict, conns: dict, nkeys: int):
    """(op(i), extra()) for a spec: the loop body and what it adds to the result."""
    value = make_value(spec.get("value_bytes", VALUE_BYTES))
    batch = spec.get("batch", 1)
    target = spec["target"]
    keys = make_keys(nkeys if spec["kind"] == "put" else 1,
                     prefix=f"c{spec['client']}{spec.get('tag', '')}-")
    nothing = dict
    if target == "floor":
        from .floor import FloorClient
        client = _connection(conns, ("floor", spec["endpoint"], batch), lambda: FloorClient(
            spec["endpoint"], value=value, batch=batch if batch > 1 else 0))
        return (client.single if batch == 1 else client.batch), nothing
    if target == "redis":
        import redis
        client = _connection(conns, ("redis", spec["port"]),
                             lambda: redis.Redis(host="127.0.0.1", port=spec["port"]))
        return _redis_op(client, keys, value, batch), nothing
    if target != "inmem":
        raise ValueError(f"unknown target {target!r}")
    import inmem
    direct = spec.get("direct", False)
    db = _connection(conns, ("inmem", spec["endpoint"], direct),
                     lambda: inmem.connect(spec["endpoint"], timeout=30, direct=direct))
    runs = spec.get("runs") or []
    if spec["kind"] == "transition":
        return _transition_op(db, runs[0])
    return _inmem_put_op(db, runs, keys, value, batch), nothing


def _redis_op(client, keys, value, batch):
    if batch == 1:
        set_ = client.set
        return lambda i: set_(keys[i], value)

    def op(i):
        pipe = client.pipeline(transaction=False)
        for j in range(i * batch, (i + 1) * batch):
            pipe.set(keys[j], value)
        pipe.execute()

    return op


def _inmem_put_op(db, runs, keys, value, batch):
    if batch == 1:
        put, run = db.kv.put, runs[0]
        return lambda i: put(run, keys[i], value)
    nr = len(runs)

    def op(i):
        with db.pipeline() as p:
            pput = p.kv.put
            for j in range(i * batch, (i + 1) * batch):
                pput(runs[j % nr], keys[j], value)
            p.execute()

    return op


def _transition_op(db, run):
    transition = db.state.transition
    calls = [0]

    def bump(state):
        calls[0] += 1
        return state.value + 1, None

    def op(i):
        transition(run, "shared", bump, retries=100_000)

    return op, lambda: {"fn_calls": calls[0]}


__all__ = ["ClientPool", "run_clients", "client_main", "merge", "CLIENT_TIMEOUT_S"]
