"""The deterministic workload of the crash tests, and the model that checks what survived.

A workload runs in "lanes": lane L owns the run `lane-L` and performs ops
0, 1, 2, ... on it, in order. Op i of a lane is one write, and so one WAL
record, chosen by i mod 4:

    0  kv put        "kv"   := i                  (one key, rising values)
    1  event append  "op"   payload {"i": i, ...} (the hash chain grows)
    2  transaction   "tx_a" := i and "tx_b" := i  (two keys, all or nothing)
    3  state cell    "cell" += 1                  (CAS through transition_or_init)

Every op leaves a trace that names it, so the state of a lane after a crash
says which op was applied last; `expected(n)` is the exact state after the
first n ops. `recovered_ops` finds n from what was recovered and checks the
whole state against `expected(n)`: a hole (an op missing while a later one is
present), a half-applied transaction or a lost increment makes them differ.

This module is imported by the child process driver (as a plain module next
to it) and by the tests (as part of the test package): it must not import
pytest.
"""

from __future__ import annotations

KINDS = 4
PAD = "p" * 40  # makes records big enough that tiny segments roll every few dozen ops


def lane_run(lane: int) -> str:
    return f"lane-{lane}"


def begin(db, lane: int) -> str:
    """Create the lane's run (if a previous life of the store has not already)."""
    run = lane_run(lane)
    if db.run_status(run) == "not_found":
        db.begin_run(name=f"crash lane {lane}", run_id=run, tags=("crash",))
    return run


def _increment(state):
    return state.value + 1, None


def apply_op(db, run: str, i: int) -> None:
    """Perform op i of a lane: exactly one write, so exactly one WAL record."""
    kind = i % KINDS
    if kind == 0:
        db.kv.put(run, "kv", i)
    elif kind == 1:
        db.events.append(run, "op", {"i": i, "pad": PAD})
    elif kind == 2:
        with db.transaction(run) as tx:
            tx.kv.put("tx_a", i)
            tx.kv.put("tx_b", i)
    else:
        db.state.transition_or_init(run, "cell", 0, _increment)


def _count(n: int, kind: int) -> int:
    """How many of ops 0..n-1 are of `kind`."""
    return max(0, (n - kind + KINDS - 1) // KINDS)


def expected(n: int) -> dict:
    """The observation of a lane after exactly its first n ops."""
    c_kv, c_ev, c_tx, c_cell = (_count(n, k) for k in range(KINDS))
    tx = None if c_tx == 0 else (KINDS * (c_tx - 1) + 2, c_tx)
    return {
        "kv": None if c_kv == 0 else (KINDS * (c_kv - 1), c_kv),
        "events": [KINDS * j + 1 for j in range(c_ev)],
        "tx_a": tx,
        "tx_b": tx,
        "cell": None if c_cell == 0 else (c_cell, c_cell),
    }


def observe(db, run: str) -> dict:
    """What the store holds for a lane, in the shape of `expected`."""
    def versioned(key):
        got = db.kv.get_versioned(run, key)
        return None if got is None else (got.value, got.version)

    count = db.events.count(run)
    events = [e.payload["i"] for e in db.events.range(run, 0, count)]
    cell = db.state.read(run, "cell")
    return {
        "kv": versioned("kv"),
        "events": events,
        "tx_a": versioned("tx_a"),
        "tx_b": versioned("tx_b"),
        "cell": None if cell is None else (cell.value, cell.version),
    }


def last_op(obs: dict) -> int:
    """The index of the newest op the observation shows, or -1."""
    last = -1
    if obs["kv"] is not None:
        last = max(last, obs["kv"][0])
    if obs["events"]:
        last = max(last, obs["events"][-1])
    for key in ("tx_a", "tx_b"):
        if obs[key] is not None:
            last = max(last, obs[key][0])
    if obs["cell"] is not None:
        last = max(last, KINDS * (obs["cell"][0] - 1) + 3)
    return last


class PrefixViolation(AssertionError):
    """The recovered state of a lane is not the state after any prefix of its ops."""


def recovered_ops(db, lane: int) -> int | None:
    """n such that the lane holds exactly its first n ops; None if its run is gone.

    Raises PrefixViolation (with both states) when no such n exists.
    """
    run = lane_run(lane)
    if db.run_status(run) == "not_found":
        return None
    obs = observe(db, run)
    if obs["tx_a"] != obs["tx_b"]:
        raise PrefixViolation(f"{run}: half-applied transaction: tx_a={obs['tx_a']} "
                              f"tx_b={obs['tx_b']}")
    n = last_op(obs) + 1
    want = expected(n)
    if obs != want:
        raise PrefixViolation(f"{run}: the recovered state is not the first {n} ops "
                              f"(a hole or a lost write):\n  got  {obs}\n  want {want}")
    return n
