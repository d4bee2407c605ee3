"""Smoke tests of the benchmark suite: the code paths run and write the documented schema.

Sizes are tiny (--smoke) and nothing here looks at a timing: speed is only
ever judged by a real `inmem bench` run, outside pytest.
"""

from __future__ import annotations

import json

import pytest

from inmem.bench.__main__ import main
from inmem.bench.context import make_row, target
from inmem.bench.harness import measure, percentile
from inmem.bench.report import ROW_KEYS, compare, compare_main, markdown_main
from inmem.bench.tiers.micro import REQUIRED_ROWS


def _run(tmp_path, *extra):
    out = tmp_path / "out"
    code = main(["--smoke", "--out", str(out), "--no-install", "--no-plots", "--no-table",
                 "--quiet", *extra])
    doc = json.loads((out / "results.json").read_text())
    return code, doc


def test_micro_tier_writes_every_required_row_with_the_schema(tmp_path):
    code, doc = _run(tmp_path, "--tier", "micro", "--peers", "sqlite")
    assert code == 0
    for key in ("cpu", "cores", "memory_bytes", "disk", "python", "os"):
        assert key in doc["machine"], key
    assert "fstype" in doc["machine"]["disk"]
    assert "commit" in doc and "started" in doc
    assert doc["config"]["quick"] is True
    assert "sizes_text" in doc["config"]
    rows = {r["name"]: r for r in doc["results"]}
    for name in REQUIRED_ROWS:
        assert name in rows, f"missing row {name}"
    for row in doc["results"]:
        for key in ROW_KEYS:
            assert key in row, (row["name"], key)
        assert row["tier"] == "micro"
        assert row["status"] == "ok", (row["name"], row["status"])
        assert row["value"] > 0
        assert isinstance(row["peers"], dict) and isinstance(row["ratio"], dict)
        # Every row says where and on what it ran, as the file does.
        assert row["ran_on"]["commit"] == doc["commit"]
        assert row["ran_on"]["host"] == doc["machine"]["hostname_hash"]
    get = rows["embedded.kv.get"]
    assert get["unit"] == "ops/s" and get["p50"] is not None and get["p99"] >= get["p50"]
    assert isinstance(get["peers"]["sqlite"], float)
    assert get["ratio"]["sqlite"] == pytest.approx(get["value"] / get["peers"]["sqlite"])
    # A peer that was not selected is recorded with its reason, never dropped.
    assert get["peers"]["lmdb"].startswith("skipped: not selected")
    assert get["ratio"]["lmdb"] is None
    assert get["target"]["ops_per_s"] == 1_000_000
    assert get["target_met"] in (True, False)


def test_durable_rows_are_skipped_with_a_reason_when_the_store_cannot_open(tmp_path,
                                                                           monkeypatch):
    import inmem.bench.tiers.durability as durability
    real_open = durability.inmem.open

    def failing_open(path=None, durability="buffered", **kw):
        if path is not None:
            raise RuntimeError("durable store not built")
        return real_open(path, durability, **kw)

    monkeypatch.setattr(durability.inmem, "open", failing_open)
    code, doc = _run(tmp_path, "--tier", "durability", "--peers", "none")
    assert code == 0
    rows = {r["name"]: r for r in doc["results"]}
    for name in ("embedded.kv.put.buffered", "embedded.kv.put.strict"):
        assert rows[name]["status"].startswith("skipped: ")
        assert "durable store not built" in rows[name]["status"]
        assert rows[name]["peers"]["sqlite"].startswith("skipped: ")
    # The disk's own floor needs no store and still ran.
    assert rows["durability.fsync.raw"]["status"] == "ok"


def test_strict_put_row_interleaves_its_rounds_with_sqlite(tmp_path):
    code, doc = _run(tmp_path, "--tier", "durability", "--peers", "sqlite")
    assert code == 0
    row = {r["name"]: r for r in doc["results"]}["embedded.kv.put.strict"]
    assert row["status"] == "ok"
    rounds = doc["config"]["sizes"]["strict_rounds"]
    extra = row["extra"]
    assert extra["rounds"] == rounds >= 2
    # Each round ran both sides, the first one rotating.
    assert [sorted(o) for o in extra["round_order"]] == [["ours", "sqlite"]] * rounds
    assert extra["round_order"][0][0] != extra["round_order"][1][0]
    assert len(extra["ours"]["per_round"]) == len(extra["peer_detail"]["sqlite"]["per_round"])
    spread = row["ratio_spread"]["sqlite"]
    assert spread["rounds"] == rounds and spread["min"] <= spread["median"] <= spread["max"]
    assert row["ratio"]["sqlite"] == pytest.approx(row["value"] / row["peers"]["sqlite"])
    assert row["peers"]["lmdb"].startswith("skipped: ")
    assert row["n"] == rounds * extra["ops_per_round"]


@pytest.mark.slow
def test_memory_tier_measures_each_cluster_shard_process(tmp_path):
    code, doc = _run(tmp_path, "--tier", "memory", "--peers", "none")
    assert code == 0
    rows = {r["name"]: r for r in doc["results"]}
    row = rows["cluster.memory.bytes_per_key"]
    assert row["status"] == "ok" and row["unit"] == "B/key", row
    shards = row["extra"]["shards"]
    assert len(shards) == 2 and sum(s["keys"] for s in shards) == row["n"]
    assert all(s["keys"] > 0 and s["rss_after"] > 0 and s["pid"] > 0 for s in shards), shards
    assert row["value"] == max(s["bytes_per_key"] for s in shards)


def test_measure_counts_every_op_and_pools_latency_samples():
    seen = []
    m = measure(seen.append, 200, repeats=2, warmup=10, samples=50)
    assert m.n == 200 and m.repeats == 2
    assert len(seen) == len(set(seen)), "indexes must never repeat within one measure()"
    assert len(seen) == 10 + 2 * 200 + 2 * 50 * (200 // 50)
    assert m.samples == 100
    assert m.ops_per_s > 0 and m.p50_us is not None and m.p99_us >= m.p50_us


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([], 50) is None


def test_target_met_reads_every_bound():
    t = target("x", "test", ops_per_s=100, p50_us=2.0)
    assert make_row("r", "micro", "m", "ops/s", value=150, p50=1.0, target=t)["target_met"]
    assert make_row("r", "micro", "m", "ops/s", value=150, p50=3.0,
                    target=t)["target_met"] is False
    sized = target("y", "test", max_ms=10, for_n=1000)
    assert make_row("r", "recovery", "m", "ms", value=5, n=10, target=sized)["target_met"] is None
    assert make_row("r", "recovery", "m", "ms", value=5, n=1000, target=sized)["target_met"]
    peer = target("z", "test", at_least_peer="sqlite")
    assert make_row("r", "d", "m", "ops/s", value=5, peers={"sqlite": 4},
                    target=peer)["target_met"]
    assert make_row("r", "d", "m", "ops/s", value=5, peers={"sqlite": "skipped: no"},
                    target=peer)["target_met"] is None


def _doc(rows):
    return {"machine": {}, "commit": "abc", "started": "now", "results": rows}


def test_compare_flags_throughput_halved_and_latency_doubled(tmp_path):
    old = _doc([make_row("a", "micro", "m", "ops/s", value=1000, p50=1.0, p99=2.0),
                make_row("b", "micro", "m", "ops/s", value=1000, p50=1.0, p99=2.0),
                make_row("c", "recovery", "m", "ms", value=100),
                make_row("d", "micro", "m", "ops/s", value=1000, p50=1.0, p99=2.0)])
    new = _doc([make_row("a", "micro", "m", "ops/s", value=400, p50=1.0, p99=2.0),
                make_row("b", "micro", "m", "ops/s", value=900, p50=2.5, p99=2.0),
                make_row("c", "recovery", "m", "ms", value=250),
                make_row("d", "micro", "m", "ops/s", value=600, p50=1.5, p99=3.0)])
    rows, regressions, _notes = compare(old, new)
    verdicts = {r[0]: r[-1] for r in rows}
    assert verdicts["a"].startswith("REGRESSED") and "throughput" in verdicts["a"]
    assert verdicts["b"].startswith("REGRESSED") and "p50" in verdicts["b"]
    assert verdicts["c"].startswith("REGRESSED")
    assert verdicts["d"] == "ok"
    assert regressions == 3
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    assert compare_main([str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 1
    assert compare_main([str(tmp_path / "old.json"), str(tmp_path / "old.json")]) == 0


def test_compare_skips_rows_that_did_not_run_in_both():
    old = _doc([make_row("a", "micro", "m", "ops/s", value=1000)])
    new = _doc([make_row("a", "micro", "m", "ops/s", status="skipped: gone"),
                make_row("e", "micro", "m", "ops/s", value=5)])
    rows, regressions, notes = compare(old, new)
    assert rows == [] and regressions == 0
    assert any("not compared" in n for n in notes) and any("new row" in n for n in notes)


@pytest.mark.parametrize("rows", [[{"name": ["list"], "mode": "d"}], [{"name": "a", "mode": {"d": 1}}],
                                  ["a row that is text"]])
def test_compare_and_markdown_refuse_a_row_that_is_not_a_benchmarks_in_one_line(tmp_path, rows):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(_doc([make_row("a", "micro", "m", "ops/s", value=1)] + rows)))
    for main in (lambda: compare_main([str(path), str(path)]), lambda: markdown_main([str(path)])):
        with pytest.raises(SystemExit) as exc:
            main()
        assert "row 1" in str(exc.value) and str(path) in str(exc.value)


def test_compare_refuses_a_path_that_is_not_a_regular_file(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_doc([make_row("a", "micro", "m", "ops/s", value=1)])))
    # /dev/zero never ends: reading it whole would never return.
    for odd, kind in (("/dev/zero", "character device"), (str(tmp_path), "directory")):
        with pytest.raises(SystemExit) as exc:
            compare_main([odd, str(good)])
        assert odd in str(exc.value) and kind in str(exc.value)
