"""A seeded fuzzer of every engine operation, with hostile arguments, against a real cluster.

Each call goes through the real client (single calls and batches, through
the coordinator and straight to the shards) with arguments of the wrong
type, huge sizes, deep nesting, odd unicode (lone surrogates included),
huge ints and floats, and None where a list belongs, mixed with plausible
ones so the engine gets past its first check. Every answer must be a value
or an `InmemError` (never a lost connection or a timeout), and no process
may be replaced.

A short fixed-seed run by default; INMEM_FUZZ_SEED and INMEM_FUZZ_N set the
seed and the number of calls for long runs. A failure prints the seed.

An engine bug (an unexpected exception inside an operation, answered as
"internal error") fails the run with its seed and call. One that is not a
wire or decoding problem is fixed in the engine: until then, its (op, args)
goes in a separate test of that case marked xfail(strict=True), so that the
fix shows up as an unexpected pass.
"""

from __future__ import annotations

import os
import random

import psutil
import pytest

from inmem.errors import ClusterNotReady, InmemError, ShardUnavailable, Timeout
from inmem.shard.engine import Engine

from .test_fuzz import _random_value

MiB = 2**20
DEFAULT_SEED = 20240611
DEFAULT_N = 600
ENGINE = Engine()
OPS = sorted(ENGINE.ops)


def _deep(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE = [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**63, 2**64, 10**30, -(10**30),
    1e300, -1e300, float("inf"), float("-inf"), float("nan"), -0.0, 5e-324,
    "", " ", "\x00", "\ud800", "a\udfffb", "\ufeff", "\u202e", "𝕏" * 3, "é" * 600, "k" * 2000,
    "$", "$.", "$..a", "$[999999999999]", "$.a[-1]", "$[", "*",
    b"", b"\x00\xff", [], [None], {}, {"": None}, {"a": {"b": []}}, [[], {}],
    ["k", None], [1, 2, 3], ["$", "a"], ("tuple",), {1, 2}, frozenset(), bytearray(b"x"),
    object(), {1: 2}, {None: 1}, {(1, 2): 3}, _deep(200), _deep(300), _deep(600), _deep(1000),
]


def _huge(rng):
    kind = rng.randrange(7)
    if kind == 0:
        return "x" * rng.choice((MiB, 3 * MiB))
    if kind == 1:
        return rng.randbytes(rng.choice((MiB, 2 * MiB)))
    if kind == 2:
        return list(range(rng.choice((10_000, 200_000))))
    if kind == 3:
        return {str(i): i for i in range(rng.choice((1000, 50_000)))}
    if kind == 4:
        return [[] for _ in range(rng.choice((1000, 100_000)))]
    if kind == 5:
        return "\ud800" * 10_000
    return [{"a": [i, str(i)]} for i in range(20_000)]


def _hostile(rng):
    r = rng.random()
    if r < 0.06:
        return _huge(rng)
    if r < 0.25:
        return _random_value(rng)
    return rng.choice(HOSTILE)


#: a plausible value for each parameter name, so the engine gets past its first checks
def _plausible(rng, name, runs):
    table = {
        "run": lambda: rng.choice(runs), "key": lambda: rng.choice(["k", "doc", "a/b"]),
        "name": lambda: rng.choice(["n", "cell", None]), "value": lambda: {"v": 1},
        "doc": lambda: {"a": [1, 2], "b": {"c": "d"}}, "payload": lambda: {"x": 1},
        "data": lambda: {"x": 1}, "path": lambda: rng.choice(["$", "$.a", "$.a[0]", "$.b.c"]),
        "expected_version": lambda: rng.choice([0, 1, 2]), "ttl": lambda: rng.choice([None, 5]),
        "event_type": lambda: "e", "trace_type": lambda: rng.choice(["thought", "tool_call"]),
        "sequence": lambda: rng.randrange(3), "start": lambda: 0, "end": lambda: 5,
        "status": lambda: rng.choice(["completed", "failed", "active", None]),
        "reads": lambda: [], "writes": lambda: [["kv.put", [rng.choice(runs), "k", 1, None]]],
        "terms": lambda: ["foo"], "n_docs": lambda: 1, "total_len": lambda: 10,
        "dfs": lambda: [1], "tags": lambda: ["t"], "tag": lambda: "t", "metadata": lambda: {},
        "reason": lambda: "why", "error": lambda: "err", "prefix": lambda: "",
        "keys": lambda: ["k"], "at": lambda: None, "top": lambda: 10, "budget_ms": lambda: 5,
        "primitives": lambda: None, "run_id": lambda: f"fz-{rng.randrange(10**9)}",
        "parent": lambda: None, "parent_id": lambda: None, "trace_id": lambda: None,
        "ns": lambda: "kv", "default": lambda: None,
    }
    make = table.get(name)
    return make() if make is not None else None


def _params(op):
    import inspect
    return list(inspect.signature(ENGINE.ops[op]).parameters)


PARAMS = {op: _params(op) for op in OPS}


def _args(rng, op, runs):
    names = PARAMS[op]
    args = [_plausible(rng, n, runs) for n in names]
    for i in range(len(args)):
        if rng.random() < 0.35:
            args[i] = _hostile(rng)
    r = rng.random()
    if r < 0.08 and args:
        args = args[:rng.randrange(len(args))]  # too few
    elif r < 0.14:
        args = args + [_hostile(rng) for _ in range(rng.randrange(1, 3))]  # too many
    return args


def _shown(x, limit: int = 200) -> str:
    try:
        return repr(x)[:limit]
    except RecursionError:
        return f"<{type(x).__name__} nested too deep to show>"


def _outcome(fn):
    """A value, or the exception raised (checked by the caller)."""
    try:
        return fn()
    except Exception as exc:
        return exc


def _internal(result) -> bool:
    return type(result) is InmemError and "internal error" in str(result)


def _lost(result) -> bool:
    return isinstance(result, (Timeout, ShardUnavailable, ClusterNotReady))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_hostile_arguments_to_every_operation_never_stop_a_process(make_cluster):
    seed = int(os.environ.get("INMEM_FUZZ_SEED", DEFAULT_SEED))
    n = int(os.environ.get("INMEM_FUZZ_N", DEFAULT_N))
    rng = random.Random(seed)
    cluster = make_cluster(shards=2, durability="buffered")
    pids = cluster.pids()
    dbs = [cluster.connect(request_timeout=30.0),
           cluster.connect(request_timeout=30.0, direct=True)]
    runs = [dbs[0].begin_run(name=f"fuzz {i}") for i in range(4)]
    canary = dbs[0].begin_run(name="canary")  # never named by the fuzzer
    dbs[0].kv.put(canary, "k", "before")
    internal = []
    try:
        for i in range(n):
            backend = rng.choice(dbs)._backend
            if rng.random() < 0.15:
                ops = [(op, _args(rng, op, runs)) for op in rng.sample(OPS, rng.randrange(1, 5))]
                results = _outcome(lambda: backend.call_batch(ops))
                calls = list(zip(ops, results)) if isinstance(results, list) else \
                    [(ops[0], results)]
            else:
                op = rng.choice(OPS)
                args = _args(rng, op, runs)
                calls = [((op, args), _outcome(lambda: backend.call(op, args)))]
            for (op, args), result in calls:
                what = f"seed {seed}, call {i}: {op}({_shown(args)}) -> {_shown(result, 300)}"
                assert not isinstance(result, Exception) or isinstance(result, InmemError), what
                assert not _lost(result), what
                if _internal(result):
                    internal.append((op, _shown(args), str(result)[:200]))
        assert cluster.pids() == pids, f"seed {seed}: a process was replaced"
        for pid in [pids["coordinator"], *pids["shards"]]:
            assert psutil.pid_exists(pid), f"seed {seed}"
        status = cluster.status()
        assert all(s["restarts"] == 0 for s in status["shards"]), f"seed {seed}"
        assert status["coordinator"]["internal_errors"] == 0, f"seed {seed}"
        assert dbs[0].kv.get(canary, "k") == "before", f"seed {seed}"
        assert dbs[0].kv.put(canary, "k", "after") == 2
        assert not internal, f"seed {seed}: engine bugs (internal errors): {internal}"
        assert "internal error" not in cluster.log_tail(400), f"seed {seed}"
    finally:
        for db in dbs:
            db.close()
