"""The floors of state cells and JSON documents are durable in a store on disk: a snapshot
keeps them, a store reopened from it goes on above them, and a snapshot file of the previous
codec (the KV floor alone) still opens and verifies, its kept tombstones reclaimed after.
"""

from __future__ import annotations

import msgpack

import inmem
from inmem.recovery import snapshot_format as fmt

from polling import wait_for
from .test_dead_key_floor import BUCKET_S, QUIET, Clock, rewrite, snapshot_files, verify


def reclaimed(db) -> tuple[int, int]:
    shard = db.info()["shards"][0]
    return shard["state_reclaimed"], shard["json_reclaimed"]


def as_codec_3(sections: dict) -> None:
    """What the previous build wrote: META says codec 3, and a run has its KV floor alone."""
    meta = msgpack.unpackb(sections[fmt.META], raw=False)
    runs = msgpack.unpackb(sections[fmt.RUNS], raw=False)
    sections[fmt.META] = msgpack.packb({**meta, "codec": 3})
    sections[fmt.RUNS] = msgpack.packb([row[:8] for row in runs], use_bin_type=True)


def test_cell_and_document_floors_survive_a_snapshot_and_a_reopen(tmp_path):
    clock = Clock()
    path = tmp_path / "store"
    options = dict(clock=clock, dead_key_retention_s=0, snapshot_on_close=False, **QUIET)
    with inmem.open(path, "strict", **options) as db:
        run = db.begin_run(run_id="r")
        for i in range(3):
            db.state.set(run, "c", i)
        db.state.delete(run, "c")  # version 4
        db.json.put(run, "d", {"a": 1})
        db.json.delete(run, "d")  # version 2
        clock.advance(BUCKET_S)
        wait_for(lambda: reclaimed(db) == (1, 1), timeout=30, what="the sweep")
        db.snapshot()
    (file,) = snapshot_files(path)
    assert verify(file)[0] == 0
    with inmem.open(path, "strict", **options) as db:
        assert db.info()["shards"][0]["keys"] == 0
        assert db.state.read("r", "c") is None
        assert db.state.init("r", "c", "again") == 5
        assert db.state.set("r", "other", 1) == 5
        assert db.json.set("r", "d", "$.a", 2) == 3
        assert db.kv.put("r", "k", 1) == 1  # KV has a floor of its own


def test_a_snapshot_of_the_previous_codec_opens_and_its_tombstones_go(tmp_path):
    clock = Clock()
    path = tmp_path / "store"
    options = dict(clock=clock, snapshot_on_close=False, **QUIET)
    with inmem.open(path, "strict", **options) as db:  # the default retention: nothing goes
        run = db.begin_run(run_id="r")
        db.state.set(run, "c", 1)
        db.state.delete(run, "c")
        db.json.put(run, "d", 1)
        db.json.delete(run, "d")
        db.snapshot()
    (file,) = snapshot_files(path)
    rewrite(file, as_codec_3)
    code, out = verify(file)
    assert code == 0, out
    with inmem.open(path, "strict", dead_key_retention_s=0, **options) as db:
        clock.advance(BUCKET_S)
        wait_for(lambda: reclaimed(db) == (1, 1), timeout=30, what="the sweep after opening")
        assert db.state.set("r", "c", 2) == 3
        assert db.json.put("r", "d", 2) == 3
