"""The operation fuzzer against an embedded durable store, where arguments reach the engine
as Python objects: no msgpack in between to refuse what it cannot carry (nesting past its
depth, ints past 64 bits, objects of any class).

Every answer must be a value or an `InmemError`, and the store must keep taking writes:
an embedded store stops writing (until reopened) on anything but an InmemError in the
middle of a write, so a refusal that fails while formatting its own message cost the
caller their store.

A short fixed-seed run by default; INMEM_FUZZ_SEED and INMEM_FUZZ_N set the seed and the
number of calls for long runs. A failure prints the seed and the call.
"""

from __future__ import annotations

import os
import random

import pytest

import inmem
from cluster import test_fuzz_ops as fz
from inmem.display import short_value
from inmem.errors import InmemError

DEFAULT_SEED = 20261202
DEFAULT_N = 3000


class _BrokenRepr:
    def __repr__(self):
        raise RuntimeError("no repr")


#: what only an embedded caller can pass (a cluster's client refuses them before sending)
IN_PROCESS = [fz._deep(100_000), -10**5000, 10**5000, _BrokenRepr(), [fz._deep(50_000)],
              {"k": fz._deep(100_000)}]


def _args(rng, op, runs):
    args = fz._args(rng, op, runs)
    for i in range(len(args)):
        if rng.random() < 0.2:
            args[i] = rng.choice(IN_PROCESS)
    return args


@pytest.mark.timeout(600)
def test_hostile_arguments_never_stop_an_embedded_store(tmp_path):
    seed = int(os.environ.get("INMEM_FUZZ_SEED", DEFAULT_SEED))
    n = int(os.environ.get("INMEM_FUZZ_N", DEFAULT_N))
    rng = random.Random(seed)
    db = inmem.open(tmp_path / "db", durability="buffered")
    try:
        runs = [db.begin_run(name=f"fuzz {i}") for i in range(4)]
        canary = db.begin_run(name="canary")  # never named by the fuzzer
        db.kv.put(canary, "k", 0)
        backend = db._backend
        internal = []
        for i in range(n):
            if rng.random() < 0.15:
                ops = [(op, _args(rng, op, runs))
                       for op in rng.sample(fz.OPS, rng.randrange(1, 5))]
                results = fz._outcome(lambda: backend.call_batch(ops))
                calls = (list(zip(ops, results)) if isinstance(results, list)
                         else [(ops[0], results)])
            else:
                op = rng.choice(fz.OPS)
                args = _args(rng, op, runs)
                calls = [((op, args), fz._outcome(lambda: backend.call(op, args)))]
            for (op, args), result in calls:
                what = f"seed {seed}, call {i}: {op}({short_value(args)}) -> {short_value(result)}"
                assert not isinstance(result, Exception) or isinstance(result, InmemError), what
                if fz._internal(result):
                    internal.append(what)
            # Still writing: a refusal must not have stopped the store.
            assert db.kv.put(canary, "k", i + 1) >= 1, f"seed {seed}, call {i}"
        assert not internal, f"engine bugs (internal errors): {internal[:5]}"
    finally:
        db.close()
    with inmem.open(tmp_path / "db") as again:
        assert again.kv.get(canary, "k") == n


def _public_methods(db) -> list:
    import inspect
    out = []
    for section in ("kv", "events", "state", "traces", "json", "runs"):
        for name, fn in inspect.getmembers(getattr(db, section), callable):
            if not name.startswith("_"):
                out.append((f"{section}.{name}", fn))
    for name in ("begin_run", "end_run", "abort_run", "run_status", "replay_run", "diff_runs",
                 "search"):
        out.append((name, getattr(db, name)))
    return out


@pytest.mark.timeout(600)
def test_hostile_arguments_to_the_public_methods_raise_typed_errors():
    """The same through the sections' methods, whose own checks run before the engine's."""
    import inspect
    seed = int(os.environ.get("INMEM_FUZZ_SEED", DEFAULT_SEED))
    rng = random.Random(seed)
    with inmem.open(None) as db:
        runs = [db.begin_run() for _ in range(3)]
        methods = _public_methods(db)
        for i in range(int(os.environ.get("INMEM_FUZZ_N", DEFAULT_N)) * 3):
            name, fn = rng.choice(methods)
            params = [p for p in inspect.signature(fn).parameters.values()
                      if p.kind is p.POSITIONAL_OR_KEYWORD]
            args = []
            for p in params:
                if p.name in ("run", "run_a", "run_b") and rng.random() < 0.7:
                    args.append(rng.choice(runs))
                elif rng.random() < 0.5:
                    args.append(fz._plausible(rng, p.name, runs))
                else:
                    args.append(rng.choice(IN_PROCESS + fz.HOSTILE))
            result = fz._outcome(lambda: fn(*args))
            what = f"seed {seed}, call {i}: {name}({short_value(args)}) -> {short_value(result)}"
            assert not isinstance(result, Exception) or isinstance(result, InmemError), what
