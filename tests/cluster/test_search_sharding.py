"""Search gives the same answer whatever the number of shards.

The collection statistics of BM25 (document count, average length, document
frequencies) are gathered from every shard before any shard scores, so a
3-shard cluster must rank and score exactly as a 1-shard cluster holding the
same data — and as the embedded engine.
"""

from __future__ import annotations

import random

import pytest

import inmem
from inmem.protocol import slot_of

WORDS = ("agent tool search fetch plan memory vector graph token budget reply error retry "
         "summary source claim evidence answer draft critique").split()


def load(db, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    runs = [db.begin_run(run_id=f"run-{i:02d}", name=f"{rng.choice(WORDS)} agent",
                         tags=[rng.choice(WORDS)]) for i in range(12)]
    for run in runs:
        with db.pipeline() as p:
            for k in range(25):
                p.kv.put(run, f"note-{k:02d}", " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))))
            for k in range(5):
                p.events.append(run, "observation", {"text": " ".join(rng.sample(WORDS, 4))})
            p.json.put(run, "doc", {"title": " ".join(rng.sample(WORDS, 3)), "n": k})
            p.execute()
    return runs


def answers(db, queries) -> list:
    out = []
    for q in queries:
        resp = db.search(q, limit=15)
        out.append((resp.total_matches,
                    [(h.primitive, h.run, h.ref, round(h.score, 9), h.snippet) for h in resp.results]))
        page = db.search(q, limit=5, offset=5)
        out.append([(h.primitive, h.run, h.ref) for h in page.results])
    return out


QUERIES = ["agent", "tool search", "memory vector graph", "retry error", "claim evidence answer",
           "plan", "nothing-matches-this"]


@pytest.mark.timeout(120)
def test_one_and_three_shards_and_embedded_agree(make_cluster):
    with inmem.open(None) as db:
        load(db)
        expected = answers(db, QUERIES)
    assert any(matches for matches, *_ in expected[::2]), "the corpus must match something"

    for shards in (1, 3):
        cluster = make_cluster(shards=shards, durability="inmemory")
        with cluster.connect() as db:
            runs = load(db)
            if shards == 3:
                owners = {s["shard"] for s in db.info()["shards"] if s["runs"]}
                assert len(owners) == 3, "the runs should spread over every shard"
            got = answers(db, QUERIES)
        assert got == expected, f"{shards} shard(s) answered differently from one index"
        assert len({slot_of(r) for r in runs}) > 1
