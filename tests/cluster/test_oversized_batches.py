"""Replies over the cluster's own max_message_bytes: a pipeline whose replies together
are over it still acknowledges its writes, fails only the largest reads and says how
to ask for less; a diff of two runs that each fit works; a replay that does not fit
says what to ask instead."""

from __future__ import annotations

import pytest

import inmem

pytestmark = pytest.mark.slow

LIMIT = 64 << 10
BIG = "x" * (40 << 10)  # one fits, two in one reply do not


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    with inmem.Cluster(data_dir=tmp_path_factory.mktemp("batches") / "data", shards=2,
                       durability="inmemory", max_message_bytes=LIMIT) as c:
        client = c.connect()
        yield client
        client.close()


def test_a_pipeline_over_the_limit_keeps_its_writes_acknowledged(db):
    run = db.begin_run()
    db.kv.put(run, "big", BIG)
    with db.pipeline() as p:
        p.kv.put(run, "a", 1)
        p.kv.get(run, "big")
        p.kv.get(run, "big")
        p.kv.put(run, "b", 2)
        got = p.execute(raise_on_error=False)
    # The writes ran and their acknowledgements came back; one read had to give way.
    assert got[0] == 1 and got[3] == 1, got
    errors = [g for g in got[1:3] if isinstance(g, inmem.ProtocolError)]
    assert len(errors) == 1 and BIG in got[1:3], got
    assert "split the pipeline" in str(errors[0])
    assert db.kv.get(run, "a") == 1 and db.kv.get(run, "b") == 2


def test_a_diff_of_runs_that_each_fit_works(db):
    a = db.begin_run()
    db.kv.put(a, "big", BIG)
    assert db.diff_runs(a, a).modified == []
    b = db.begin_run()
    db.kv.put(b, "big", BIG + "!")
    assert [e.key for e in db.diff_runs(a, b).modified] == ["big"]


def test_a_replay_over_the_limit_says_to_replay_less(db):
    run = db.begin_run()
    db.kv.put(run, "one", BIG)
    db.kv.put(run, "two", BIG)
    with pytest.raises(inmem.ProtocolError, match=r"replay an earlier position \(at=\)"):
        db.replay_run(run)
    assert db.replay_run(run, at=-1).kv == {"one": BIG}  # before its last write
