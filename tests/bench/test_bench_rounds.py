"""Interleaved rounds, ratio spreads, the row fields they add, and how the table shows them.

No process is started and no timing is judged: the sides here are plain
functions that return made-up figures, so every assertion counts calls or
checks arithmetic.
"""

from __future__ import annotations

import json

import pytest

from inmem.bench import machine
from inmem.bench.context import Context, make_row, scaled_sizes
from inmem.bench.harness import timed_loop
from inmem.bench.peers import Peers, PeerUnavailable, redis_args
from inmem.bench.report import SPREAD_NOTE, compare, fmt_peers, markdown
from inmem.bench.rounds import Side, interleave, rotation, spread


def _recording(calls, name, values):
    def fn(r):
        calls.append((name, r))
        return {"ops_per_s": values[r], "ops": 10, "lat": [1000 * (r + 1)]}
    return fn


def test_every_side_runs_once_per_round_and_the_first_side_rotates():
    calls = []
    sides = [Side(n, _recording(calls, n, [1.0] * 3)) for n in ("ours", "redis", "floor")]
    il = interleave(sides, 3)
    assert calls == [("ours", 0), ("redis", 0), ("floor", 0),
                     ("redis", 1), ("floor", 1), ("ours", 1),
                     ("floor", 2), ("ours", 2), ("redis", 2)]
    assert il.orders == [["ours", "redis", "floor"], ["redis", "floor", "ours"],
                         ["floor", "ours", "redis"]]
    assert rotation(["a", "b"], 3) == ["b", "a"]


def test_the_ratio_spread_pairs_the_sides_of_the_same_round():
    calls = []
    il = interleave([Side("ours", _recording(calls, "ours", [100.0, 200.0, 300.0])),
                     Side("redis", _recording(calls, "redis", [50.0, 400.0, 100.0]))], 3)
    s = il.ratio_spread("ours", "redis")
    # Per round: 2.0, 0.5, 3.0. Pairing sorted values instead would give 2, 1, 0.75.
    assert (s["min"], s["median"], s["max"], s["rounds"]) == (0.5, 2.0, 3.0, 3)
    assert il.median("ours") == 200.0 and il.median("redis") == 100.0
    summary = il.side_summary("ours")
    assert summary["per_round"] == [100.0, 200.0, 300.0]
    assert summary["samples"] == 3 and summary["p50_us"] == 2.0


def test_a_failing_peer_is_skipped_with_its_reason_and_not_run_again():
    calls = []

    def broken(r):
        calls.append(("redis", r))
        raise PeerUnavailable("redis-server is not installed")

    il = interleave([Side("ours", _recording(calls, "ours", [1.0, 2.0])),
                     Side("redis", broken, optional=True)], 2)
    assert calls.count(("redis", 0)) == 1 and ("redis", 1) not in calls
    assert il.median("redis") == "skipped: redis-server is not installed"
    assert il.ratio_spread("ours", "redis") is None
    assert il.side_summary("redis") == {"status": "skipped: redis-server is not installed"}
    assert il.orders == [["ours"], ["ours"]]


def test_our_own_side_failing_fails_the_group():
    def broken(r):
        raise RuntimeError("cluster gone")

    with pytest.raises(RuntimeError, match="cluster gone"):
        interleave([Side("ours", broken), Side("redis", lambda r: {"ops_per_s": 1.0},
                                                 optional=True)], 2)


def test_spread_has_quartiles_and_handles_one_value():
    s = spread([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s["min"], s["q1"], s["median"], s["q3"], s["max"]) == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert spread([7.0]) == {"min": 7.0, "q1": 7.0, "median": 7.0, "q3": 7.0, "max": 7.0,
                             "rounds": 1}
    assert spread([]) is None


def _spread_row():
    spreads = {"redis": spread([0.70, 0.74, 0.78]), "floor": None}
    return make_row("cluster.kv.put.single", "cluster", "buffered", "ops/s", value=74.0,
                    peers={"redis": 100.0, "floor": "skipped: no pyzmq"},
                    ratio_spread=spreads)


def test_a_row_from_rounds_carries_its_spread_and_the_table_shows_it():
    row = _spread_row()
    assert row["ratio"]["redis"] == pytest.approx(0.74)
    assert row["ratio_spread"]["redis"]["rounds"] == 3
    assert row["ratio_spread"]["floor"] is None
    assert "ratio_spread" not in make_row("x", "micro", "m", "ops/s", value=1.0)
    text = fmt_peers(row)
    assert "redis 100: 0.74x [0.70-0.78]" in text
    assert "floor skipped: no pyzmq" in text and "floor skipped: no pyzmq:" not in text
    doc = {"machine": {}, "commit": "abc", "started": "now", "results": [row]}
    md = markdown(doc)
    assert "0.74x [0.70-0.78]" in md and SPREAD_NOTE in md
    # Plain rows keep the old wording and no note.
    plain = make_row("y", "micro", "m", "ops/s", value=2.0, peers={"sqlite": 1.0})
    assert fmt_peers(plain) == "sqlite 1.00 (2.00x better)"
    assert SPREAD_NOTE not in markdown({**doc, "results": [plain]})


def test_compare_reads_rows_with_the_new_fields():
    old = {"machine": {}, "commit": "a", "started": "x", "results": [_spread_row()]}
    newer = _spread_row()
    newer["value"] = 20.0
    newer["ran_on"] = {"commit": "b", "host": "h", "cpu": "c", "cores": 2}
    new = json.loads(json.dumps({**old, "results": [newer]}))
    rows, regressions, _notes = compare(old, new)
    assert regressions == 1 and rows[0][-1].startswith("REGRESSED")


def test_every_row_added_is_stamped_with_the_machine_and_commit(tmp_path):
    info = machine.machine_info(tmp_path)
    ran_on = machine.ran_on(info, "f" * 40)
    assert ran_on == {"commit": "f" * 40, "host": info["hostname_hash"], "cpu": info["cpu"],
                      "cores": info["cores"]}
    ctx = Context(quick=True, sizes=scaled_sizes(True, 0.001),
                  peers=Peers((), install=False, scratch_dir=str(tmp_path)),
                  scratch_dir=str(tmp_path), progress=False, ran_on=ran_on)
    row = ctx.add(make_row("a", "micro", "m", "ops/s", value=1.0))
    assert row["ran_on"] == ran_on
    row["ran_on"]["commit"] = "edited in one row"
    assert ctx.add(make_row("b", "micro", "m", "ops/s", value=1.0))["ran_on"]["commit"] == \
        "f" * 40


def test_smoke_sizes_keep_two_rounds():
    assert scaled_sizes(True, 0.001)["cluster_rounds"] == 2
    assert scaled_sizes(False, 1.0)["cluster_rounds"] == 5


def test_timed_loop_warms_up_then_times_fresh_indexes():
    seen, events = [], []
    out = timed_loop(seen.append, 100, warmup=5, start=1000, samples=10,
                     before=lambda: events.append(len(seen)))
    assert seen == list(range(1000, 1105))
    assert events == [5], "before() runs once, between the warm-up and the timed ops"
    assert out["ops"] == 100 and len(out["lat"]) == 10
    assert out["t1"] >= out["t0"] and out["ops_per_s"] > 0


def test_redis_runs_with_its_defaults_and_the_modes_appendfsync():
    buffered = redis_args(6400, "d", "d/log", "buffered", user_defaults=True)
    strict = redis_args(6400, "d", "d/log", "strict", user_defaults=True)
    for args in (buffered, strict):
        assert "--save" not in args and "--auto-aof-rewrite-percentage" not in args
        assert args[args.index("--appendonly") + 1] == "yes"
    assert buffered[buffered.index("--appendfsync") + 1] == "everysec"
    assert strict[strict.index("--appendfsync") + 1] == "always"
    # The other tiers still keep saves and rewrites out of their timed loops.
    quiet = redis_args(6400, "d", "d/log", "buffered")
    assert quiet[quiet.index("--save") + 1] == ""
