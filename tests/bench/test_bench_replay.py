"""Smoke tests of the replay tier and the cluster tier's direct-routing rows.

Sizes are tiny (--smoke) and nothing here looks at a timing: these check
that the rows exist, ran or say why not, and carry the documented details.
"""

from __future__ import annotations

import json
import random

import pytest

from inmem.bench.__main__ import TIERS, main
from inmem.bench.tiers import cluster as cluster_tier
from inmem.bench.tiers.replay import ids_on_distinct_shards, row_names
from inmem.bench.workloads import make_texts, make_vocabulary
from inmem.protocol import SLOT_COUNT, slot_of
from inmem.shard.search_index import tokenize


def _run(tmp_path, *extra):
    out = tmp_path / "out"
    code = main(["--smoke", "--out", str(out), "--no-install", "--no-plots", "--no-table",
                 "--quiet", *extra])
    doc = json.loads((out / "results.json").read_text())
    return code, doc


def test_replay_is_a_default_tier():
    assert "replay" in TIERS


@pytest.mark.timeout(90)
def test_replay_tier_runs_every_row_through_a_cluster_and_embedded(tmp_path):
    code, doc = _run(tmp_path, "--tier", "replay", "--peers", "none")
    assert code == 0
    rows = {r["name"]: r for r in doc["results"]}
    expected = [n for group in row_names(doc["config"]["sizes"]).values() for n in group]
    assert sorted(rows) == sorted(expected)
    for row in doc["results"]:
        assert row["tier"] == "replay" and row["unit"] == "ms"
        assert row["status"] == "ok", (row["name"], row["status"])
        assert row["value"] > 0
    diff = next(r for n, r in rows.items() if n.startswith("cluster.diff_runs."))
    a_shard, b_shard = diff["extra"]["shards"]
    assert a_shard != b_shard, "the two diffed runs should live on different shards"
    for name, row in rows.items():
        if name.startswith("cluster.replay_run.") or name.startswith("cluster.diff_runs."):
            assert row["extra"]["direct_p50_ms"] > 0, name
    search = rows["cluster.search.p50"]
    assert sum(search["extra"]["docs_per_shard"]) == search["n"]
    assert all(n > 0 for n in search["extra"]["docs_per_shard"])
    rebuild = rows["recovery.index_rebuild"]["extra"]
    assert rebuild["snapshot_used"] is True
    # Ready before the index: recovery spends next to nothing on it, the rebuild comes after.
    assert rebuild["index_seconds"] * 1000 <= rebuild["recovery_ms"]
    assert rebuild["first_search_index_complete"] in (True, False)


def test_cluster_rows_including_direct_ones_are_skipped_with_a_reason(tmp_path, monkeypatch):
    def unavailable():
        raise cluster_tier.ClusterUnavailable("no cluster in this build")

    monkeypatch.setattr(cluster_tier, "_cluster_class", unavailable)
    code, doc = _run(tmp_path, "--tier", "cluster", "--peers", "none")
    assert code == 0
    rows = {r["name"]: r for r in doc["results"]}
    for name in ("cluster.kv.put.single.direct", "cluster.kv.put.batched.direct",
                 "cluster.kv.put.strict.8clients.direct"):
        assert name in rows
    assert set(rows) == {name for name, _mode, _peers in cluster_tier.ROWS}
    for name, row in rows.items():
        assert row["status"] == "skipped: no cluster in this build", name
    for name in ("cluster.kv.put.single", "cluster.kv.put.single.direct"):
        assert rows[name]["peers"]["redis"].startswith("skipped: ")


def test_replay_cluster_rows_are_skipped_and_embedded_rows_still_run(tmp_path, monkeypatch):
    def unavailable():
        raise cluster_tier.ClusterUnavailable("no cluster in this build")

    monkeypatch.setattr(cluster_tier, "_cluster_class", unavailable)
    code, doc = _run(tmp_path, "--tier", "replay", "--peers", "none")
    assert code == 0
    names = row_names(doc["config"]["sizes"])
    rows = {r["name"]: r for r in doc["results"]}
    for name in names["cluster"]:
        assert rows[name]["status"] == "skipped: no cluster in this build"
    for name in names["embedded"] + names["recovery"]:
        assert rows[name]["status"] == "ok", (name, rows[name]["status"])


def test_ids_on_distinct_shards_follow_the_slot_map():
    owners = [slot % 3 for slot in range(SLOT_COUNT)]
    ids = ids_on_distinct_shards(owners, 3, "diff")
    assert len({owners[slot_of(i)] for i in ids}) == 3
    assert all(i.startswith("diff-") for i in ids)
    # One shard only: the first ids, as they come.
    assert ids_on_distinct_shards([0] * SLOT_COUNT, 2, "x") == ["x-0", "x-1"]
    assert ids_on_distinct_shards(None, 2, "x") == ["x-0", "x-1"]


def test_search_corpus_is_seeded_and_each_word_is_one_token():
    vocab = make_vocabulary(500, seed=3)
    assert vocab == make_vocabulary(500, seed=3)
    assert vocab != make_vocabulary(500, seed=4)
    assert len(set(vocab)) == 500
    assert all(tokenize(w) == [w] for w in vocab)
    texts = make_texts(200, vocab, random.Random(1), (4, 10))
    assert texts == make_texts(200, vocab, random.Random(1), (4, 10))
    for text in texts:
        words = text.split()
        assert 4 <= len(words) <= 10 and set(words) <= set(vocab)
